"""No statement on a path that scales with traffic reads a growing table whole, by the
database's own plan, on SQLite and PostgreSQL.

The real store and use cases run every such path (`PATHS`: creates, updates, Gets,
list pages, history pages, the watch's snapshot and catch-up reads, time-driven
transitions, compaction by count and by age, the retention policy) on a database
filled with jobs and events, while tests/plans.py records every statement they send;
each distinct statement is then planned by the database itself (SQLite as the server
runs it, without statistics, and again after ANALYZE; PostgreSQL after ANALYZE), and
none may scan a table of GROWING or search one bounded by tenant and kind alone. A
statement added later is checked by the path that sends it; a new path is one more
function under `@path`. A statement that rightly reads a growing table whole goes in
ALLOWED with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlmodel import SQLModel

from jobstatus.v1 import catalog_import_pb2 as ci
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import CATALOG_IMPORT, MAP_IMPORT, Kind
from jobstatus_server.state import models  # noqa: F401  (registers the tables)
from jobstatus_server.state.store import Store
from jobstatus_server.usecases.jobs import Core
from jobstatus_server.usecases.retention import Retention
from tests.conftest import Databases
from tests.plans import Recorder, Statement, plan, table_reads

# The tables that grow with the jobs a store has seen (and their columns).
GROWING = {
    name: frozenset(SQLModel.metadata.tables[name].columns.keys()) for name in ("job", "event")
}

# Statements that read a growing table whole by design, by a pattern of their shape
# (tests/plans.py `shape`), with the reason.
ALLOWED: dict[str, str] = {
    r"^SELECT job\.revision, job\.tenant, job\.kind, job\.job_id, job\.status, job\.data"
    r" FROM job WHERE job\.tenant = \? AND job\.kind = \? ORDER BY job\.job_id"
    r" LIMIT \?( OFFSET \?)?$": (
        "the first page of a watch's initial state (state/snapshot.py): the first jobs of"
        " a tenant's kind in the primary key's order, as many as the LIMIT"
    ),
}

TENANT, OTHER = "default", "other"
FILL = 6_000  # jobs per (tenant, kind) of the fill with their history
EVENTS_PER_JOB = 2
EVENTS = 3 * FILL * EVENTS_PER_JOB  # the fill's events, the oldest 60 hours old, evenly
HOUR = 3600.0
EXPIRED = mi.MAP_IMPORT_STATUS_EXPIRED
# Settled map imports of one more tenant, with no history, so the job table has the size
# at which PostgreSQL's planner reads a few rows by index rather than all by a scan (a
# join of a group's 100 keys, say); made by the database itself, in one statement.
BULK_JOBS = 200_000
BULK = sa.text(
    "INSERT INTO job (tenant, kind, job_id, status, revision, create_revision, data)"
    " WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
    f" SELECT 'bulk', '{MAP_IMPORT.name}', 'bulk-' || i, {EXPIRED}, 0, 0, :data FROM n"
)


@dataclass
class Run:
    """What a path runs against: the store, the use cases, and jobs of the fill."""

    store: Store
    core: Core
    filled: list[str]  # ids of filled map imports of TENANT, in progress
    due: list[str]  # ids of filled map imports of TENANT whose expiry has passed
    events: int  # the number of events in the filled log


Path = Callable[[Run], Awaitable[object]]
PATHS: dict[str, Path] = {}


def path(fn: Path) -> Path:
    """Register a path the test runs and records (in the order of this module)."""
    PATHS[fn.__name__] = fn
    return fn


def _map(job_id: str, status: int, progress: int = 0) -> mi.MapImport:
    job = mi.MapImport(import_request_id=job_id, status=status)  # type: ignore[arg-type]
    job.meta_data.progress = progress
    return job


def _progress(job_id: str, progress: int) -> tuple[mi.MapImport, FieldMask]:
    job = _map(job_id, mi.MAP_IMPORT_STATUS_IN_PROGRESS, progress)
    return job, FieldMask(paths=["status", "meta_data.progress"])


@path
async def creates(run: Run) -> object:
    new = [_map(f"new-{n}", mi.MAP_IMPORT_STATUS_START) for n in range(40)]
    return await asyncio.gather(*(run.core.create(MAP_IMPORT, TENANT, "", job) for job in new))


@path
async def creates_with_request_id(run: Run) -> object:
    job = _map("by-request", mi.MAP_IMPORT_STATUS_START)
    first = await run.core.create(MAP_IMPORT, TENANT, "request-1", job)
    again = await run.core.create(MAP_IMPORT, TENANT, "request-1", job)
    assert again == first
    return first


@path
async def creates_a_rule_checks_against_running_jobs(run: Run) -> object:
    job = ci.CatalogImport(
        status=ci.CATALOG_IMPORT_STATUS_WAITING, type=ci.CATALOG_IMPORT_TYPE_PRODUCTS
    )
    return await run.core.create(CATALOG_IMPORT, TENANT, "", job)


@path
async def updates(run: Run) -> object:
    """A group of updates of filled jobs (read ahead together) and of new ones."""
    ids = run.filled[:64] + [f"new-{n}" for n in range(40)]
    return await asyncio.gather(
        *(run.core.update(MAP_IMPORT, TENANT, *_progress(job_id, 50), 0) for job_id in ids)
    )


@path
async def updates_one_at_a_time(run: Run) -> object:
    for job_id in run.filled[100:103]:
        await run.core.update(MAP_IMPORT, TENANT, *_progress(job_id, 60), 0)
    return None


@path
async def updates_from_what_the_process_knows(run: Run) -> object:
    """PostgreSQL: a group whose jobs the process knows (the view's state) is sent whole
    from that state (pg_writer.py); SQLite's writer reads them as usual."""
    known: dict[tuple[str, str, str], bytes] = {}
    for job_id in run.filled[300:304]:
        job = await run.store.get(MAP_IMPORT, TENANT, job_id)
        assert job is not None
        known[(TENANT, MAP_IMPORT.name, job_id)] = job.SerializeToString()
    state = (run.store.revision, known)
    run.store.known = lambda keys: state if all(key in known for key in keys) else None
    try:
        return await asyncio.gather(
            *(run.core.update(MAP_IMPORT, TENANT, *_progress(key[2], 70), 0) for key in known)
        )
    finally:
        run.store.known = None


@path
async def gets(run: Run) -> object:
    for job_id in (run.filled[200], "new-1", "missing"):
        await run.store.get(MAP_IMPORT, TENANT, job_id)
    return None


@path
async def list_pages(run: Run) -> object:
    active = [mi.MAP_IMPORT_STATUS_IN_PROGRESS, mi.MAP_IMPORT_STATUS_PENDING]
    for statuses in ([], [mi.MAP_IMPORT_STATUS_DONE], active):
        _, token = await run.core.list(MAP_IMPORT, TENANT, 50, "", statuses)
        assert token, "a filled store has a next page"
        await run.core.list(MAP_IMPORT, TENANT, 50, token, statuses)
    return None


@path
async def history_pages(run: Run) -> object:
    first = await run.store.history(MAP_IMPORT, TENANT, run.filled[0], 0, 1)
    return await run.store.history(MAP_IMPORT, TENANT, run.filled[0], first.changes[0][0], 100)


@path
async def watch_initial_state_pages(run: Run) -> object:
    """A watch's initial state in pages (state/snapshot.py), with the changes of the
    earlier pages' jobs between pages; the position a resume checks; named jobs."""
    await run.store.position()
    named = run.store.initial_state(MAP_IMPORT.name, TENANT, run.filled[:3])
    await named.first()
    state = run.store.initial_state(MAP_IMPORT.name, TENANT, [])
    await state.first()
    pages = 0
    async with contextlib.aclosing(state.batches()) as batches:
        async for _ in batches:
            pages += 1
            if pages == 1:  # a change of a job of the first page, while the page is sent
                await run.core.update(MAP_IMPORT, TENANT, *_progress(run.filled[0], 80), 0)
            if pages > 6:
                break
    return pages


@path
async def watch_catch_up(run: Run) -> object:
    """The hub's tail of the log, and a stream's catch-up reads (by kind and tenant, and
    by job ids), from a revision deep in the log."""
    after = run.events // 2
    await run.store.events_after(after, 256)
    await run.store.events_after(after, 256, upper=after + 1000)
    await run.store.events_after(
        after, 256, upper=after + 1000, kind=MAP_IMPORT.name, tenant=TENANT
    )
    await run.store.events_after(
        after, 256, upper=None, kind=MAP_IMPORT.name, tenant=TENANT, ids=run.filled[:3]
    )
    return await run.store.compacted()


@path
async def time_driven_transitions(run: Run) -> object:
    moved = await run.core.expire_due()
    assert moved == len(run.due)
    return moved


@path
async def compaction_by_count(run: Run) -> object:
    keep = run.store.revision - 300
    compacted = await run.store.compact(keep_count=keep, keep_age=1000 * HOUR, batch=100)
    assert compacted == 300
    return compacted


@path
async def compaction_by_age(run: Run) -> object:
    compacted = await run.store.compact(keep_count=10**9, keep_age=58 * HOUR, batch=100)
    assert 300 < compacted < EVENTS // 20  # the fill's events of 2 of its 60 hours
    return compacted


@path
async def retention(run: Run) -> object:
    """The retention policy with an age of 0: the jobs the paths above settled (the due
    ones, expired) are found by when they settled, and deleted with their events."""
    deleted = await Retention(run.store, age=0.0).delete_expired()
    assert deleted == len(run.due)
    return deleted


def _fill(url: str) -> tuple[list[str], list[str], int]:
    """Jobs of two tenants' map imports and one tenant's catalog imports, most settled
    as in a store that has run for a while, with their events, and BULK_JOBS more of a
    third tenant: the filled map imports of TENANT in progress, the due ones, and the
    number of events."""
    now = time.time()
    revision = itertools.count(1)
    jobs: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    filled: list[str] = []
    due: list[str] = []

    def add(tenant: str, kind: Kind[Any], job: Message, due_at: float | None) -> None:
        job_id = kind.job_id(job)
        status = kind.status_of(job)
        first = 0
        for _ in range(EVENTS_PER_JOB):
            rev = next(revision)
            first = first or rev
            setattr(job, "revision", rev)  # noqa: B010
            data = job.SerializeToString()
            created_at = now - 60 * HOUR + rev * 60 * HOUR / EVENTS
            events.append(
                dict(
                    revision=rev,
                    tenant=tenant,
                    kind=kind.name,
                    job_id=job_id,
                    status=status,
                    created_at=created_at,
                    data=data,
                )
            )
        jobs.append(
            dict(
                tenant=tenant,
                kind=kind.name,
                job_id=job_id,
                status=status,
                revision=rev,
                create_revision=first,
                request_id=None,
                due_at=due_at,
                data=data,
            )
        )

    for tenant in (TENANT, OTHER):
        for n in range(FILL):
            job_id = f"fill-{n:06d}"
            if n % 10 == 0:
                if tenant == TENANT and n < 50:
                    due.append(job_id)
                    expires = now - HOUR
                else:
                    expires = now + 1000 * HOUR
                job = _map(job_id, mi.MAP_IMPORT_STATUS_DONE, 100)
                job.expire_time.FromSeconds(int(expires))
                add(tenant, MAP_IMPORT, job, expires)
            elif n % 10 == 1:
                if tenant == TENANT:
                    filled.append(job_id)
                add(tenant, MAP_IMPORT, _map(job_id, mi.MAP_IMPORT_STATUS_IN_PROGRESS, 10), None)
            else:
                add(tenant, MAP_IMPORT, _map(job_id, EXPIRED, 100), None)
    for n in range(FILL):
        status = (
            ci.CATALOG_IMPORT_STATUS_IN_PROGRESS
            if n % 1000 == 0
            else ci.CATALOG_IMPORT_STATUS_SUCCESS
        )
        imported = ci.CatalogImport(
            id=str(10**18 + n), status=status, type=ci.CATALOG_IMPORT_TYPE_PRODUCTS
        )
        add(TENANT, CATALOG_IMPORT, imported, None)
    last = len(events)
    engine = sa.create_engine(url)
    try:
        tables = SQLModel.metadata.tables
        with engine.begin() as conn:
            conn.execute(tables["job"].insert(), jobs)
            conn.execute(tables["event"].insert(), events)
            conn.execute(
                BULK, {"count": BULK_JOBS, "data": _map("bulk", EXPIRED).SerializeToString()}
            )
            conn.execute(
                tables["counter"].update().where(tables["counter"].c.name == "revision"),
                {"value": last},
            )
    finally:
        engine.dispose()
    return filled, due, last


def _analyze(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()


async def _record(url: str) -> Recorder:
    """Fill the store at `url`, then run every path of PATHS on it, recording what each
    sends."""
    recorder = Recorder()
    with recorder.installed():
        store = Store(url)
        await store.start()  # the schema
        await store.close()
        filled, due, events = await asyncio.to_thread(_fill, url)
        store = Store(url)
        await store.start()
        try:
            run = Run(store, Core(store), filled, due, events)
            recorder.active = True
            for name, fn in PATHS.items():
                recorder.path = name
                await fn(run)
            recorder.active = False
        finally:
            await store.close()
    return recorder


def _allowed(shape: str) -> bool:
    return any(re.search(pattern, shape) for pattern in ALLOWED)


@pytest.fixture(scope="module")
async def recorded(databases: Databases) -> tuple[str, Recorder]:
    url = databases.new("plans")
    recorder = await _record(url)
    return url, recorder


def _judge(url: str, recorder: Recorder) -> list[str]:
    faults = []
    for shape, (statement, paths) in recorder.statements().items():
        reads = table_reads(plan(url, statement), GROWING)
        if reads and not _allowed(shape):
            faults.append(f"{', '.join(paths)}: {shape}\n    " + "\n    ".join(reads))
    return faults


def test_every_path_was_recorded(recorded: tuple[str, Recorder]) -> None:
    """Each path sent statements (a path that sent none would check nothing)."""
    _, recorder = recorded
    sent = {name for name, _ in recorder.sent}
    assert sent == set(PATHS), f"paths that sent no statement: {set(PATHS) - sent}"
    shapes = recorder.statements()
    assert any(" FROM job " in shape for shape in shapes) and any(" event " in s for s in shapes)


def test_no_statement_reads_a_growing_table_whole(
    recorded: tuple[str, Recorder], backend: str
) -> None:
    """By the database's own plan, no statement scans job or event, or searches them by
    tenant and kind alone: on SQLite without statistics (as the server runs) and with
    them, on PostgreSQL with them (autovacuum keeps them)."""
    url, recorder = recorded
    faults = _judge(url, recorder) if backend == "sqlite" else []
    _analyze(url)
    faults += [f"(with statistics) {fault}" for fault in _judge(url, recorder)]
    assert not faults, "statements that read a growing table whole:\n" + "\n".join(faults)


def test_the_judge_catches_a_scan_and_a_partition_read(recorded: tuple[str, Recorder]) -> None:
    """The check itself: a statement that scans job, and one that reads a tenant's jobs
    of a kind whole, are caught; a point read is not."""
    url, _ = recorded
    tenant_kind = f"tenant = '{TENANT}' AND kind = '{MAP_IMPORT.name}'"
    scan = Statement("SELECT data FROM job WHERE status = 4")
    partition = Statement(f"SELECT data FROM job WHERE {tenant_kind}")
    point = Statement(f"SELECT data FROM job WHERE {tenant_kind} AND job_id = 'fill-000001'")
    assert table_reads(plan(url, scan), GROWING)
    assert table_reads(plan(url, partition), GROWING)
    assert not table_reads(plan(url, point), GROWING)
