"""PostgreSQL's writer: the whole transaction of a group in the commit thread, in
psycopg's pipeline mode, with the NOTIFY that wakes the other replicas.

Every statement is a round trip, so a group's statements and its COMMIT go out in the
pipeline (only a read waits for an answer): two round trips, the counter's lock with
the jobs the group loads, then its changes (one statement, `PG_WRITE`) and the COMMIT.
The counter's UPDATE carries the NOTIFY (notify.py). A group whose jobs this process's
view holds, current up to revision R (`KnownState`), is run from that state
(`_commit_from_view`) and sent in one round trip, bumping the counter only if it is
still R. If another replica committed since, that statement fails, nothing is
written, and the group runs the two round trips on the database's state; the next
groups do not try the view's state until one finds the counter where the view is
(its guarded UPDATE takes the counter row's lock first, as SELECT ... FOR UPDATE does).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine

from jobstatus_server.contract.errors import JobStatusError
from jobstatus_server.observability.metrics import (
    WRITE_GROUP_GUESSES,
    WRITE_GROUP_WRITES,
    WRITE_GROUPS,
)
from jobstatus_server.state.compaction import delete_events_locked
from jobstatus_server.state.group_commit import GroupCommit, PendingWrite, Publish
from jobstatus_server.state.notify import CHANNEL, payload
from jobstatus_server.state.readers import Readers
from jobstatus_server.state.sql import PG_BUMP_AND_NOTIFY, PG_GUESSED_BUMP, Statements
from jobstatus_server.state.transaction import KnownState, NeedsRead, Tx

# What this process knows of the given jobs (the view's `known`), or None.
KnownSource = Callable[[Sequence[tuple[str, str, str]]], KnownState | None]


class PostgresWriter(GroupCommit):
    retries_on_new_connection = True

    def __init__(self, engine: Engine, sql: Statements, publish: Publish, readers: Readers) -> None:
        super().__init__(engine, sql, publish)
        self._readers = readers
        self.sender = uuid.uuid4().hex[:16]  # this process, in its NOTIFY payloads
        # The current state this process knows (the view's; see `KnownState`), and
        # whether the next group may run from it (`_commit_from_view`): not after another
        # replica's commit made one fail, until a group finds the counter where the view is.
        self.known: KnownSource | None = None
        self._guessing = True

    def _start_group(self, group: list[PendingWrite]) -> None:
        """On the loop: what the view knows of the group's jobs, then the whole group to
        the commit thread."""
        known = None
        if self.known is not None:
            keys = [write.key for write in group]
            if None not in keys:
                known = self.known(keys)  # type: ignore[arg-type]
        self._committer.submit(self._commit_whole, group, known)

    def _commit_whole(self, group: list[PendingWrite], known: KnownState | None) -> None:
        """In the commit thread: the group's transaction (`_commit`, which finishes it);
        then, on the loop, the next group."""
        began = time.monotonic()
        self._commit(group, known=known)
        took = time.monotonic() - began
        loop = group[0].loop
        loop.call_soon_threadsafe(self._continue, loop, len(group), took)

    def _run_group(
        self,
        conn: Connection,
        group: list[PendingWrite],
        cur: Any = None,
        known: KnownState | None = None,
    ) -> Tx:
        if known is not None and self._guessing:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            cur = dbapi.cursor()
            from_view = self._commit_from_view(conn, group, cur, known)
            if from_view is not None:
                return from_view
        return super()._run_group(conn, group, cur, known)

    def _statements(self, dbapi: Any) -> contextlib.AbstractContextManager[Any]:
        return dbapi.pipeline()  # type: ignore[no-any-return]

    def _counter_read(self, revision: int, known: KnownState | None) -> None:
        if known is not None and revision == known[0]:
            self._guessing = True  # the view has caught up with the other replicas

    def _bump_revision(self, cur: Any, revision: int) -> None:
        # The NOTIFY is delivered at commit, to the other replicas' listeners.
        cur.execute(PG_BUMP_AND_NOTIFY, (revision, CHANNEL, payload(self.sender, revision)))

    def _send_commit(self, cur: Any) -> None:
        # The COMMIT goes in the pipeline too: the group's statements and its COMMIT
        # take one round trip. From here on a lost connection leaves the outcome
        # unknown (`_commit` runs nothing again).
        self._commit_sent = True
        cur.execute("COMMIT")

    def _commit_from_view(
        self, conn: Connection, group: list[PendingWrite], cur: Any, known: KnownState
    ) -> Tx | None:
        """In one round trip: the group run against the jobs as this process knows them
        (`known`, the view's), then sent whole: the counter bumped only from the
        revision they are current at, the changes, and the COMMIT. None (nothing
        committed): the group needs a read the view cannot answer, changes nothing, or
        another replica committed since; it then runs the usual way (`_run_group`)."""
        sql = self._sql
        revision, loaded = known
        tx = Tx(conn, revision, datetime.now(UTC), sql, cur, loaded=dict(loaded), from_view=True)
        for write in group:
            write.result, write.error = None, None
            try:
                write.result = write.fn(tx)
            except JobStatusError as error:
                write.error = error
            except NeedsRead:
                return None
        if not tx.changed:
            return None
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        try:
            with dbapi.pipeline():
                cur.execute(
                    PG_GUESSED_BUMP,
                    (tx.revision, revision, CHANNEL, payload(self.sender, tx.revision)),
                )
                sql.write(cur, tx.rows, tx.seconds)
                self._commit_sent = True
                cur.execute("COMMIT")
        except psycopg.errors.DivisionByZero:
            # Another replica committed after the view's revision: nothing was written.
            self._commit_sent = False
            dbapi.rollback()
            self._guessing = False
            WRITE_GROUP_GUESSES.labels("conflict").inc()
            return None
        WRITE_GROUP_GUESSES.labels("committed").inc()
        WRITE_GROUPS.inc()
        WRITE_GROUP_WRITES.inc(len(group))
        return tx

    async def compaction_batch(self, step: int) -> bool:
        """Its own short transaction on the reader pool: deleting old events takes no
        lock a writer needs."""
        done: bool = await self._readers.read(
            lambda conn: delete_events_locked(conn, step), isolation="READ COMMITTED"
        )
        return done
