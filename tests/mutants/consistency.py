"""Mutants of the consistency area: see tests/mutants/__init__.py for what a mutant is.

The view's consistency (read-your-writes, min_revision, monotonic reads), replicas on
PostgreSQL (the hub's poll, its gap rule, the guessed group's guard) and group commit
(shared commits, no answer before COMMIT)."""

from __future__ import annotations

from tests.mutants import Mutant

GROUP_COMMIT = "server/jobstatus_server/state/group_commit.py"
TRANSACTION = "server/jobstatus_server/state/transaction.py"
SQL = "server/jobstatus_server/state/sql.py"
PG_WRITER = "server/jobstatus_server/state/pg_writer.py"
VIEW = "server/jobstatus_server/state/view.py"
WATCH = "server/jobstatus_server/state/watch.py"
REPLICAS = "tests/state/test_replicas.py"
WRITER = "tests/state/test_sqlite_writer.py"
VIEWS = "tests/state/test_view.py"
PG_STORE = "tests/state/test_pg_store.py"
FAST_PATH = "server/jobstatus_server/http_api/fast_path.py"

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
        GROUP_COMMIT,
        "MAX_GROUP = 128",
        "MAX_GROUP = 1",
        (f"{WRITER}::test_concurrent_writes_share_commits_and_each_is_acknowledged_once",),
    ),
    Mutant(
        "consistency-read-ignores-own-writes",
        "a Get right after a write on the same server shows that write",
        VIEW,
        "need = self.store.revision",
        "need = 0",
        (f"{REPLICAS}::test_a_read_on_the_writing_replica_sees_its_write_while_its_hub_is_behind",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-min-revision-ignored",
        "a read with min_revision waits for that revision rather than answer older state",
        VIEW,
        "if min_revision > need:",
        "if min_revision < need:",
        (f"{REPLICAS}::test_min_revision_waits_for_a_commit_the_replica_has_not_heard_of",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-rest-min-revision-ignored",
        "a REST read with X-Min-Revision waits for that revision rather than answer older state",
        FAST_PATH,
        "if min_revision > need:",
        "if min_revision < need:",
        (f"{REPLICAS}::test_min_revision_waits_for_a_commit_the_replica_has_not_heard_of",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-reached-revision-not-woken",
        "a read waiting for a revision is answered once the server reaches exactly it",
        VIEW,
        "while waiters and waiters[0][0] <= self.revision:",
        "while waiters and waiters[0][0] < self.revision:",
        (f"{REPLICAS}::test_min_revision_waits_for_a_commit_the_replica_has_not_heard_of",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-hub-publishes-past-a-gap",
        "a replica's watchers get another replica's commit before its own later one, none skipped",
        WATCH,
        "if changes[0].revision <= self.revision + 1:",
        "if changes[0].revision >= self.revision + 1:",
        (f"{REPLICAS}::test_the_hub_publishes_an_unheard_commit_before_the_replicas_own_next_one",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-view-keeps-stale-entry",
        "a Get after an update shows the update, not the job's earlier state",
        VIEW,
        "if current is not None and current.revision >= revision:",
        "if current is not None:",
        (f"{VIEWS}::test_every_acknowledged_write_is_read_back_under_concurrent_writers",),
    ),
    Mutant(
        "consistency-feed-goes-back-in-time",
        "a server never answers an older revision of a job than one it already answered",
        VIEW,
        "if current is not None and current.revision >= revision:",
        "if current is not None and current.revision == revision:",
        (f"{VIEWS}::test_the_feed_never_moves_a_job_back_to_an_older_revision",),
    ),
    Mutant(
        "consistency-evicts-entry-ahead-of-feed",
        "the view's memory budget never makes a read go back to a job's older state",
        VIEW,
        "if e.revision <= self.revision), None)",
        "if True), None)",
        (f"{VIEWS}::test_a_job_read_ahead_of_the_feed_is_not_evicted_back_in_time",),
    ),
    Mutant(
        "consistency-group-write-sees-stale-job",
        "each write of a shared commit is made from the job as the write before it left it",
        TRANSACTION,
        "        self.loaded[(tenant, kind.name, job_id)] = data",
        "        self.loaded.setdefault((tenant, kind.name, job_id), data)",
        (f"{WRITER}::test_writes_to_one_job_in_one_commit_each_see_the_one_before",),
    ),
    Mutant(
        "consistency-ack-before-commit",
        "a write is acknowledged only once its COMMIT succeeded",
        GROUP_COMMIT,
        "            self._send_commit(cur)\n",
        "            self._finish_threadsafe(\n"
        "                group, tx.revision if tx.changed else None, tx.changes\n"
        "            )\n"
        "            self._send_commit(cur)\n",
        (f"{PG_STORE}::test_a_write_whose_commit_fails_is_not_acknowledged",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-guess-unguarded",
        "a write on one replica never overwrites another replica's newer change of the job",
        SQL,
        "SELECT 1 / count(*) FROM bumped",
        "SELECT count(*) FROM bumped",
        (f"{PG_STORE}::test_a_guessed_group_commits_alone_and_yields_to_another_replicas_commit",),
        ("postgresql",),
    ),
    Mutant(
        "consistency-guess-conflict-not-rolled-back",
        "a write whose guess lost to another replica's commit runs again and succeeds",
        PG_WRITER,
        "            dbapi.rollback()\n            self._guessing = False",
        "            self._guessing = False",
        (f"{PG_STORE}::test_a_guessed_group_commits_alone_and_yields_to_another_replicas_commit",),
        ("postgresql",),
    ),
]
