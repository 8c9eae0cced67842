"""Group commit, shared by both databases: writes wait on the event loop for their
group, one group at a time is committed, in revision order, and the next forms while
it commits, from the writes that arrive meanwhile and those its answers bring back.
The commit thread gets one hand-off per group, not one per write.

`GroupCommit` is the part both databases share: the queue and how a group fills
(`_fill`), the transaction of a group (`_run_group`, with the few steps that differ by
database as methods its subclasses give), a group in a transaction of its own with
the handling of each failure (`_commit`), the writer's connection kept from group to
group, and finishing a group (`_finish`: the changes published, the writes
answered). Each database's writer is a subclass: `SqliteWriter` (sqlite_writer.py)
runs a group's statements on the loop and only its COMMIT in the commit thread;
`PostgresWriter` (pg_writer.py) runs the whole transaction in the commit thread, in
psycopg's pipeline mode. The queue, the fill, the commit thread's failure handling
and the finish stay in one module: they hold the same state and none is meaningful
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from jobstatus_server.contract.errors import JobStatusError, Unavailable
from jobstatus_server.observability.metrics import WRITE_GROUP_WRITES, WRITE_GROUPS, WRITES
from jobstatus_server.state.changes import Change
from jobstatus_server.state.engines import DRIVER_LOST, LOST
from jobstatus_server.state.sql import Statements
from jobstatus_server.state.transaction import KnownState, Tx

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_GROUP = 128
WRITER_IDLE = 1.0  # seconds after which the writer's connection is pinged again
# How long a group waits to fill (GroupCommit._fill): at most MAX_FILL_WAIT seconds;
# after a wait that ran out before its writes came, at most FILL_SHARE times as long as
# the last COMMIT took.
MAX_FILL_WAIT = 0.01
FILL_SHARE = 2.0


def fill_wait(missed: bool, took: float) -> float:
    """How long the next group may wait for its writes: MAX_FILL_WAIT while they came in
    time (closed-loop writers: each answer brings the next write back at once), and
    after a wait that ran out (writers that send at their own pace) no longer than
    FILL_SHARE times the last COMMIT's `took` seconds."""
    return min(MAX_FILL_WAIT, took * FILL_SHARE) if missed else MAX_FILL_WAIT


# What finishing a group tells the store: the revision it committed (None: nothing was
# committed) and its changes in revision order, on the event loop, before the writes
# are answered.
Publish = Callable[[int, "list[Change] | None"], None]


