"""The store's reads: a small thread pool with its own connections (WAL readers do not
wait for the writer; on PostgreSQL each read is one REPEATABLE READ snapshot), and the
queries run on it. Each query method returns the pool's future, which the store
awaits: a read takes one hand-off to a thread and back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine, bindparam, select

from jobstatus_server.contract.errors import Unavailable
from jobstatus_server.state.changes import Change, History, change_from_row
from jobstatus_server.state.engines import LOST, READERS
from jobstatus_server.state.sql import COUNTER, EVENT, JOB, Sql

log = logging.getLogger(__name__)

T = TypeVar("T")

# The retention policy's read (Readers.settled_before), on ix_job_settled.
SETTLED_BEFORE = (
    select(JOB.c.kind, JOB.c.tenant, JOB.c.job_id)
    .where(JOB.c.settled_at <= bindparam("cutoff"))
    .order_by(JOB.c.settled_at)
    .limit(bindparam("limit"))
)


class Readers:
    """The reader pool of one store and the queries it runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pool = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="jobstatus-read")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def read(
        self,
        fn: Callable[[Connection], T],
        *,
        isolation: str | None = None,
        single_statement: bool = False,
    ) -> asyncio.Future[T]:
        """Run `fn` in a transaction on a connection of the pool (on PostgreSQL
        REPEATABLE READ, one snapshot for all its statements, unless `isolation` says).
        A `single_statement` read on SQLite runs without BEGIN and COMMIT: one
        statement is its own snapshot."""
        reader = self.engine

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

        return asyncio.get_running_loop().run_in_executor(self.pool, run)

    def job_data(
        self, load: Sql, kind: str, tenant: str, job_id: str
    ) -> asyncio.Future[bytes | None]:
        """The stored bytes of one job (`load`: the point read's statement)."""

        def run(conn: Connection) -> bytes | None:
            data: bytes | None = load.run(
                conn, tenant=tenant, kind=kind, job_id=job_id
            ).scalar_one_or_none()
            return data

        return self.read(run, single_statement=True)

    def page(
        self, kind: str, tenant: str, statuses: Sequence[int], after: int, limit: int
    ) -> asyncio.Future[list[tuple[int, bytes]]]:
        """Up to `limit` jobs created after revision `after`, oldest first."""

        def run(conn: Connection) -> list[tuple[int, bytes]]:
            query = select(JOB.c.create_revision, JOB.c.data).where(
                JOB.c.tenant == tenant, JOB.c.kind == kind, JOB.c.create_revision > after
            )
            if statuses:
                query = query.where(JOB.c.status.in_(statuses))
            query = query.order_by(JOB.c.create_revision).limit(limit)
            return [(int(r), bytes(d)) for r, d in conn.execute(query)]

        return self.read(run)

    def due(self, now: float, limit: int) -> asyncio.Future[list[tuple[str, str, str]]]:
        """The jobs whose time-driven transition is due: (kind, tenant, job_id)."""

        def run(conn: Connection) -> list[tuple[str, str, str]]:
            query = (
                select(JOB.c.kind, JOB.c.tenant, JOB.c.job_id)
                .where(JOB.c.due_at <= now)
                .order_by(JOB.c.due_at)
                .limit(limit)
            )
            return [(str(k), str(t), str(j)) for k, t, j in conn.execute(query)]

        return self.read(run)

    def settled_before(
        self, cutoff: float, limit: int
    ) -> asyncio.Future[list[tuple[str, str, str]]]:
        """The jobs settled with no change since `cutoff` (POSIX seconds), longest settled
        first: (kind, tenant, job_id). Read through ix_job_settled."""

        def run(conn: Connection) -> list[tuple[str, str, str]]:
            rows = conn.execute(SETTLED_BEFORE, {"cutoff": cutoff, "limit": limit})
            return [(str(k), str(t), str(j)) for k, t, j in rows]

        return self.read(run)

    def events_after(
        self,
        after: int,
        limit: int,
        upper: int | None,
        kind: str | None,
        tenant: str | None,
        ids: Sequence[str],
    ) -> asyncio.Future[list[Change]]:
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
                change_from_row(row)
                for row in conn.execute(query.order_by(EVENT.c.revision).limit(limit))
            ]

        return self.read(run)

    def history(
        self, kind: str, tenant: str, job_id: str, after: int, limit: int
    ) -> asyncio.Future[History]:
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
                    JOB.c.tenant == tenant, JOB.c.kind == kind, JOB.c.job_id == job_id
                )
            ).scalar_one_or_none()
            rows: list[tuple[int, float, bytes]] = []
            if created is not None:
                query = (
                    select(EVENT.c.revision, EVENT.c.created_at, EVENT.c.data)
                    .where(
                        EVENT.c.tenant == tenant,
                        EVENT.c.kind == kind,
                        EVENT.c.job_id == job_id,
                        # from its creation: not a deleted job's of the same id (its DELETED)
                        EVENT.c.revision > max(after, int(created) - 1),
                    )
                    .order_by(EVENT.c.revision)
                    .limit(limit)
                )
                rows = [(int(r), float(c), bytes(d)) for r, c, d in conn.execute(query)]
            return History(compacted, None if created is None else int(created), rows)

        return self.read(run)

    def counter(self, name: str) -> asyncio.Future[int]:
        """The value of one row of the counter table (`revision` or `compacted`)."""

        def run(conn: Connection) -> int:
            return int(
                conn.execute(select(COUNTER.c.value).where(COUNTER.c.name == name)).scalar_one()
            )

        return self.read(run)
