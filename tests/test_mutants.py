"""The mutant catalogue (tests/mutants) still applies to the server as it is.

A mutant names the exact text it changes; when the server is edited so that the
text is gone or occurs twice, this test fails and names the mutant, so that the
catalogue is moved along with the code instead of quietly testing nothing.
"""

from __future__ import annotations

from tests.mutants import Mutant
from tests.mutants.__main__ import check
from tests.mutants.catalogue import load

# The five changes issue 17 found unnoticed by the suite: each stays in the catalogue.
FOUND_UNNOTICED = {
    "watch-ignores-tenant",
    "watch-ring-resume-skips-one",
    "watch-log-resume-skips-one",
    "consistency-hub-never-polls",
    "lifecycle-compaction-ignores-age",
    "lifecycle-done-delivery-expiry-reset-on-write",
}


def test_every_mutant_applies_to_the_server_as_it_is() -> None:
    problems = check(load())
    assert not problems, "the mutant catalogue no longer fits the code:\n" + "\n".join(problems)


def test_the_catalogue_covers_the_guarantees() -> None:
    mutants: list[Mutant] = load()
    names = {m.name for m in mutants}
    assert len(mutants) >= 40, f"only {len(mutants)} mutants in the catalogue"
    assert names >= FOUND_UNNOTICED, f"missing: {sorted(FOUND_UNNOTICED - names)}"
    for mutant in mutants:
        assert mutant.guarantee.strip(), f"{mutant.name} names no guarantee"
        assert mutant.tests, f"{mutant.name} names no test"
        assert set(mutant.databases) <= {"sqlite", "postgresql"}, mutant.name
