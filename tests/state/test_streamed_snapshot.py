"""A watch's initial state streamed in pages (state/snapshot.py), in process on a real
store, SQLite and PostgreSQL: changes racing the pages are neither lost nor sent
twice, SYNCED R means the store's state at R, other tenants and kinds never appear,
a stalled client costs one page and is cut off with resume revision 0, a watch waiting
for its turn gets heartbeats at its resume point, and the page and catch-up queries
use the job table's key and the event log's (kind, revision)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Connection, select

from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.errors import ResourceExhausted
from jobstatus_server.contract.kinds import DELIVERY, MAP_IMPORT
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from jobstatus_server.state.renderings import Renderings, WatchForm
from jobstatus_server.state.snapshot import PAGE, catch_up_query, page_query
from jobstatus_server.state.sql import EVENT
from jobstatus_server.state.store import Store
from jobstatus_server.state.watch import Hub, WatchSettings
from tests.bigstore import map_job, put_many
from tests.conftest import Databases
from tests.streams import Reader

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
NAMES: dict[int, str] = {STATE: "STATE", SYNCED: "SYNCED", CHANGE: "CHANGE", HEARTBEAT: "HEARTBEAT"}
OTHER_TENANT = "other"
WAIT = 30.0

RACE = (
    "changes committed while the initial state is sent are neither lost nor sent twice, "
    "and after SYNCED R the client's view is the store's state at R"
)
ISOLATED = "a watch's initial state holds only its tenant's jobs of its kind (and its ids)"
STALL = "a client that stops reading its initial state costs one page, then is cut off"
TURN = "a watch waiting for its initial state's turn gets heartbeats at its resume point"


@dataclass(frozen=True)
class Event:
    type: int
    revision: int
    job_id: str


class Recorded:
    """Frames each event as (type, revision, job id), so the test reads them back."""

    form = WatchForm.GRPC

    def job_event(self, event_type: int, revision: int, renderings: Renderings) -> bytes:
        job_id = renderings.message(MAP_IMPORT).import_request_id
        return f"{event_type} {revision} {job_id}".encode()

    def marker(self, event_type: int, revision: int) -> bytes:
        return f"{event_type} {revision} -".encode()


def parsed(frame: bytes) -> Event:
    kind, revision, job_id = frame.decode().split(" ")
    return Event(int(kind), int(revision), job_id)


def show(item: Event | BaseException | None) -> str:
    if isinstance(item, Event):
        return f"{NAMES[item.type]}@{item.revision}:{item.job_id}"
    return f"end {item!r}"


@dataclass
class Watching:
    """One hub watch, its events piped into a queue and read with deadlines."""

    task: asyncio.Task[None]
    queue: asyncio.Queue[Event | BaseException | None] = field(default_factory=asyncio.Queue)
    reader: Reader[Event | BaseException | None] = field(init=False)

    def __post_init__(self) -> None:
        self.reader = Reader(self.queue, show)

    async def until(self, done: Any, expect: str, why: str) -> list[Event]:
        taken = await self.reader.take_until(
            lambda item: not isinstance(item, Event) or done(item), WAIT, expect, why
        )
        assert isinstance(taken[-1], Event), f"{why}: the stream ended: {self.reader.saw()}"
        return [item for item in taken if isinstance(item, Event)]


def watch(
    hub: Hub,
    ids: Sequence[str] = (),
    *,
    start: int = 0,
    settle: bool = False,
    tenant: str = DEFAULT_TENANT,
    pace: int = 0,
    stop_after: int | None = None,
    held: asyncio.Event | None = None,
    order: list[str] | None = None,
    name: str = "",
) -> Watching:
    """Start a watch. `pace`: every `pace` events its client yields to the loop (the
    writers race it); `stop_after`: its client takes that many events, then no more
    until `held` is set (the send waits, as on a full transport window); `order`: each
    event but a heartbeat, and the end, are logged there as `name`, in the order they
    come; `settle`: an until_settled watch."""
    queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
    sent = [0]
    waits = held or asyncio.Event()

    def put(item: Event | BaseException | None) -> None:
        queue.put_nowait(item)
        if order is not None and not (isinstance(item, Event) and item.type == HEARTBEAT):
            order.append(name)

    async def send(frame: bytes) -> None:
        if stop_after is not None and sent[0] >= stop_after:
            await waits.wait()
        sent[0] += 1
        if pace and sent[0] % pace == 0:
            await asyncio.sleep(0.002)
        put(parsed(frame))

    async def run() -> None:
        """The watch's end, an error too, goes into the queue, where the test reads it:
        the task itself ends with no exception for nobody to retrieve."""
        try:
            await hub.watch(MAP_IMPORT, tenant, ids, start, settle, 0.5, send, Recorded())
        except asyncio.CancelledError as cancelled:
            put(cancelled)
            raise
        except Exception as error:
            put(error)
            return
        put(None)

    return Watching(asyncio.create_task(run()), queue)


@pytest.fixture
async def store(databases: Databases) -> AsyncIterator[Store]:
    opened = Store(databases.new())
    await opened.start()
    yield opened
    await opened.close()


@asynccontextmanager
async def started(store: Store, **settings: Any) -> AsyncIterator[Hub]:
    hub = Hub(store, WatchSettings(poll_interval=0.05, min_heartbeat=0.2, **settings))
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


@pytest.fixture
async def hub(store: Store) -> AsyncIterator[Hub]:
    async with started(store) as running:
        yield running


async def last_changes(store: Store, upto: int) -> dict[str, int]:
    """The store's state at revision `upto`, from the event log: each default-tenant map
    import's last revision up to it."""

    def run(conn: Connection) -> dict[str, int]:
        query = select(EVENT.c.job_id, EVENT.c.revision).where(
            EVENT.c.tenant == DEFAULT_TENANT,
            EVENT.c.kind == MAP_IMPORT.name,
            EVENT.c.revision <= upto,
        )
        last: dict[str, int] = {}
        for job_id, revision in conn.execute(query.order_by(EVENT.c.revision)):
            last[str(job_id)] = int(revision)
        return last

    return await store.read(run)


