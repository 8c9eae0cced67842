"""The SQL store: jobs and their event log, one transaction per change.

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
one statement, and lets a group fill under concurrency (see `_fill`).

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
group's statements and its COMMIT go out in psycopg's pipeline mode (a read is
the only thing that waits for an answer): two round trips, the counter's lock
with the jobs the group loads, then its changes (one statement, `PG_WRITE`)
and the COMMIT. A group whose jobs this process's view holds, current up to
revision R, is guessed (`_guess`): run against the view's state and sent in
one round trip, bumping the counter only if it is still R. If another replica
committed since, that statement fails, nothing is written, and the group runs
the two round trips on the database's state; the next groups do not guess
until one finds the counter where the view is (its guarded UPDATE takes the
counter row's lock first, as the SELECT ... FOR UPDATE does). Reads run in
REPEATABLE READ, so a read of several statements sees one snapshot. A lost
connection fails the writes of its group with UNAVAILABLE (a transaction is all
or nothing) and the pool reconnects.
PostgreSQL's work stays on threads, not on an asyncio driver: group commit on
a plain connection in pipeline mode, and the event loop never waits on a round
trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from jobstatus_server.contract.errors import JobStatusError, Unavailable
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.observability.metrics import (
    STORE_REVISION,
    WRITE_GROUP_GUESSES,
    WRITE_GROUP_WRITES,
    WRITE_GROUPS,
    WRITES,
)
from jobstatus_server.state.models import Counter, Event, Job
from jobstatus_server.state.notify import CHANNEL, Listener, payload

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)
JOB = Job.__table__  # type: ignore[attr-defined]
EVENT = Event.__table__  # type: ignore[attr-defined]
COUNTER = Counter.__table__  # type: ignore[attr-defined]
MAX_GROUP = 128
WRITER_IDLE = 1.0  # seconds after which the writer's connection is pinged again
# How long a group waits to fill (Store._fill): at most MAX_FILL_WAIT
# seconds; after a wait that ran out before its writes came, at most FILL_SHARE times as
# long as the last COMMIT took.
MAX_FILL_WAIT = 0.01
FILL_SHARE = 2.0
READERS = 4
SQLITE_BUSY_MS = 30000  # how long a SQLite statement waits for another's lock
COMPACT_LOCK = 0x6A6F6273_00000002  # pg advisory lock: one replica compacts at a time
# A failure of the database or the connection to it, not of one write's statements.
# The same failures as the drivers raise them, on the writer's own cursor.
DRIVER_LOST: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
LOST: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    *DRIVER_LOST,
)


@dataclass(frozen=True)
class Sql:
    """A statement compiled once for a dialect, run through the driver: the hot paths
    skip SQLAlchemy's per-call construction, compilation lookup and type processing."""

    text: str
    names: tuple[str, ...] | None  # parameter order for positional paramstyles
    fixed: dict[str, Any]  # the values the statement itself carries

    @classmethod
    def of(cls, statement: Any, dialect: Any) -> Sql:
        compiled = statement.compile(dialect=dialect)
        names = compiled.positiontup
        fixed = {name: value for name, value in compiled.params.items() if value is not None}
        return cls(str(compiled), tuple(names) if names is not None else None, fixed)

    def run(self, conn: Connection, **params: Any) -> Any:
        values = {**self.fixed, **params}
        if self.names is None:
            return conn.exec_driver_sql(self.text, values)
        return conn.exec_driver_sql(self.text, tuple(values[name] for name in self.names))

    def execute(self, cursor: Any, **params: Any) -> Any:
        """Run on a DB-API cursor: no SQLAlchemy on the way at all."""
        cursor.execute(self.text, self.row(**params))
        return cursor

    def row(self, **params: Any) -> Any:
        """The driver's parameters for one run of the statement (for `execute_many`)."""
        values = {**self.fixed, **params} if self.fixed else params
        if self.names is None:
            return values
        return tuple(values[name] for name in self.names)

    def execute_many(self, cursor: Any, rows: Sequence[Any]) -> None:
        """Run once per row of `rows` (each from `row`), in order, in one driver call."""
        cursor.executemany(self.text, rows)


def _fill_wait(missed: bool, took: float) -> float:
    """How long the next group may wait for its writes: MAX_FILL_WAIT while they came in
    time (closed-loop writers: each answer brings the next write back at once), and
    after a wait that ran out (writers that send at their own pace) no longer than
    FILL_SHARE times the last COMMIT's `took` seconds."""
    return min(MAX_FILL_WAIT, took * FILL_SHARE) if missed else MAX_FILL_WAIT


# A change as `Tx.put` made it and `HotSql.write` sends it: revision, tenant, kind, job
# id, status, due_at, the job's bytes, and whether the job's row was there before the
# change (else its INSERT went out at once).
Put = tuple[int, str, str, str, int, float | None, bytes, bool]

