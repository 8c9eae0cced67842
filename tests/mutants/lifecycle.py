"""Mutants of the lifecycle area: see tests/mutants/__init__.py for what a mutant is."""

from __future__ import annotations

from tests.mutants import Mutant

MUTANTS: list[Mutant] = []
