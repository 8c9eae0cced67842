"""Tenants: every job belongs to one from its first commit."""

from __future__ import annotations

# The tenant of every caller while no API key exists (the open server).
DEFAULT_TENANT = "default"