# HotSql.write on PostgreSQL: a group's changes as columns (arrays, one element per change,
# in revision order, sent in binary: no quoting per element), then the events'
# created_at. A job changed more than once in the group takes its last change.
PG_WRITE = """
WITH v AS (
    SELECT * FROM UNNEST(
        %b::bigint[], %b::text[], %b::text[], %b::text[], %b::integer[],
        %b::double precision[], %b::bytea[], %b::boolean[]
    ) AS v (revision, tenant, kind, job_id, status, due_at, data, existing)
), logged AS (
    INSERT INTO event (revision, tenant, kind, job_id, status, created_at, data)
    SELECT revision, tenant, kind, job_id, status, %s, data FROM v
)
UPDATE job
SET status = last.status, revision = last.revision, due_at = last.due_at, data = last.data
FROM (
    SELECT DISTINCT ON (tenant, kind, job_id) * FROM v WHERE existing
    ORDER BY tenant, kind, job_id, revision DESC
) AS last
WHERE job.tenant = last.tenant AND job.kind = last.kind AND job.job_id = last.job_id
"""


# A guessed group (Store._guess) bumps the counter first, and only from the revision its
# jobs were read at: when another replica has committed since, nothing is updated and
# the division by zero ends the transaction (the group then runs the usual way).
PG_GUESSED_BUMP = """
WITH bumped AS (
    UPDATE counter SET value = %s WHERE name = 'revision' AND value = %s
    RETURNING pg_notify(%s, %s)
)
SELECT 1 / count(*) FROM bumped
"""

# The current state a process knows (the view's), for a group that needs no read: the
# revision it is complete up to, and the bytes of those of `keys` (tenant, kind, job id)
# it holds as of that revision. None: nothing to go on.
Known = tuple[int, dict[tuple[str, str, str], bytes]]


class Unknown(Exception):
    """A guessed group (Store._guess) asked for something it was not given."""


def _key(prefix: str = "") -> Any:
    return (
        (JOB.c.tenant == bindparam(f"{prefix}tenant"))
        & (JOB.c.kind == bindparam(f"{prefix}kind"))
        & (JOB.c.job_id == bindparam(f"{prefix}job_id"))
    )


@dataclass(frozen=True)
class HotSql:
    """The statements of every write and point read, for one dialect."""

    load: Sql
    insert_job: Sql
    update_job: Sql
    insert_event: Sql
    lock_revision: Sql
    set_revision: Sql
    load_by_request: Sql
    positional: bool  # the driver's parameters are `?` (SQLite), else `%s` (psycopg)

    def write(self, cur: Any, rows: Sequence[Put], seconds: float) -> None:
        """Log each change of `rows` as an event and update the jobs that already had a
        row (a new job's INSERT went out when it was made), in revision order; `seconds`:
        the events' `created_at`."""
        if self.positional:
            # SQLite: one executemany per table, in C against the page cache.
            updates = [
                self.update_job.row(
                    w_tenant=tenant,
                    w_kind=kind,
                    w_job_id=job_id,
                    status=status,
                    revision=revision,
                    due_at=due_at,
                    data=data,
                )
                for revision, tenant, kind, job_id, status, due_at, data, existing in rows
                if existing
            ]
            if updates:
                self.update_job.execute_many(cur, updates)
            self.insert_event.execute_many(
                cur,
                [
                    self.insert_event.row(
                        revision=revision,
                        tenant=tenant,
                        kind=kind,
                        job_id=job_id,
                        status=status,
                        created_at=seconds,
                        data=data,
                    )
                    for revision, tenant, kind, job_id, status, _, data, _ in rows
                ],
            )
            return
        # PostgreSQL: one statement for all of them, its columns sent as arrays: the
        # server parses, plans and runs one statement per group, not two per change.
        cur.execute(PG_WRITE, [*map(list, zip(*rows, strict=True)), seconds])

    def load_many(self, keys: Sequence[tuple[str, str, str]]) -> tuple[str, tuple[str, ...]]:
        """A statement (and its parameters) reading the jobs with these keys."""
        mark = "?" if self.positional else "%s"
        rows = ", ".join([f"({mark}, {mark}, {mark})"] * len(keys))
        return (
            "SELECT tenant, kind, job_id, data FROM job"
            f" WHERE (tenant, kind, job_id) IN (VALUES {rows})",
            tuple(part for key in keys for part in key),
        )

    @classmethod
    def for_dialect(cls, dialect: Any) -> HotSql:
        return cls(
            load=Sql.of(select(JOB.c.data).where(_key()), dialect),
            insert_job=Sql.of(insert(JOB), dialect),
            update_job=Sql.of(
                update(JOB)
                .where(_key("w_"))
                .values(
                    status=bindparam("status"),
                    revision=bindparam("revision"),
                    due_at=bindparam("due_at"),
                    data=bindparam("data"),
                ),
                dialect,
            ),
            insert_event=Sql.of(insert(EVENT), dialect),
            lock_revision=Sql.of(
                select(COUNTER.c.value).where(COUNTER.c.name == "revision").with_for_update(),
                dialect,
            ),
            set_revision=Sql.of(
                update(COUNTER)
                .where(COUNTER.c.name == "revision")
                .values(value=bindparam("value")),
                dialect,
            ),
            load_by_request=Sql.of(
                select(JOB.c.data).where(
                    (JOB.c.tenant == bindparam("tenant"))
                    & (JOB.c.kind == bindparam("kind"))
                    & (JOB.c.request_id == bindparam("request_id"))
                ),
                dialect,
            ),
            positional=dialect.paramstyle == "qmark",
        )