async def owners(store: Store, revisions: Sequence[int]) -> set[tuple[str, str]]:
    """The (tenant, kind) of the changes at `revisions`."""
    owned: set[tuple[str, str]] = set()
    for start in range(0, len(revisions), 500):
        batch = revisions[start : start + 500]

        def run(conn: Connection, batch: Sequence[int] = batch) -> set[tuple[str, str]]:
            query = select(EVENT.c.tenant, EVENT.c.kind).where(EVENT.c.revision.in_(batch))
            return {(str(t), str(k)) for t, k in conn.execute(query)}

        owned |= await store.read(run)
    return owned


async def test_changes_racing_the_pages_are_neither_lost_nor_sent_twice(
    store: Store, hub: Hub
) -> None:
    count = 6 * PAGE + 17
    ids = [f"job-{n:05d}" for n in range(0, 2 * count, 2)]  # room for new ids between
    await put_many(store, MAP_IMPORT, DEFAULT_TENANT, [map_job(i) for i in ids], created=True)
    # The same ids in another tenant, and another kind in this tenant: never sent.
    await put_many(store, MAP_IMPORT, OTHER_TENANT, [map_job(i) for i in ids], created=True)
    deliveries = [dl.PreparedDelivery(catalog_id=i) for i in ids[:PAGE]]
    await put_many(store, DELIVERY, DEFAULT_TENANT, deliveries, created=True)
    began = store.revision
    stream = watch(hub, pace=16)
    rng = random.Random(19)
    synced = asyncio.Event()

    async def write() -> int:
        """Update and create jobs all over the key range until the stream is synced."""
        last, step = 0, 0
        made: set[tuple[str, str]] = set()
        while not synced.is_set() or step < 20:
            step += 1
            job_id = rng.choice(ids) if step % 3 else f"job-{rng.randrange(2 * count):05d}-new"
            tenant = OTHER_TENANT if step % 5 == 0 else DEFAULT_TENANT
            new = job_id.endswith("-new") and (tenant, job_id) not in made
            made.add((tenant, job_id))
            job = map_job(job_id, step % 100)
            (last,) = await put_many(store, MAP_IMPORT, tenant, [job], created=new)
            await asyncio.sleep(0.001)
        return last

    writing = asyncio.create_task(write())
    initial = await stream.until(lambda e: e.type == SYNCED, "SYNCED", RACE)
    synced.set()
    written = await writing
    follow = await stream.until(
        lambda e: e.type in (CHANGE, HEARTBEAT) and e.revision >= written,
        f"every change up to revision {written}",
        RACE,
    )
    stream.task.cancel()
    at = initial[-1].revision
    states = initial[:-1]
    assert at > began, f"{RACE}: no write raced the initial state (synced at {at})"
    assert all(e.type == STATE for e in states), f"{RACE}: {stream.reader.saw()}"
    sent = [e.revision for e in states] + [e.revision for e in follow if e.type == CHANGE]
    assert len(sent) == len(set(sent)), f"{RACE}: a change was sent twice"
    assert await owners(store, sent) == {(DEFAULT_TENANT, MAP_IMPORT.name)}, ISOLATED
    view: dict[str, int] = {}
    for event in states:
        assert view.get(event.job_id, 0) < event.revision, f"{RACE}: {event} out of order"
        view[event.job_id] = event.revision
    assert view == await last_changes(store, at), f"{RACE}: the view at SYNCED {at}"
    highest, caught_up = "", 0
    for event in states:
        caught_up += event.job_id < highest  # a change of an earlier page's job
        highest = max(highest, event.job_id)
    assert caught_up, f"{RACE}: no change of an earlier page's job raced the pages"
    after = [e.revision for e in follow if e.type == CHANGE]
    logged = await last_changes_between(store, at, written)
    assert after == logged, f"{RACE}: the changes after SYNCED {at}"


