"""Mutants of tenancy and scopes: see tests/mutants/__init__.py for what a mutant is."""

from __future__ import annotations

from tests.mutants import Mutant

WATCH = "server/jobstatus_server/watch.py"

MUTANTS: list[Mutant] = [
    Mutant(
        name="watch-ignores-tenant",
        guarantee="a watch sends only its own tenant's changes",
        file=WATCH,
        find="            and change.tenant == self.tenant\n",
        replace="",
        tests=("tests/test_tenants.py",),
    ),
]
