"""Every mutant of the catalogue, from the area modules."""

from __future__ import annotations

from tests.mutants import Mutant

AREAS = ("watch", "tenancy", "consistency", "lifecycle", "shapes")


def load() -> list[Mutant]:
    import importlib

    found: list[Mutant] = []
    for area in AREAS:
        module = importlib.import_module(f"tests.mutants.{area}")
        found.extend(module.MUTANTS)
    return found