async def last_changes_between(store: Store, after: int, upto: int) -> list[int]:
    def run(conn: Connection) -> list[int]:
        query = select(EVENT.c.revision).where(
            EVENT.c.tenant == DEFAULT_TENANT,
            EVENT.c.kind == MAP_IMPORT.name,
            EVENT.c.revision > after,
            EVENT.c.revision <= upto,
        )
        return [int(r) for (r,) in conn.execute(query.order_by(EVENT.c.revision))]

    return await store.read(run)


async def test_the_initial_state_holds_only_the_tenants_jobs_of_its_kind_and_ids(
    store: Store, hub: Hub
) -> None:
    ids = [f"job-{n:05d}" for n in range(PAGE + 10)]
    mine = await put_many(
        store, MAP_IMPORT, DEFAULT_TENANT, [map_job(i) for i in ids], created=True
    )
    await put_many(store, MAP_IMPORT, OTHER_TENANT, [map_job(i) for i in ids], created=True)
    deliveries = [dl.PreparedDelivery(catalog_id=i) for i in ids]
    await put_many(store, DELIVERY, DEFAULT_TENANT, deliveries, created=True)
    every = watch(hub)
    states = (await every.until(lambda e: e.type == SYNCED, "SYNCED", ISOLATED))[:-1]
    assert [(e.job_id, e.revision) for e in states] == list(zip(ids, mine, strict=True)), (
        f"{ISOLATED}: {every.reader.saw()}"
    )
    named = [ids[3], ids[PAGE + 5], "job-missing"]
    some = watch(hub, named)
    states = (await some.until(lambda e: e.type == SYNCED, "SYNCED", ISOLATED))[:-1]
    assert sorted(e.job_id for e in states) == sorted(named[:2]), f"{ISOLATED}: {some.reader.saw()}"
    theirs = watch(hub, tenant=OTHER_TENANT, ids=[ids[0]])
    (state, synced) = await theirs.until(lambda e: e.type == SYNCED, "SYNCED", ISOLATED)
    assert state.revision not in mine and synced.type == SYNCED, ISOLATED
    for stream in (every, some, theirs):
        stream.task.cancel()


async def ended(stream: Watching, why: str) -> BaseException:
    """The error `stream` ends with (its events before it skipped)."""
    taken = await stream.reader.take_until(
        lambda item: not isinstance(item, Event), WAIT, "the end of the stream", why
    )
    error = taken[-1]
    assert isinstance(error, BaseException), f"{why}: ended with OK: {stream.reader.saw()}"
    with contextlib.suppress(BaseException):  # its task's end, taken from the queue above
        await stream.task
    return error


