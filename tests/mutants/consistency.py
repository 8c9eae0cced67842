"""Mutants of the consistency area: see tests/mutants/__init__.py for what a mutant is.

The view's consistency (read-your-writes, min_revision, monotonic reads), replicas on
PostgreSQL (the hub's poll, its gap rule, the guessed group's guard) and group commit
(shared commits, no answer before COMMIT)."""

from __future__ import annotations

from tests.mutants import Mutant

STORE = "server/jobstatus_server/store.py"
VIEW = "server/jobstatus_server/view.py"
WATCH = "server/jobstatus_server/watch.py"
REPLICAS = "tests/test_replicas.py"
WRITER = "tests/test_sqlite_writer.py"

MUTANTS: list[Mutant] = [
    Mutant(
        "consistency-hub-never-polls",
        "a commit whose NOTIFY was lost still reaches every replica's watchers and reads",
        WATCH,
        "await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)",
        "await self._wake.wait()",
        (f"{REPLICAS}::test_a_commit_whose_notify_is_lost_reaches_watch_and_get_by_the_poll",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-each-write-its-own-commit",
        "concurrent writes share commits (group commit)",
        STORE,
        "MAX_GROUP = 128",
        "MAX_GROUP = 1",
        (f"{WRITER}::test_concurrent_writes_share_commits_and_each_is_acknowledged_once",),
    ),
]
