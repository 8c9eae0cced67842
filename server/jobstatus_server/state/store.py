"""The SQL store: jobs and their event log, one transaction per change. This module is
the facade the rest of the server uses (`Store`); the parts are beside it:

- sql.py: the SQL text of the hot paths, compiled once per dialect;
- transaction.py: `Tx`, what a write reads and changes through;
- group_commit.py: group commit, shared by both databases;
- sqlite_writer.py, pg_writer.py: the writer of each database;
- readers.py: the reader pool and its queries;
- compaction.py: deleting the events beyond the kept window;
- engines.py: engines and connections per database;
- changes.py: `Change`, `History`, what reads and commits hand out;
- snapshot.py: a watch's initial state, read in pages (`initial_state`).

Writes are committed in groups, one group at a time: the writes waiting on the
event loop form a group and are committed together (group commit); each write
sees the ones before it, and the next group forms while one commits. On SQLite
a group's statements run on the event loop (tens of microseconds each against
the page cache, with no hand-off to a thread per statement) and only its
COMMIT, which waits for the disk, runs in a commit thread. Another process
holding SQLite's write lock sends the group to that thread to wait, so the loop
never waits on the database. On PostgreSQL, where every statement is a round
trip, the commit thread runs the whole group, in two round trips. A revision is
taken from the `counter` row, locked for the whole transaction, so revisions
become visible in commit order and a tailing reader never skips one. A
domain error in one write leaves the others of its group untouched; a
database error re-runs each write of the group alone.

Each write serializes its job once (`Tx.put`): the same bytes go to the job
row and the event row, and, as a `Change` in revision order, to the
`on_changes` listeners (the watch hub, and through it the view) before the
writes are answered, so nothing reads the log back after a local commit. The
writer runs its statements on the driver's own cursor and keeps its
connection between groups; it reads the jobs a group's updates will load in
one statement, and lets a group fill under concurrency (see `GroupCommit._fill`).

Reads run on a small thread pool with their own connections (WAL readers do
not wait for the writer). Hot paths use SQLAlchemy Core statements; the table
models stay in SQLModel (models.py) and the schema in Alembic migrations.

PostgreSQL (any number of replicas on one database): the same writer takes
`SELECT ... FOR UPDATE` on the counter row first, so writing transactions of
all replicas run one after another, each sees the rows of the one before
(READ COMMITTED), and a revision becomes visible only after every smaller one
is (the next writer gets the lock only once the previous transaction is
visible). Each writing transaction sends a NOTIFY that wakes the other
replicas' hubs (notify.py); it is folded into the counter's UPDATE, and a
group's statements and its COMMIT go out in psycopg's pipeline mode (see
pg_writer.py, also for groups run from the view's state). Reads run in
REPEATABLE READ, so a read of several statements sees one snapshot. A lost
connection fails the writes of its group with UNAVAILABLE (a transaction is all
or nothing) and the pool reconnects.
PostgreSQL's work stays on threads, not on an asyncio driver: group commit on
a plain connection in pipeline mode, and the event loop never waits on a round
trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Connection, Engine, text

from jobstatus_server.contract.kinds import Kind
from jobstatus_server.observability.metrics import STORE_REVISION
from jobstatus_server.state.changes import Change, History
from jobstatus_server.state.compaction import compact
from jobstatus_server.state.engines import (
    is_sqlite,
    ping_sqlite_file,
    postgres_engine,
    sqlite_engine,
)
from jobstatus_server.state.group_commit import GroupCommit
from jobstatus_server.state.notify import Listener
from jobstatus_server.state.pg_writer import KnownSource, PostgresWriter
from jobstatus_server.state.readers import Readers
from jobstatus_server.state.snapshot import PAGE, InitialState, Position, read_position
from jobstatus_server.state.sql import Statements
from jobstatus_server.state.sqlite_writer import SqliteWriter
from jobstatus_server.state.transaction import KnownState, Tx

__all__ = ["Change", "History", "KnownState", "Store", "Tx"]

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


@dataclass
class Store:
    url: str
    sqlite_synchronous: str = "FULL"
    revision: int = 0
    _listeners: list[Callable[[int], None]] = field(default_factory=list)
    _change_listeners: list[Callable[[list[Change]], None]] = field(default_factory=list)
    _engines: tuple[Engine, ...] = ()
    _readers: Readers | None = None
    _writer: GroupCommit | None = None
    _sql: Statements | None = None
    _listener: Listener | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _known: KnownSource | None = None
    _is_sqlite: bool | None = None

    @property
    def is_sqlite(self) -> bool:
        sqlite = self._is_sqlite
        if sqlite is None:
            sqlite = self._is_sqlite = is_sqlite(self.url)
        return sqlite

    @property
    def known(self) -> KnownSource | None:
        """PostgreSQL: what this process knows of some jobs (the view's `known`), from
        which a group that reads nothing else runs in one round trip."""
        return self._known

    @known.setter
    def known(self, source: KnownSource | None) -> None:
        self._known = source
        if isinstance(self._writer, PostgresWriter):
            self._writer.known = source

    async def start(self) -> None:
        from jobstatus_server.state.migrations import upgrade

        await asyncio.to_thread(upgrade, self.url)
        # The one place the database picks the store's parts.
        if self.is_sqlite:
            writer_engine = sqlite_engine(self.url, self.sqlite_synchronous, writer=True)
            reader_engine = sqlite_engine(self.url, self.sqlite_synchronous, writer=False)
        else:
            writer_engine = postgres_engine(self.url, writer=True)
            reader_engine = postgres_engine(self.url, writer=False)
        self._engines = (writer_engine, reader_engine)
        self._sql = Statements.for_dialect(writer_engine.dialect)
        self._readers = readers = Readers(reader_engine)
        self.revision = await readers.counter("revision")
        self._loop = asyncio.get_running_loop()
        if self.is_sqlite:
            self._writer = SqliteWriter(writer_engine, self._sql, self._publish)
        else:
            writer = PostgresWriter(writer_engine, self._sql, self._publish, readers)
            writer.known = self._known
            self._writer = writer
            self._listener = Listener(self.url, writer.sender, self._remote_commit)
            self._listener.start()

    async def close(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._readers is not None:
            self._readers.close()
        for engine in self._engines:
            engine.dispose()

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call `listener(revision)` on the event loop after each commit that changed something:
        this process's, and (on PostgreSQL) another replica's, when its NOTIFY arrives
        (`revision` may then be 0: something may have been committed)."""
        self._listeners.append(listener)

    def on_changes(self, listener: Callable[[list[Change]], None]) -> None:
        """Call `listener(changes)` on the event loop with each commit group of this
        process, its changes in revision order, before the writes are answered and
        before the `on_commit` listeners."""
        self._change_listeners.append(listener)

    def _publish(self, revision: int, changes: list[Change] | None) -> None:
        """On the loop, as the writer finishes a group that committed `revision`."""
        if revision > self.revision:
            self.revision = revision
            STORE_REVISION.set(revision)
            if changes:
                for change_listener in self._change_listeners:
                    try:
                        change_listener(changes)
                    except Exception:  # a listener's bug must not leave writes unanswered
                        log.exception("a change listener failed")
            for listener in self._listeners:
                listener(revision)

    def _remote_commit(self, revision: int) -> None:
        """On the listener thread: another replica committed (or may have)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify_listeners, revision)

    def _notify_listeners(self, revision: int) -> None:
        for listener in self._listeners:
            listener(revision)

    # --- writing ------------------------------------------------------------

    async def transact(
        self,
        fn: Callable[[Tx], T],
        key: tuple[str, str, str] | None = None,
        *,
        alone: bool = False,
    ) -> T:
        """Run `fn` in a writing transaction; return its result once committed. `key`
        (tenant, kind, job id): the job `fn` loads, read for the whole group at once.
        `alone`: a long write (on SQLite it runs in a transaction of its own, in the
        commit thread, not on the event loop)."""
        assert self._writer is not None
        result: T = await self._writer.submit(fn, key, alone)
        return result

    # --- reading ------------------------------------------------------------

    async def read(
        self,
        fn: Callable[[Connection], T],
        *,
        isolation: str | None = None,
        single_statement: bool = False,
    ) -> T:
        """Run `fn` in a transaction on a connection of the reader pool (on PostgreSQL
        REPEATABLE READ, one snapshot for all its statements, unless `isolation` says).
        A `single_statement` read on SQLite runs without BEGIN and COMMIT: one
        statement is its own snapshot."""
        assert self._readers is not None
        return await self._readers.read(fn, isolation=isolation, single_statement=single_statement)

    async def get(self, kind: Kind[M], tenant: str, job_id: str) -> M | None:
        assert self._readers is not None and self._sql is not None
        data = await self._readers.job_data(self._sql.load, kind.name, tenant, job_id)
        return None if data is None else kind.message.FromString(data)

    async def page(
        self, kind: Kind[M], tenant: str, statuses: Sequence[int], after: int, limit: int
    ) -> list[tuple[int, M]]:
        """Up to `limit` jobs created after revision `after`, oldest first."""
        assert self._readers is not None
        rows = await self._readers.page(kind.name, tenant, statuses, after, limit)
        return [(r, kind.message.FromString(d)) for r, d in rows]

    async def due(self, now: float, limit: int = 500) -> list[tuple[str, str, str]]:
        """The jobs whose time-driven transition is due: (kind, tenant, job_id)."""
        assert self._readers is not None
        return await self._readers.due(now, limit)

    async def settled_before(self, cutoff: float, limit: int) -> list[tuple[str, str, str]]:
        """The jobs settled with no change since `cutoff` (POSIX seconds), longest settled
        first: (kind, tenant, job_id)."""
        assert self._readers is not None
        return await self._readers.settled_before(cutoff, limit)

    async def events_after(
        self,
        after: int,
        limit: int,
        *,
        upper: int | None = None,
        kind: str | None = None,
        tenant: str | None = None,
        ids: Sequence[str] = (),
    ) -> list[Change]:
        """Events with revision in (after, upper], oldest first, optionally filtered."""
        assert self._readers is not None
        return await self._readers.events_after(after, limit, upper, kind, tenant, ids)

    def initial_state(
        self, kind: str, tenant: str, ids: Sequence[str], *, page: int = PAGE, batch: int = 512
    ) -> InitialState:
        """The matching jobs' current state, to be read in pages (snapshot.py): memory for
        one page at a time, however many jobs match."""
        return InitialState(self.read, kind, tenant, ids, page=page, batch=batch)

    async def position(self) -> Position:
        """The store's revision and compaction point, read at once."""
        return await self.read(read_position, single_statement=True)

    async def history(
        self, kind: Kind[M], tenant: str, job_id: str, after: int, limit: int
    ) -> History:
        """Up to `limit` kept changes of one job after revision `after`, oldest first, with
        the compaction point and the job's first revision, read in one transaction."""
        assert self._readers is not None
        return await self._readers.history(kind.name, tenant, job_id, after, limit)

    async def compacted(self) -> int:
        assert self._readers is not None
        return await self._readers.counter("compacted")

    async def compact(self, keep_count: int, keep_age: float, batch: int = 5000) -> int:
        """Delete events beyond the kept window (the newest `keep_count`, younger than
        `keep_age` seconds); return the new compaction point. Runs in short batches
        that never touch the revision counter, so writers are not held up. On
        PostgreSQL one replica at a time compacts (the others skip), and the
        compaction point only moves forward (compaction.py)."""
        assert self._readers is not None and self._writer is not None
        return await compact(
            self._readers, self._writer.compaction_batch, keep_count, keep_age, batch
        )

    async def ping(self) -> None:
        """Raise Unavailable unless the database answers a query now (on SQLite the
        file, opened afresh: engines.ping_sqlite_file)."""
        if self.is_sqlite:
            await asyncio.to_thread(ping_sqlite_file, self.url)
            return
        await self.read(lambda conn: conn.execute(text("SELECT value FROM counter")).first())