def cut_off_to_start_over(error: BaseException, why: str) -> None:
    assert isinstance(error, ResourceExhausted), f"{why}: ended with {error!r}"
    assert error.reason == "WATCHER_TOO_SLOW", f"{why}: {error}"
    # Before SYNCED the client has no consistent state: it reads the state again.
    assert error.metadata["resume_revision"] == "0", f"{why}: {error.metadata}"


async def test_a_client_that_stops_reading_costs_one_page_then_is_cut_off(
    store: Store,
) -> None:
    big = "x" * 4000
    ids = [f"job-{n:05d}" for n in range(16 * PAGE)]
    jobs = [map_job(job_id, footprint=big) for job_id in ids]
    await put_many(store, MAP_IMPORT, DEFAULT_TENANT, jobs, created=True)
    stored = sum(job.ByteSize() for job in jobs)
    async with started(store, buffer=8, snapshot_stall=3600.0) as hub:
        tracemalloc.start()
        try:
            stream = watch(hub, stop_after=PAGE + 10)
            got = await stream.until(
                lambda e: len(stream.reader.seen) > PAGE + 9, "the events it takes", STALL
            )
            assert all(e.type == STATE for e in got), STALL
            # The next send waits on the client; the hub reads nothing further meanwhile.
            for _ in range(20):
                await asyncio.sleep(0.01)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < stored / 4, (
            f"{STALL}: the server allocated up to {peak} bytes for a watch over "
            f"{stored} bytes of jobs, stalled after {PAGE + 10} of them"
        )
        # The hub's stall rule: more than `buffer` of its changes commit while it waits.
        updates = [map_job(job_id, 1) for job_id in ids[-9:]]
        await put_many(store, MAP_IMPORT, OTHER_TENANT, updates, created=True)  # not its own
        assert stream.queue.empty(), f"{STALL}: {stream.reader.saw()}"
        await put_many(store, MAP_IMPORT, DEFAULT_TENANT, updates, created=False)
        cut_off_to_start_over(await ended(stream, STALL), STALL)
        assert not hub.streams, f"{STALL}: the stream is left in the hub"


async def test_initial_states_take_turns_and_a_stalled_one_gives_up_its_turn(
    store: Store,
) -> None:
    """With one slot, a second watch waits until the first, whose client stopped
    reading, is cut off after `snapshot_stall` seconds; then it gets its state."""
    ids = [f"job-{n:05d}" for n in range(2 * PAGE)]
    await put_many(store, MAP_IMPORT, DEFAULT_TENANT, [map_job(i) for i in ids], created=True)
    order: list[str] = []
    async with started(store, snapshot_streams=1, snapshot_stall=0.5) as hub:
        first = watch(hub, stop_after=3, order=order, name="first")
        await first.until(lambda e: len(first.reader.seen) == 3, "3 events", STALL)
        second = watch(hub, order=order, name="second")
        cut_off_to_start_over(await ended(first, STALL), STALL)
        got = await second.until(lambda e: e.type == SYNCED, "SYNCED", STALL)
        states = [e.job_id for e in got if e.type == STATE]
        assert states == ids, f"{STALL}: {second.reader.saw()}"
        waited = "a watch waits for a slot while the stalled one holds it"
        assert order.index("second") > len(order) - order[::-1].index("first") - 1, (
            f"{waited}: {order[:10]}"
        )
        second.task.cancel()


