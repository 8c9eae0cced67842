"""Tests of access (server/jobstatus_server/access): tenants, API keys and TLS, per-caller
limits.
"""