@dataclass
class PendingWrite:
    """One write waiting for (or in) a group: its function, its answer, and the future
    its caller awaits."""

    fn: Callable[[Tx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    key: tuple[str, str, str] | None = None  # (tenant, kind, job id) it will load
    alone: bool = False  # SQLite: run in a transaction of its own, off the event loop


class GroupCommit:
    """The writer of one store: forms groups of writes and commits them one at a time
    (see the module's docstring); a subclass per database."""

    # A group whose kept connection turned out dead before anything reached a COMMIT
    # runs again, once, on a new connection (PostgreSQL's, which a restart ends).
    retries_on_new_connection = False

    def __init__(self, engine: Engine, sql: Statements, publish: Publish) -> None:
        self._engine = engine
        self._sql = sql
        self._publish = publish
        self._connection: Connection | None = None  # the writer's own
        self._connection_used = 0.0
        self._commit_sent = False  # the group reached its COMMIT (see `_commit`)
        # The writes waiting for the next group, whether a group is under way, and the
        # thread its COMMIT (on PostgreSQL its whole transaction) goes to.
        self._pending: list[PendingWrite] = []
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobstatus-commit")
        # Group fill: how many writes the next group waits for, for at most `_fill_wait`
        # seconds (see `_fill`), and the timer of a wait under way.
        self._expected = 1
        self._fill_wait = 0.0
        self._filling: asyncio.TimerHandle | None = None
        self._fill_missed = False  # the last wait ran out before its writes came
        self._answered_at = 0.0

    async def close(self) -> None:
        await self._idle.wait()  # every write taken is committed and answered
        await asyncio.wrap_future(self._committer.submit(self._close_connection))
        self._committer.shutdown(wait=True)

    async def compaction_batch(self, step: int) -> bool:
        """Delete the events up to `step` as this database does it (compaction.py)."""
        raise NotImplementedError

    def submit(
        self, fn: Callable[[Tx], T], key: tuple[str, str, str] | None, alone: bool
    ) -> asyncio.Future[T]:
        """Queue `fn` for a group; the future is its result once committed (Store.transact)."""
        loop = asyncio.get_running_loop()
        write = PendingWrite(fn=fn, loop=loop, future=loop.create_future(), key=key, alone=alone)
        self._pending.append(write)
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            self._fill(loop)
        elif self._filling is not None and len(self._pending) >= self._expected:
            self._filling.cancel()
            self._filling = None
            self._fill_missed = False
            loop.call_soon(self._next_group)
        return write.future

    # --- groups: formed on the event loop, committed one at a time --------------------

    def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next group once the writes it waits for are there: `_expected`, as
        many as the last group answered (their writers send again) and the writes that
        arrived while it committed; for at most `_fill_wait` seconds (see there). A
        COMMIT, and the loop's work around it, is then shared by more writes. A lone
        writer never waits (its last group had one write), nor does the first write
        after a pause. Either way the group starts after the callbacks ready now, which
        may add writes to it."""
        if (
            len(self._pending) >= self._expected
            or self._fill_wait <= 0
            or loop.time() - self._answered_at > MAX_FILL_WAIT
        ):
            loop.call_soon(self._next_group)
        else:
            self._filling = loop.call_later(self._fill_wait, self._filled)

    def _filled(self) -> None:
        self._filling = None
        self._fill_missed = True
        self._next_group()

    def _next_group(self) -> None:
        pending = self._pending
        if not pending:
            self._flushing = False
            self._idle.set()
            return
        if pending[0].alone:
            group = [pending.pop(0)]
            self._committer.submit(self._commit_apart, group)
            return
        size = next((i for i, write in enumerate(pending) if write.alone), len(pending))
        size = min(size, MAX_GROUP)
        group = pending[:size]
        del pending[:size]
        self._start_group(group)

    def _start_group(self, group: list[PendingWrite]) -> None:
        """On the loop: send the group on its way to a commit (per database)."""
        raise NotImplementedError

    def _commit_apart(self, group: list[PendingWrite]) -> None:
        """In the commit thread: the group in a transaction of its own (`_commit`); then
        the next group."""
        self._commit(group)
        group[0].loop.call_soon_threadsafe(self._next_group)

    # --- finishing a group -------------------------------------------------------------
    #
    # `_finish` is the one place a group is finished, on the loop: its changes published
    # (the store's revision, its listeners), then each write answered. From the commit
    # thread it is reached through `_finish_threadsafe`, or `_finish_then_continue`
    # when the next group follows at once; `_continue` forms that next group.

    def _finish(
        self, group: list[PendingWrite], revision: int | None, changes: list[Change] | None
    ) -> None:
        if revision is not None:
            self._publish(revision, changes)
        for write in group:
            if write.future.done():
                continue
            if write.error is not None:
                write.future.set_exception(write.error)
            else:
                write.future.set_result(write.result)

    def _finish_threadsafe(
        self, group: list[PendingWrite], revision: int | None, changes: list[Change] | None = None
    ) -> None:
        loop = group[0].loop
        loop.call_soon_threadsafe(self._finish, group, revision, changes)

    def _finish_then_continue(
        self,
        group: list[PendingWrite],
        revision: int | None,
        changes: list[Change] | None,
        took: float = 0.0,
    ) -> None:
        """From the commit thread: finish the group on the loop (`took`: its COMMIT's
        seconds), then go on with the next."""
        loop = group[0].loop

        def finish() -> None:
            self._finish(group, revision, changes)
            self._continue(loop, len(group), took)

        loop.call_soon_threadsafe(finish)

    def _continue(self, loop: asyncio.AbstractEventLoop, size: int, took: float) -> None:
        """On the loop, once a group of `size` writes is answered (its commit took `took`
        seconds): the next group, filled as `_fill` says."""
        self._expected = size + len(self._pending)
        self._fill_wait = fill_wait(self._fill_missed, took)
        self._answered_at = loop.time()
        if self._pending:
            self._fill(loop)
        else:
            self._next_group()

    # --- a group's transaction -----------------------------------------------------------

    def _commit(
        self, group: list[PendingWrite], again: bool = True, known: KnownState | None = None
    ) -> None:
        """In the commit thread: the group in a transaction (`_run_group`), then finished.
        A write's domain error leaves the others untouched; a statement the database
        refused re-runs each write alone; a lost database fails them all."""
        kept = False
        self._commit_sent = False
        try:
            held = self._connection
            conn = self._held_connection()
            kept = conn is held
            try:
                with conn.begin():
                    tx = self._run_group(conn, group, known=known)
                    self._commit_sent = True  # SQLite: what fails from here failed in COMMIT
            except DRIVER_LOST:
                conn.invalidate()
                raise
        except LOST as error:
            self._release_connection()
            if kept and not self._commit_sent and again and self.retries_on_new_connection:
                # The connection kept from the last group had died since (the database
                # restarted, or ended it): nothing of this group reached a COMMIT, so it
                # runs again, once, on a new connection.
                log.info("the writer's connection was gone (%s): writing on a new one", error)
                self._commit(group, again=False, known=known)
                return
            # The database (or our connection to it) is gone: the transaction is rolled
            # back or, if the connection died during COMMIT, its outcome is unknown; either
            # way every write of the group fails, and none is run again here.
            self._lost(group, error)
            self._finish_threadsafe(group, None)
            return
        except Exception as error:
            if len(group) > 1:
                for write in group:
                    self._commit([write])
                return
            # Not the database going away but a statement it refused (a bug, a schema that
            # does not match): INTERNAL, since retrying will not help.
            log.exception("write failed")
            group[0].result, group[0].error = None, error
            self._finish_threadsafe(group, None)
            return
        for name in tx.kinds:
            WRITES.labels(name).inc()
        self._finish_threadsafe(group, tx.revision if tx.changed else None, tx.changes)

    @staticmethod
    def _lost(group: list[PendingWrite], error: Exception) -> None:
        """Fail every write of the group: the database did not take it."""
        log.warning("the database did not take a write: %s", error)
        lost = Unavailable("the database did not take the write", reason="STORAGE_UNAVAILABLE")
        for write in group:
            write.result, write.error = None, lost

    def _run_group(
        self,
        conn: Connection,
        group: list[PendingWrite],
        cur: Any = None,
        known: KnownState | None = None,
    ) -> Tx:
        """The group's writes in the open transaction, on the driver's own cursor: the
        counter's lock with the jobs the group loads, the writes, their changes, the
        counter's bump and (where the database sends it here) the COMMIT."""
        sql = self._sql
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        if cur is None:
            cur = dbapi.cursor()
        keys = list(dict.fromkeys(write.key for write in group if write.key is not None))
        with self._statements(dbapi):
            sql.lock_revision.execute(cur)
            if keys:
                # The jobs the group will load, in one statement (in PostgreSQL's
                # pipeline, sent with the lock: one round trip for both).
                prefetch = dbapi.cursor()
                prefetch.execute(*sql.load_many(keys))
            row = cur.fetchone()
            assert row is not None, "the revision counter row is missing"
            tx = Tx(conn, int(row[0]), datetime.now(UTC), sql, cur)
            self._counter_read(tx.revision, known)
            if keys:
                tx.loaded = dict.fromkeys(keys)
                for tenant, kind, job_id, data in prefetch.fetchall():
                    tx.loaded[(tenant, kind, job_id)] = bytes(data)
            for write in group:
                write.result, write.error = None, None
                try:
                    write.result = write.fn(tx)
                except JobStatusError as error:
                    write.error = error
            tx.flush()
            if tx.changed:
                self._bump_revision(cur, tx.revision)
            self._send_commit(cur)
        WRITE_GROUPS.inc()
        WRITE_GROUP_WRITES.inc(len(group))
        return tx

    # The steps of `_run_group` that differ by database.

    def _statements(self, dbapi: Any) -> contextlib.AbstractContextManager[Any]:
        """How the group's statements go out (PostgreSQL: in a pipeline)."""
        return contextlib.nullcontext()

    def _counter_read(self, revision: int, known: KnownState | None) -> None:
        """The group found the counter at `revision`."""

    def _bump_revision(self, cur: Any, revision: int) -> None:
        raise NotImplementedError

    def _send_commit(self, cur: Any) -> None:
        """Send the COMMIT with the group's statements, where the database does."""

    # --- the writer's connection -----------------------------------------------------------

    def _held_connection(self) -> Connection:
        """The writer's connection, kept from group to group: no pool checkout, ping
        and reset per commit. A lost one is dropped and the next group connects anew."""
        conn = self._connection
        now = time.monotonic()
        if conn is not None and now - self._connection_used > WRITER_IDLE:
            # Idle for a while: back to the pool, whose checkout pings it first.
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if conn is None or conn.closed or conn.invalidated:
            conn = self._connection = self._engine.connect()
        self._connection_used = now
        return conn

    def _close_connection(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _release_connection(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()