async def test_a_watch_waiting_for_its_turn_gets_heartbeats_at_its_resume_point(
    store: Store,
) -> None:
    """With one slot held by a client that stopped reading, a watch from 0 gets heartbeats
    at revision 0 (it has no state yet) and an until_settled watch from R at R, nothing
    else; once the slot is free, each gets what it waited for."""
    ids = [f"job-{n:05d}" for n in range(2 * PAGE)]
    await put_many(store, MAP_IMPORT, DEFAULT_TENANT, [map_job(i) for i in ids], created=True)
    held = asyncio.Event()
    async with started(store, snapshot_streams=1, snapshot_stall=3600.0) as hub:
        at = hub.revision
        first = watch(hub, stop_after=3, held=held)
        await first.until(lambda e: len(first.reader.seen) == 3, "3 events", TURN)
        second = watch(hub)
        third = watch(hub, ids[:1], start=at, settle=True)
        for stream, revision in ((second, 0), (third, at)):
            beats = await stream.until(
                lambda e, s=stream: len(s.reader.seen) == 2, "two heartbeats", TURN
            )
            assert [(e.type, e.revision) for e in beats] == [(HEARTBEAT, revision)] * 2, (
                f"{TURN}: while another state holds the only slot, a watch from {revision} "
                f"got {stream.reader.saw()}"
            )
        held.set()  # the first client reads on: its state ends, and the slot passes on
        await first.until(lambda e: e.type == SYNCED, "SYNCED", TURN)
        got = await second.until(lambda e: e.type == SYNCED, "SYNCED", TURN)
        assert [e.job_id for e in got if e.type == STATE] == ids, f"{TURN}: {second.reader.saw()}"
        assert not {e.type for e in got} - {STATE, SYNCED, HEARTBEAT}, second.reader.saw()
        for stream in (first, second, third):
            stream.task.cancel()


async def test_the_page_and_catch_up_reads_use_an_index(store: Store) -> None:
    """The database's own plan, on tables filled enough for an index to pay off."""
    why = "the initial state's reads use the job table's key and the event log's index"
    ids = [f"job-{n:05d}" for n in range(4000)]
    for tenant in (DEFAULT_TENANT, OTHER_TENANT):
        await put_many(store, MAP_IMPORT, tenant, [map_job(i) for i in ids], created=True)
    queries = {
        "page": page_query(MAP_IMPORT.name, DEFAULT_TENANT, (), ids[100], PAGE),
        "first page": page_query(MAP_IMPORT.name, DEFAULT_TENANT, (), None, PAGE),
        "catch-up": catch_up_query(MAP_IMPORT.name, DEFAULT_TENANT, (), ids[100], 10, 400, 512),
    }

    def plans(conn: Connection) -> dict[str, str]:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("ANALYZE job")
            conn.exec_driver_sql("ANALYZE event")
        found = {}
        for name, query in queries.items():
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(explain + sql).all()
            found[name] = "\n".join(str(row[-1]) for row in rows)
        return found

    found = await store.read(plans, isolation="AUTOCOMMIT")
    for name, plan in found.items():
        assert "SCAN" not in plan.upper().replace("INDEX SCAN", ""), f"{why}: {name}: {plan}"
        assert "SORT" not in plan.upper() and "TEMP B-TREE" not in plan.upper(), (
            f"{why}: {name} sorts: {plan}"
        )


async def test_a_state_whose_changes_were_compacted_meanwhile_starts_over(
    store: Store, hub: Hub
) -> None:
    """The changes of the pages already sent are read from the event log: when they were
    compacted while a page was sent (a client that paused long, on a busy store), the
    watch ends with RESOURCE_EXHAUSTED and resume revision 0, not with a gap."""
    why = "an initial state never skips changes it can no longer read"
    ids = [f"job-{n:05d}" for n in range(2 * PAGE)]
    await put_many(store, MAP_IMPORT, DEFAULT_TENANT, [map_job(i) for i in ids], created=True)
    held = asyncio.Event()
    stream = watch(hub, stop_after=10, held=held)
    await stream.until(lambda e: len(stream.reader.seen) == 10, "10 events", why)
    for progress in range(1, 21):  # changes of a job of the page being sent
        await put_many(
            store, MAP_IMPORT, DEFAULT_TENANT, [map_job(ids[0], progress)], created=False
        )
    compacted = await store.compact(keep_count=5, keep_age=10**9)
    assert compacted > 2 * PAGE, f"{why}: compacted only to {compacted}"
    held.set()
    error = await ended(stream, why)
    cut_off_to_start_over(error, why)
    assert "fell behind the kept history" in str(error), f"{why}: {error}"