@dataclass
class Tx:
    """One writing transaction: reads rows and appends changes with fresh revisions.
    The hot statements go straight to the driver's cursor `cur` of the connection."""

    conn: Connection
    revision: int
    now: datetime
    sql: HotSql
    cur: Any = None
    # Jobs read ahead for the group (None: no such job), kept current by `put`.
    loaded: dict[tuple[str, str, str], bytes | None] = field(default_factory=dict)
    changed: bool = False
    kinds: list[str] = field(default_factory=list)
    # The changes of this transaction, in revision order, with the job's bytes as stored.
    changes: list[Change] = field(default_factory=list)
    # `now` as a Timestamp and as seconds, made once for every write of the transaction.
    stamp: timestamp_pb2.Timestamp = field(default_factory=timestamp_pb2.Timestamp)
    seconds: float = 0.0
    # The changes `put` made, sent together (`flush`: HotSql.write) before anything
    # reads the tables and at the end of the transaction.
    rows: list[Put] = field(default_factory=list)
    # A guess (Store._guess): the jobs in `loaded` are all it may read, and nothing is
    # sent before the end; anything else raises Unknown.
    guess: bool = False

    def __post_init__(self) -> None:
        self.stamp.FromDatetime(self.now)
        self.seconds = self.now.timestamp()

    def flush(self) -> None:
        """Send the job updates and event inserts `put` made so far."""
        rows = self.rows
        if rows:
            self.rows = []
            self.sql.write(self.cur, rows, self.seconds)

    def load(self, kind: Kind[M], tenant: str, job_id: str) -> M | None:
        key = (tenant, kind.name, job_id)
        if key in self.loaded:
            data = self.loaded[key]
            return None if data is None else kind.message.FromString(data)
        if self.guess:
            raise Unknown(key)
        self.flush()
        row = self.sql.load.execute(
            self.cur, tenant=tenant, kind=kind.name, job_id=job_id
        ).fetchone()
        return None if row is None else kind.message.FromString(row[0])

    def load_by_request(self, kind: Kind[M], tenant: str, request_id: str) -> M | None:
        if self.guess:
            raise Unknown(request_id)
        self.flush()
        row = self.sql.load_by_request.execute(
            self.cur, tenant=tenant, kind=kind.name, request_id=request_id
        ).fetchone()
        return None if row is None else kind.message.FromString(row[0])

    def jobs_in(self, kind: Kind[M], tenant: str, statuses: Sequence[int]) -> list[M]:
        if not statuses:
            return []
        if self.guess:
            raise Unknown(statuses)
        self.flush()
        if self.sql.positional:
            marks = ", ".join("?" * len(statuses))
            self.cur.execute(
                f"SELECT data FROM job WHERE tenant = ? AND kind = ? AND status IN ({marks})",
                (tenant, kind.name, *statuses),
            )
        else:
            self.cur.execute(
                "SELECT data FROM job WHERE tenant = %s AND kind = %s AND status = ANY(%s)",
                (tenant, kind.name, list(statuses)),
            )
        return [kind.message.FromString(data) for (data,) in self.cur.fetchall()]

    def put(
        self,
        kind: Kind[M],
        tenant: str,
        message: M,
        *,
        created: bool,
        request_id: str | None = None,
    ) -> M:
        """Store `message` as the job's new state with the next revision, and log the change."""
        if created and self.guess:
            raise Unknown(kind.name)
        self.revision += 1
        self.changed = True
        self.kinds.append(kind.name)
        revision = self.revision
        setattr(message, "revision", revision)  # noqa: B010
        getattr(message, "update_time").CopyFrom(self.stamp)  # noqa: B009
        if created:
            getattr(message, "create_time").CopyFrom(self.stamp)  # noqa: B009
        job_id = kind.job_id(message)
        status = kind.status_of(message)
        data = message.SerializeToString()
        due_at = kind.due(message)
        if created:
            self.flush()
            self.sql.insert_job.execute(
                self.cur,
                tenant=tenant,
                kind=kind.name,
                job_id=job_id,
                status=status,
                revision=revision,
                create_revision=revision,
                request_id=request_id or None,
                due_at=due_at,
                data=data,
            )
        self.rows.append((revision, tenant, kind.name, job_id, status, due_at, data, not created))
        self.loaded[(tenant, kind.name, job_id)] = data
        change = Change(revision, tenant, kind.name, job_id, status, data)
        change.cache[kind.name] = message
        self.changes.append(change)
        return message


