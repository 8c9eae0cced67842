"""Hand-written mutants of the server: small changes that break one guarantee each.

`make mutants` (python -m tests.mutants) applies each mutant, one at a time, to a copy
of the checkout, runs the tests named beside it, and reports whether they failed
(the mutant is killed) or passed (it survived). A surviving mutant is a guarantee
no test holds. The catalogue lives in the area modules beside this file; see
`catalogue.py` and README.md's "Mutation testing".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """One change to one file of the server, and the tests that must notice it."""

    name: str  # unique slug, e.g. "watch-ignores-tenant"
    guarantee: str  # the promise the change breaks, as a user would state it
    file: str  # path from the checkout's root, e.g. "server/jobstatus_server/state/watch.py"
    find: str  # exact text that occurs exactly once in `file`
    replace: str  # what `find` becomes
    tests: tuple[str, ...]  # pytest node ids (path::name, or a path) that must fail
    databases: tuple[str, ...] = ("sqlite",)  # JOBSTATUS_TEST_DATABASES for the run