@dataclass
class _Write:
    fn: Callable[[Tx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    key: tuple[str, str, str] | None = None  # (tenant, kind, job id) it will load
    alone: bool = False  # SQLite: run in a transaction of its own, off the event loop


@dataclass
class Store:
    url: str
    sqlite_synchronous: str = "FULL"
    _listeners: list[Callable[[int], None]] = field(default_factory=list)
    _change_listeners: list[Callable[[list[Change]], None]] = field(default_factory=list)
    _writer: Engine | None = None
    _reader: Engine | None = None
    _pool: ThreadPoolExecutor | None = None
    _listener: Listener | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _sender: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _sql: HotSql | None = None
    revision: int = 0
    _is_sqlite: bool | None = None
    _writer_conn: Connection | None = None  # the writer's own
    _writer_used: float = 0.0
    _commit_sent: bool = False  # the writer's group reached its COMMIT (see `_commit`)
    # The writes waiting for the next group, whether a group is under way, and the
    # thread its COMMIT (on PostgreSQL its whole transaction) goes to.
    _pending: list[_Write] = field(default_factory=list)
    _flushing: bool = False
    _idle: asyncio.Event | None = None
    _committer: ThreadPoolExecutor | None = None
    # Group fill: how many writes the next group waits for, for at most `_fill_wait`
    # seconds (see `_fill`), and the timer of a wait under way.
    _expected: int = 1
    _fill_wait: float = 0.0
    _filling: asyncio.TimerHandle | None = None
    _fill_missed: bool = False  # the last wait ran out before its writes came
    _answered_at: float = 0.0
    # PostgreSQL: the current state this process knows (the view's; see `Known`), and
    # whether the next group may guess from it (`_guess`): not after another replica's
    # commit made a guess fail, until a group finds the counter where the view is.
    known: Callable[[Sequence[tuple[str, str, str]]], Known | None] | None = None
    _guessing: bool = True

    @property
    def is_sqlite(self) -> bool:
        sqlite = self._is_sqlite
        if sqlite is None:
            sqlite = self._is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        return sqlite

    def _engine(self, *, writer: bool) -> Engine:
        url = make_url(self.url)
        if not self.is_sqlite:
            return create_engine(
                url,
                pool_pre_ping=True,
                pool_size=1 if writer else READERS,
                max_overflow=0 if writer else 2,
                pool_timeout=10,
                isolation_level="READ COMMITTED" if writer else "REPEATABLE READ",
                connect_args={"connect_timeout": 5, "application_name": "jobstatus"},
            )
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A local file needs no liveness ping per checkout (ping() probes the file).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        synchronous = self.sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            if writer:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif not conn.get_execution_options().get("single_statement"):
                conn.exec_driver_sql("BEGIN")

        return engine

    async def start(self) -> None:
        from jobstatus_server.state.migrations import upgrade

        await asyncio.to_thread(upgrade, self.url)
        self._writer = self._engine(writer=True)
        self._reader = self._engine(writer=False)
        self._sql = HotSql.for_dialect(self._writer.dialect)
        self._pool = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="jobstatus-read")
        self.revision = await self.read(self._current_revision)
        self._loop = asyncio.get_running_loop()
        if not self.is_sqlite:
            self._listener = Listener(self.url, self._sender, self._remote_commit)
            self._listener.start()
        self._idle = asyncio.Event()
        self._idle.set()
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobstatus-commit")

    async def close(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None
        if self._committer is not None:
            assert self._idle is not None
            await self._idle.wait()  # every write taken is committed and answered
            await asyncio.wrap_future(self._committer.submit(self._close_writer_conn))
            self._committer.shutdown(wait=True)
            self._committer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for engine in (self._writer, self._reader):
            if engine is not None:
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
        loop = asyncio.get_running_loop()
        write = _Write(fn=fn, loop=loop, future=loop.create_future(), key=key, alone=alone)
        self._pending.append(write)
        if not self._flushing:
            self._flushing = True
            assert self._idle is not None
            self._idle.clear()
            self._fill(loop)
        elif self._filling is not None and len(self._pending) >= self._expected:
            self._filling.cancel()
            self._filling = None
            self._fill_missed = False
            loop.call_soon(self._next_group)
        result: T = await write.future
        return result

    # --- groups: formed on the event loop, committed one at a time --------------------
    #
    # Writes wait on the loop for their group (`_fill`); one group at a time goes to the
    # commit thread, in revision order, and the next forms while it commits: from the
    # writes that arrive meanwhile and those its answers bring back. The commit thread
    # gets one hand-off per group, not one per write.
    #
    # SQLite: a group's statements take tens of microseconds each against SQLite's page
    # cache: they run on the event loop in one go, with no hand-off to a thread and back
    # per statement (each a GIL round trip against a busy loop). Only the COMMIT, which
    # waits for the disk, goes to the commit thread.
    #
    # PostgreSQL: every statement is a round trip, so the whole transaction runs in the
    # commit thread (`_commit_whole`), in two round trips (see `_run_group`).

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
            assert self._idle is not None
            self._idle.set()
            return
        assert self._committer is not None and self._sql is not None
        if pending[0].alone:
            group = [pending.pop(0)]
            self._committer.submit(self._commit_apart, group)
            return
        size = next((i for i, write in enumerate(pending) if write.alone), len(pending))
        size = min(size, MAX_GROUP)
        group = pending[:size]
        del pending[:size]
        if not self.is_sqlite:
            known = None
            if self.known is not None:
                keys = [write.key for write in group]
                if None not in keys:
                    known = self.known(keys)  # type: ignore[arg-type]
            self._committer.submit(self._commit_whole, group, known)
            return
        cur = None
        try:
            conn = self._held_connection()
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            cur = dbapi.cursor()
            # Another process holding SQLite's write lock (`jobstatus keys`, a
            # migration) must not stall the loop: the group then waits in the thread.
            cur.execute("PRAGMA busy_timeout=0")
            try:
                cur.execute("BEGIN IMMEDIATE")
            finally:
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            try:
                tx = self._run_group(conn, group, self._sql, cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        except Exception:
            # Busy, lost, or a statement refused: the commit thread runs the group again
            # with `_commit`'s handling of each (wait, UNAVAILABLE, one by one). The cursor
            # is closed first, here: freed later on the loop, it would wait for the
            # connection's mutex while the commit thread holds it in a busy BEGIN.
            if cur is not None:
                cur.close()
            self._committer.submit(self._commit_apart, group)
            return
        self._committer.submit(self._commit_group, group, tx, cur)

    def _commit_group(self, group: list[_Write], tx: Tx, cur: Any) -> None:
        """In the commit thread: COMMIT the group the loop ran, then answer it."""
        began = time.monotonic()
        try:
            cur.execute("COMMIT")
        except Exception as error:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            self._release_connection()
            self._lost(group, error)
            self._answer(group, None, None)
            return
        for name in tx.kinds:
            WRITES.labels(name).inc()
        took = time.monotonic() - began
        self._answer(group, tx.revision if tx.changed else None, tx.changes, took)

    def _commit_apart(self, group: list[_Write]) -> None:
        """In the commit thread: the group in a transaction of its own (`_commit`); then
        the next group."""
        self._commit(group)
        group[0].loop.call_soon_threadsafe(self._next_group)

    def _commit_whole(self, group: list[_Write], known: Known | None) -> None:
        """In the commit thread (PostgreSQL): the group's transaction (`_commit`, which
        answers it); then, on the loop, the next group."""
        began = time.monotonic()
        self._commit(group, known=known)
        took = time.monotonic() - began
        loop = group[0].loop
        loop.call_soon_threadsafe(self._committed, loop, len(group), took)

    def _answer(
        self,
        group: list[_Write],
        revision: int | None,
        changes: list[Change] | None,
        took: float = 0.0,
    ) -> None:
        """Answer the group on the loop (`took`: its COMMIT's seconds), then go on."""
        loop = group[0].loop

        def answer() -> None:
            self._deliver(group, revision, changes)
            self._committed(loop, len(group), took)

        loop.call_soon_threadsafe(answer)

    def _committed(self, loop: asyncio.AbstractEventLoop, size: int, took: float) -> None:
        """On the loop, once a group of `size` writes is answered (its commit took `took`
        seconds): the next group, filled as `_fill` says."""
        self._expected = size + len(self._pending)
        self._fill_wait = _fill_wait(self._fill_missed, took)
        self._answered_at = loop.time()
        if self._pending:
            self._fill(loop)
        else:
            self._next_group()

    def _commit(self, group: list[_Write], again: bool = True, known: Known | None = None) -> None:
        assert self._writer is not None and self._sql is not None
        sql = self._sql
        kept = False
        self._commit_sent = False
        try:
            held = self._writer_conn
            conn = self._held_connection()
            kept = conn is held
            try:
                with conn.begin():
                    tx = self._run_group(conn, group, sql, known=known)
                    self._commit_sent = True  # SQLite: what fails from here failed in COMMIT
            except DRIVER_LOST:
                conn.invalidate()
                raise
        except LOST as error:
            self._release_connection()
            if kept and not self._commit_sent and again and not self.is_sqlite:
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
            self._resolve(group, None)
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
            self._resolve(group, None)
            return
        for name in tx.kinds:
            WRITES.labels(name).inc()
        self._resolve(group, tx.revision if tx.changed else None, tx.changes)

    @staticmethod
    def _lost(group: list[_Write], error: Exception) -> None:
        """Fail every write of the group: the database did not take it."""
        log.warning("the database did not take a write: %s", error)
        lost = Unavailable("the database did not take the write", reason="STORAGE_UNAVAILABLE")
        for write in group:
            write.result, write.error = None, lost

    def _held_connection(self) -> Connection:
        """The writer's connection, kept from group to group: no pool checkout, ping
        and reset per commit. A lost one is dropped and the next group connects anew."""
        conn = self._writer_conn
        now = time.monotonic()
        if conn is not None and now - self._writer_used > WRITER_IDLE:
            # Idle for a while: back to the pool, whose checkout pings it first.
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if conn is None or conn.closed or conn.invalidated:
            assert self._writer is not None
            conn = self._writer_conn = self._writer.connect()
        self._writer_used = now
        return conn

    def _close_writer_conn(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _release_connection(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def _run_group(
        self,
        conn: Connection,
        group: list[_Write],
        sql: HotSql,
        cur: Any = None,
        known: Known | None = None,
    ) -> Tx:
        """The group's writes in the open transaction, on the driver's own cursor (on
        PostgreSQL in pipeline mode: only a read waits for its answer)."""
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        if cur is None:
            cur = dbapi.cursor()
        if known is not None and self._guessing:
            guessed = self._guess(conn, group, sql, cur, known)
            if guessed is not None:
                return guessed
        keys = list(dict.fromkeys(write.key for write in group if write.key is not None))
        with contextlib.nullcontext() if self.is_sqlite else dbapi.pipeline():
            sql.lock_revision.execute(cur)
            if keys:
                # The jobs the group will load, in one statement (in the pipeline, sent
                # with the lock: one round trip for both).
                prefetch = dbapi.cursor()
                prefetch.execute(*sql.load_many(keys))
            row = cur.fetchone()
            assert row is not None, "the revision counter row is missing"
            tx = Tx(conn, int(row[0]), datetime.now(UTC), sql, cur)
            if known is not None and tx.revision == known[0]:
                self._guessing = True  # the view has caught up with the other replicas
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
                if self.is_sqlite:
                    sql.set_revision.execute(cur, value=tx.revision)
                else:
                    # The NOTIFY is delivered at commit, to the other replicas' listeners.
                    cur.execute(
                        "UPDATE counter SET value = %s WHERE name = 'revision'"
                        " RETURNING pg_notify(%s, %s)",
                        (tx.revision, CHANNEL, payload(self._sender, tx.revision)),
                    )
            if not self.is_sqlite:
                # The COMMIT goes in the pipeline too: the group's statements and its
                # COMMIT take one round trip. From here on a lost connection leaves the
                # outcome unknown (`_commit` runs nothing again).
                self._commit_sent = True
                cur.execute("COMMIT")
        WRITE_GROUPS.inc()
        WRITE_GROUP_WRITES.inc(len(group))
        return tx

    def _guess(
        self, conn: Connection, group: list[_Write], sql: HotSql, cur: Any, known: Known
    ) -> Tx | None:
        """PostgreSQL, in one round trip: the group run against the jobs as this process
        knows them (`known`, the view's), then sent whole: the counter bumped only from
        the revision they are current at, the changes, and the COMMIT. None (nothing
        committed): the group needs a read the view cannot answer, changes nothing, or
        another replica committed since; it then runs the usual way (`_run_group`)."""
        revision, loaded = known
        tx = Tx(conn, revision, datetime.now(UTC), sql, cur, loaded=dict(loaded), guess=True)
        for write in group:
            write.result, write.error = None, None
            try:
                write.result = write.fn(tx)
            except JobStatusError as error:
                write.error = error
            except Unknown:
                return None
        if not tx.changed:
            return None
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        try:
            with dbapi.pipeline():
                cur.execute(
                    PG_GUESSED_BUMP,
                    (tx.revision, revision, CHANNEL, payload(self._sender, tx.revision)),
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

    def _resolve(
        self, group: list[_Write], revision: int | None, changes: list[Change] | None = None
    ) -> None:
        loop = group[0].loop
        loop.call_soon_threadsafe(self._deliver, group, revision, changes)

    def _deliver(
        self, group: list[_Write], revision: int | None, changes: list[Change] | None
    ) -> None:
        if revision is not None and revision > self.revision:
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
        for write in group:
            if write.future.done():
                continue
            if write.error is not None:
                write.future.set_exception(write.error)
            else:
                write.future.set_result(write.result)

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
        assert self._reader is not None
        reader = self._reader

        def run() -> T:
            try:
                with reader.connect() as conn:
                    if isolation is not None:
                        conn.execution_options(isolation_level=isolation)
                    if single_statement:
                        conn.execution_options(single_statement=True)
                    with conn.begin():
                        return fn(conn)
            except LOST as error:
                log.warning("read failed: %s", error)
                raise Unavailable(
                    "the database did not answer", reason="STORAGE_UNAVAILABLE"
                ) from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    @staticmethod
    def _current_revision(conn: Connection) -> int:
        return int(
            conn.execute(select(COUNTER.c.value).where(COUNTER.c.name == "revision")).scalar_one()
        )

    async def get(self, kind: Kind[M], tenant: str, job_id: str) -> M | None:
        assert self._sql is not None
        load = self._sql.load

        def run(conn: Connection) -> bytes | None:
            data: bytes | None = load.run(
                conn, tenant=tenant, kind=kind.name, job_id=job_id
            ).scalar_one_or_none()
            return data

        data = await self.read(run, single_statement=True)
        return None if data is None else kind.message.FromString(data)

    async def page(
        self, kind: Kind[M], tenant: str, statuses: Sequence[int], after: int, limit: int
    ) -> list[tuple[int, M]]:
        """Up to `limit` jobs created after revision `after`, oldest first."""

        def run(conn: Connection) -> list[tuple[int, bytes]]:
            query = select(JOB.c.create_revision, JOB.c.data).where(
                JOB.c.tenant == tenant, JOB.c.kind == kind.name, JOB.c.create_revision > after
            )
            if statuses:
                query = query.where(JOB.c.status.in_(statuses))
            query = query.order_by(JOB.c.create_revision).limit(limit)
            return [(int(r), bytes(d)) for r, d in conn.execute(query)]

        return [(r, kind.message.FromString(d)) for r, d in await self.read(run)]

    async def due(self, now: float, limit: int = 500) -> list[tuple[str, str, str]]:
        """The jobs whose time-driven transition is due: (kind, tenant, job_id)."""

        def run(conn: Connection) -> list[tuple[str, str, str]]:
            query = (
                select(JOB.c.kind, JOB.c.tenant, JOB.c.job_id)
                .where(JOB.c.due_at <= now)
                .order_by(JOB.c.due_at)
                .limit(limit)
            )
            return [(str(k), str(t), str(j)) for k, t, j in conn.execute(query)]

        return await self.read(run)

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

        def run(conn: Connection) -> list[Change]:
            query = select(EVENT).where(EVENT.c.revision > after)
            if upper is not None:
                query = query.where(EVENT.c.revision <= upper)
            if kind is not None:
                query = query.where(EVENT.c.kind == kind)
            if tenant is not None:
                query = query.where(EVENT.c.tenant == tenant)
            if ids:
                query = query.where(EVENT.c.job_id.in_(ids))
            return [
                _change(row) for row in conn.execute(query.order_by(EVENT.c.revision).limit(limit))
            ]

        return await self.read(run)

    async def snapshot(
        self, kind: str, tenant: str, ids: Sequence[str], *, with_jobs: bool
    ) -> Snapshot:
        """The store's revision, the compaction point and (if asked) the matching jobs, at once."""

        def run(conn: Connection) -> Snapshot:
            counters: dict[str, int] = {
                str(name): int(value)
                for name, value in conn.execute(select(COUNTER.c.name, COUNTER.c.value))
            }
            jobs: list[Change] = []
            if with_jobs:
                query = select(
                    JOB.c.revision, JOB.c.tenant, JOB.c.kind, JOB.c.job_id, JOB.c.status, JOB.c.data
                ).where(JOB.c.tenant == tenant, JOB.c.kind == kind)
                if ids:
                    query = query.where(JOB.c.job_id.in_(ids))
                jobs = [_change(row) for row in conn.execute(query.order_by(JOB.c.create_revision))]
            return Snapshot(int(counters["revision"]), int(counters["compacted"]), jobs)

        return await self.read(run)

    async def history(
        self, kind: Kind[M], tenant: str, job_id: str, after: int, limit: int
    ) -> History:
        """Up to `limit` kept changes of one job after revision `after`, oldest first, with
        the compaction point and the job's first revision, read in one transaction."""

        def run(conn: Connection) -> History:
            compacted = int(
                conn.execute(
                    select(COUNTER.c.value).where(COUNTER.c.name == "compacted")
                ).scalar_one()
            )
            created = conn.execute(
                select(JOB.c.create_revision).where(
                    JOB.c.tenant == tenant, JOB.c.kind == kind.name, JOB.c.job_id == job_id
                )
            ).scalar_one_or_none()
            rows: list[tuple[int, float, bytes]] = []
            if created is not None:
                query = (
                    select(EVENT.c.revision, EVENT.c.created_at, EVENT.c.data)
                    .where(
                        EVENT.c.tenant == tenant,
                        EVENT.c.kind == kind.name,
                        EVENT.c.job_id == job_id,
                        EVENT.c.revision > after,
                    )
                    .order_by(EVENT.c.revision)
                    .limit(limit)
                )
                rows = [(int(r), float(c), bytes(d)) for r, c, d in conn.execute(query)]
            return History(compacted, None if created is None else int(created), rows)

        return await self.read(run)

    async def compacted(self) -> int:
        def run(conn: Connection) -> int:
            return int(
                conn.execute(
                    select(COUNTER.c.value).where(COUNTER.c.name == "compacted")
                ).scalar_one()
            )

        return await self.read(run)

    async def compact(self, keep_count: int, keep_age: float, batch: int = 5000) -> int:
        """Delete events beyond the kept window (the newest `keep_count`, younger than
        `keep_age` seconds); return the new compaction point. Runs in short batches
        that never touch the revision counter, so writers are not held up. On
        PostgreSQL one replica at a time compacts (the others skip), and the
        compaction point only moves forward."""
        cutoff = datetime.now(UTC).timestamp() - keep_age

        def cut_point(conn: Connection) -> tuple[int, int]:
            counters = {
                str(name): int(value)
                for name, value in conn.execute(select(COUNTER.c.name, COUNTER.c.value))
            }
            by_age = conn.execute(
                select(EVENT.c.revision)
                .where(EVENT.c.created_at < cutoff)
                .order_by(EVENT.c.revision.desc())
                .limit(1)
            ).scalar_one_or_none()
            cut = max(counters["revision"] - keep_count, int(by_age or 0))
            return cut, counters["compacted"]

        cut, compacted = await self.read(cut_point)
        while compacted < cut:
            step = min(cut, compacted + batch)

            def delete(conn: Connection, step: int = step) -> bool:
                if not self.is_sqlite:
                    locked = conn.execute(
                        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": COMPACT_LOCK}
                    ).scalar_one()
                    if not locked:
                        return False  # another replica is compacting
                conn.execute(EVENT.delete().where(EVENT.c.revision <= step))
                conn.execute(
                    update(COUNTER)
                    .where(COUNTER.c.name == "compacted", COUNTER.c.value < step)
                    .values(value=step)
                )
                return True

            if self.is_sqlite:
                done = await self.transact(
                    lambda tx, delete=delete: delete(tx.conn),  # type: ignore[misc]
                    alone=True,
                )
            else:
                # Its own short transaction: deleting old events takes no lock a writer needs.
                done = await self.read(delete, isolation="READ COMMITTED")
            if not done:
                return await self.compacted()
            compacted = step
        return compacted

    async def ping(self) -> None:
        """Raise Unavailable unless the database answers a query now.

        For SQLite the pooled connections keep their file open even after the
        file or its directory is gone, so the probe opens the file afresh,
        read-write and without creating it, as a new connection would.
        """
        if self.is_sqlite:
            await asyncio.to_thread(self._ping_sqlite)
            return
        await self.read(lambda conn: conn.execute(text("SELECT value FROM counter")).first())

    def _ping_sqlite(self) -> None:
        database = make_url(self.url).database or ""
        if not database or database == ":memory:":
            return
        uri = f"file:{quote(os.path.abspath(database))}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5)
            try:
                conn.execute("SELECT value FROM counter").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as error:
            log.debug("storage probe failed: %s", error)
            raise Unavailable("the database did not answer", reason="STORAGE_UNAVAILABLE") from None


@dataclass(slots=True)
class Change:
    """One committed change, as read from the event log."""

    revision: int
    tenant: str
    kind: str
    job_id: str
    status: int
    data: bytes
    cache: dict[Any, Any] = field(default_factory=dict)
    # The watch events built from this change, once for every stream (watch.py).
    events: dict[Any, Any] | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a watch starts from, read in one transaction."""

    revision: int  # the store's revision
    compacted: int  # every event after this one is kept
    jobs: list[Change]  # the current state of the matching jobs (empty unless asked)


@dataclass(frozen=True)
class History:
    """A page of one job's kept changes, read in one transaction."""

    compacted: int  # every event after this one is kept
    created: int | None  # the job's first revision; None: no such job
    changes: list[tuple[int, float, bytes]]  # (revision, commit time in POSIX seconds, job)


def _change(row: Any) -> Change:
    return Change(
        int(row.revision),
        str(row.tenant),
        str(row.kind),
        str(row.job_id),
        int(row.status),
        bytes(row.data),
    )
