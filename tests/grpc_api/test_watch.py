"""Watch streams against a real server: order, isolation, resume, limits, settling."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus.v1 import watch_pb2
from tests.conftest import Databases
from tests.serverproc import ServerProcess
from tests.streams import Reader

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS
Event = mi.WatchMapImportStatusResponse


def start_server(database_url: str, *args: str) -> ServerProcess:
    return ServerProcess(database_url, extra_args=list(args)).start()


@pytest.fixture(scope="module")
def watch_server(database_url: str) -> Iterator[ServerProcess]:
    proc = start_server(database_url, "--watch-buffer", "100000")
    yield proc
    proc.stop()


def show(item: Event | grpc.aio.AioRpcError | None) -> str:
    """An item of a piped stream, short: CHANGE@12, an error's code, or OK (its end)."""
    if item is None:
        return "end OK"
    if isinstance(item, grpc.aio.AioRpcError):
        return f"end {item.code().name}"
    name = watch_pb2.WatchEventType.Name(item.type).removeprefix("WATCH_EVENT_TYPE_")
    return f"{name}@{item.revision}"


WAIT = 15.0  # seconds a single awaited event may take on a loaded machine


@dataclass
class Piped:
    """A watch stream piped into a queue by a background task, read with deadlines."""

    call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event]
    queue: asyncio.Queue[Event | grpc.aio.AioRpcError | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    reader: Reader[Event | grpc.aio.AioRpcError | None] = field(init=False)

    def __post_init__(self) -> None:
        self.reader = Reader(self.queue, show)

    async def pump(self) -> None:
        try:
            async for event in self.call:
                await self.queue.put(event)
            await self.queue.put(None)
        except grpc.aio.AioRpcError as error:
            await self.queue.put(error)

    async def next(self, why: str, expect: str = "an event", wait: float = WAIT) -> Event:
        item = await self.reader.take(wait, expect, why)
        assert isinstance(item, Event), (
            f"{why}: expected {expect}, the stream ended: {self.reader.saw()}"
        )
        return item

    async def end(self, why: str, wait: float = WAIT) -> grpc.aio.AioRpcError | None:
        """Skip heartbeats; return the error the stream ended with (None: OK)."""
        taken = await self.reader.take_until(
            lambda item: not isinstance(item, Event),
            wait,
            "the end of the stream",
            why,
        )
        stray = [item for item in taken[:-1] if isinstance(item, Event) and item.type != HEARTBEAT]
        assert not stray, f"{why}: only heartbeats before the end, saw: {self.reader.saw()}"
        ended = taken[-1]
        assert not isinstance(ended, Event)
        return ended

    async def changes(self, count: int, why: str, wait: float = WAIT) -> list[Event]:
        """The next `count` CHANGE events (heartbeats skipped), all within `wait` s."""
        if count == 0:
            return []
        counted = [0]

        def done(item: Event | grpc.aio.AioRpcError | None) -> bool:
            if not isinstance(item, Event):
                return True  # the end: fails below
            counted[0] += item.type == CHANGE
            return counted[0] >= count

        taken = await self.reader.take_until(
            done,
            wait,
            f"{count} changes",
            why,
        )
        assert isinstance(taken[-1], Event), (
            f"{why}: expected {count} changes, the stream ended: {self.reader.saw()}"
        )
        return [i for i in taken if isinstance(i, Event) and i.type == CHANGE]

    async def changes_until_heartbeat(self, why: str, wait: float = WAIT) -> list[Event]:
        """The CHANGE events up to the first heartbeat: a heartbeat comes only when the
        stream has sent everything up to the hub's revision, so this is all there is."""
        taken = await self.reader.take_until(
            lambda item: not isinstance(item, Event) or item.type == HEARTBEAT,
            wait,
            "changes, then a heartbeat",
            why,
        )
        assert isinstance(taken[-1], Event), f"{why}: the stream ended: {self.reader.saw()}"
        others = [i for i in taken[:-1] if isinstance(i, Event) and i.type != CHANGE]
        assert not others, f"{why}: only changes before the heartbeat, saw: {self.reader.saw()}"
        return [i for i in taken if isinstance(i, Event) and i.type == CHANGE]


class Client:
    def __init__(self, address: str, options: list[tuple[str, int]] | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=options or [])
        self.maps = mi_grpc.MapImportServiceStub(self.channel)

    def watch(self, **request: object) -> Piped:
        piped = Piped(self.maps.WatchMapImportStatus(mi.WatchMapImportStatusRequest(**request)))  # type: ignore[arg-type]
        piped.task = asyncio.create_task(piped.pump())
        return piped

    async def create(self, job_id: str, **fields: object) -> mi.MapImport:
        response = await self.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id, **fields))  # type: ignore[arg-type]
        )
        return response.map_import

    async def progress(self, job_id: str, progress: int, **fields: object) -> mi.MapImport:
        job = mi.MapImport(
            import_request_id=job_id,
            status=IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=progress, **fields),  # type: ignore[arg-type]
        )
        return (
            await self.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job))
        ).map_import

    async def set_status(self, job_id: str, status: int) -> mi.MapImport:
        job = mi.MapImport(import_request_id=job_id, status=status)  # type: ignore[arg-type]
        return (
            await self.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job))
        ).map_import

    async def close(self) -> None:
        await self.channel.close(None)


@contextlib.asynccontextmanager
async def client(address: str, **kwargs: list[tuple[str, int]]) -> AsyncIterator[Client]:
    connected = Client(address, **kwargs)
    try:
        yield connected
    finally:
        await connected.close()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the status")


def open_streams(server: ServerProcess) -> int:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    match = re.search(r"^jobstatus_watch_streams (\S+)$", text, re.MULTILINE)
    assert match, "no jobstatus_watch_streams metric"
    return int(float(match.group(1)))


async def read(
    call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event], why: str
) -> Event:
    """The next event of a raw stream; fails on its end (an AioRpcError propagates)."""
    try:
        event = await asyncio.wait_for(call.read(), WAIT)
    except TimeoutError:
        raise AssertionError(f"{why}: no event and no end within {WAIT:g} s") from None
    assert isinstance(event, Event), f"{why}: the stream ended with OK: {event!r}"
    return event


async def eventually(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} never held in {within:g} s"
        await asyncio.sleep(0.05)


ORDER = "a watch gets every change once, in revision order"
STARTS = (
    "a watch from revision 0 sends every watched job's state, then SYNCED at the store's revision"
)
FROM_RING = "a watch resumed from revision R gets every change after R once (kept in memory)"
FROM_LOG = "a watch resumed from revision R gets every change after R once (from the event log)"
SETTLES = "an until_settled watch ends with OK right after the event that settles its jobs"
BEATS = "an idle watch's heartbeat carries the current revision"
COMPACTED = (
    "a start revision older than the kept history is refused with OUT_OF_RANGE "
    "naming the oldest kept revision"
)
CUT_OFF = "a slow watcher is cut off with RESOURCE_EXHAUSTED naming the last revision it received"
SHUTDOWN = "a shutdown ends a watch with UNAVAILABLE naming the last revision it received"


async def test_initial_state_then_synced_then_changes(
    watch_server: ServerProcess, uid: str
) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    async with client(watch_server.address) as c:
        created = {job.import_request_id: job for job in [await c.create(a), await c.create(b)]}
        other = await c.create(f"{uid}-other")  # not watched: only moves the store's revision
        stream = c.watch(import_request_ids=[a, b])
        states = [await stream.next(STARTS, "a STATE event") for _ in created]
        assert [e.type for e in states] == [STATE, STATE], f"{STARTS}: {stream.reader.saw()}"
        assert {e.map_import.import_request_id: e.map_import for e in states} == created, (
            f"{STARTS}: the states are not the jobs as created"
        )
        synced = await stream.next(STARTS, "SYNCED")
        assert synced.type == SYNCED, f"{STARTS}: {stream.reader.saw()}"
        assert synced.revision >= other.revision, (
            f"{STARTS}: SYNCED at {synced.revision}, the store was at {other.revision}"
        )
        updated = await c.progress(a, 10)
        change = await stream.next(ORDER, "the change after SYNCED")
        assert (change.type, change.revision, change.map_import) == (
            CHANGE,
            updated.revision,
            updated,
        ), f"{ORDER}: {stream.reader.saw()}"
        stream.call.cancel()


async def test_two_watchers_are_isolated(watch_server: ServerProcess, uid: str) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    why = "a watch of given jobs gets only their changes"
    async with client(watch_server.address) as c:
        await c.create(a)
        await c.create(b)
        watch_a = c.watch(import_request_ids=[a])
        watch_b = c.watch(import_request_ids=[b])
        for stream in (watch_a, watch_b):
            assert (await stream.next(STARTS)).type == STATE, f"{STARTS}: {stream.reader.saw()}"
            assert (await stream.next(STARTS)).type == SYNCED, f"{STARTS}: {stream.reader.saw()}"
        for progress in range(1, 6):
            await c.progress(a, progress)
        got_a = await watch_a.changes(5, ORDER)
        assert [e.map_import.meta_data.progress for e in got_a] == [1, 2, 3, 4, 5], (
            f"{ORDER}: {watch_a.reader.saw()}"
        )
        # B saw none of A's changes: its first change is its own.
        mine = await c.progress(b, 50)
        first_b = await watch_b.next(why, "its own change")
        assert (first_b.type, first_b.map_import.import_request_id) == (CHANGE, b), (
            f"{why}: {watch_b.reader.saw()}"
        )
        assert first_b.revision == mine.revision, f"{why}: {watch_b.reader.saw()}"
        assert watch_b.queue.empty(), f"{why}: more after its own change"
        watch_a.call.cancel()
        watch_b.call.cancel()


async def _write_two_jobs_with_noise(c: Client, uid: str, steps: int) -> list[mi.MapImport]:
    """Changes of two watched jobs, alternating, with changes of other jobs between;
    returns the watched jobs' changes in order (the creates first)."""
    jobs = [await c.create(f"{uid}-a"), await c.create(f"{uid}-b")]
    for step in range(1, steps + 1):
        jobs.append(await c.progress(f"{uid}-{'ab'[step % 2]}", step))
        await c.create(f"{uid}-noise-{step}")
    return jobs


async def test_resume_from_revision_yields_exactly_the_later_changes(
    watch_server: ServerProcess, uid: str
) -> None:
    """Changes written while this server runs are kept in memory (the ring)."""
    async with client(watch_server.address) as c:
        written = await _write_two_jobs_with_noise(c, uid, 8)
        ids = [f"{uid}-a", f"{uid}-b"]
        for start in (written[0].revision, written[1].revision, written[5].revision):
            stream = c.watch(
                import_request_ids=ids,
                start_revision=start,
                heartbeat_interval=duration_pb2.Duration(nanos=500_000_000),
            )
            # A heartbeat comes once everything up to the store's revision is sent.
            got = await stream.changes_until_heartbeat(FROM_RING)
            expected = [job for job in written if job.revision > start]
            assert [(e.revision, e.map_import) for e in got] == [
                (job.revision, job) for job in expected
            ], f"{FROM_RING} (R = {start}): got {[e.revision for e in got]}"
            stream.call.cancel()


async def test_resume_from_the_event_log_yields_exactly_the_later_changes(
    databases: Databases, uid: str
) -> None:
    """Changes from before a restart are read from the event log; a resume that spans
    the restart reads the log, then what the new process keeps in memory."""
    server = start_server(databases.new())
    try:
        async with client(server.address) as c:
            before = await _write_two_jobs_with_noise(c, uid, 6)
        await asyncio.to_thread(server.restart)
        async with client(server.address) as c:
            after = [await c.progress(f"{uid}-a", 50), await c.progress(f"{uid}-b", 60)]
            written = before + after
            starts = [before[0].revision, before[3].revision, before[-1].revision]
            for start in starts:
                stream = c.watch(
                    import_request_ids=[f"{uid}-a", f"{uid}-b"],
                    start_revision=start,
                    heartbeat_interval=duration_pb2.Duration(nanos=500_000_000),
                )
                got = await stream.changes_until_heartbeat(FROM_LOG)
                expected = [job for job in written if job.revision > start]
                assert [(e.revision, e.map_import) for e in got] == [
                    (job.revision, job) for job in expected
                ], f"{FROM_LOG} (R = {start}): got {[e.revision for e in got]}"
                stream.call.cancel()
    finally:
        server.stop()


async def test_watchers_that_lag_behind_concurrent_writers_get_every_change_in_order(
    watch_server: ServerProcess, uid: str
) -> None:
    """Concurrent writers commit in groups: a group with several changes for a stream
    makes it lag, and it reads on from the kept changes while new ones arrive."""
    writers, updates = 8, 30
    jobs = [f"{uid}-{n}" for n in range(writers)]
    async with client(watch_server.address) as c:
        for job in jobs:
            await c.create(job)
        streams = [c.watch(import_request_ids=jobs), c.watch(import_request_ids=jobs[:2])]
        for stream, count in zip(streams, (writers, 2), strict=True):
            for _ in range(count):
                assert (await stream.next(STARTS)).type == STATE, stream.reader.saw()
            assert (await stream.next(STARTS)).type == SYNCED, stream.reader.saw()

        async def write(job: str) -> list[int]:
            return [(await c.progress(job, n + 1)).revision for n in range(updates)]

        written = await asyncio.gather(*(write(job) for job in jobs))
        every = sorted(r for revisions in written for r in revisions)
        firsts = sorted(r for revisions in written[:2] for r in revisions)
        for stream, expected in zip(streams, (every, firsts), strict=True):
            got = [e.revision for e in await stream.changes(len(expected), ORDER, wait=60)]
            assert got == expected, f"{ORDER}: got {got}, acknowledged {expected}"
            stream.call.cancel()


async def test_concurrent_writers_and_watchers_see_every_change_once_in_order(
    watch_server: ServerProcess, uid: str
) -> None:
    writers, updates, watchers = 20, 200, 50
    jobs = [f"{uid}-{n}" for n in range(writers)]
    async with client(watch_server.address) as c:
        for job in jobs:
            await c.create(job)
        streams = [c.watch(import_request_ids=jobs, start_revision=0) for _ in range(watchers)]
        for stream in streams:
            for _ in jobs:
                assert (await stream.next(STARTS)).type == STATE, stream.reader.saw()
            assert (await stream.next(STARTS)).type == SYNCED, stream.reader.saw()

        async def write(job: str) -> list[int]:
            return [(await c.progress(job, n % 100 + 1)).revision for n in range(updates)]

        written = await asyncio.gather(*(write(job) for job in jobs))
        acknowledged = sorted(r for revisions in written for r in revisions)
        assert len(set(acknowledged)) == writers * updates, "two writes got one revision"
        for stream in streams:
            got = [e.revision for e in await stream.changes(writers * updates, ORDER, wait=120)]
            assert got == acknowledged, f"{ORDER}: a watcher got other revisions"
            stream.call.cancel()


async def test_until_settled_ends_with_ok(watch_server: ServerProcess, uid: str) -> None:
    async with client(watch_server.address) as c:
        await c.create(uid)
        stream = c.watch(import_request_ids=[uid], until_settled=True)
        assert (await stream.next(STARTS)).type == STATE, stream.reader.saw()
        assert (await stream.next(STARTS)).type == SYNCED, stream.reader.saw()
        progressed = await c.progress(uid, 5)
        # Not settled yet: the stream goes on, and sends the change that settles it.
        cancelled = await c.set_status(uid, mi.MAP_IMPORT_STATUS_CANCEL)
        got = [await stream.next(SETTLES, "the two changes") for _ in range(2)]
        assert [(e.type, e.revision) for e in got] == [
            (CHANGE, progressed.revision),
            (CHANGE, cancelled.revision),
        ], f"{SETTLES}: ended before the settling change: {stream.reader.saw()}"
        assert await stream.end(SETTLES) is None, f"{SETTLES}: {stream.reader.saw()}"
        assert await stream.call.code() == grpc.StatusCode.OK
        # Already settled: the stream ends right after the initial state.
        again = c.watch(import_request_ids=[uid], until_settled=True)
        assert (await again.next(SETTLES)).type == STATE, again.reader.saw()
        assert (await again.next(SETTLES)).type == SYNCED, again.reader.saw()
        assert await again.end(SETTLES) is None, f"{SETTLES}: {again.reader.saw()}"


async def test_until_settled_from_a_revision_sends_the_later_changes_then_ends(
    watch_server: ServerProcess, uid: str
) -> None:
    """Settled now but not at the start revision: the changes since come first."""
    async with client(watch_server.address) as c:
        created = await c.create(uid)
        progressed = await c.progress(uid, 5)
        cancelled = await c.set_status(uid, mi.MAP_IMPORT_STATUS_CANCEL)
        stream = c.watch(
            import_request_ids=[uid], until_settled=True, start_revision=created.revision
        )
        got = [await stream.next(SETTLES, "the two changes since the start") for _ in range(2)]
        assert [(e.type, e.revision) for e in got] == [
            (CHANGE, progressed.revision),
            (CHANGE, cancelled.revision),
        ], f"{SETTLES}: {stream.reader.saw()}"
        assert await stream.end(SETTLES) is None, f"{SETTLES}: {stream.reader.saw()}"


async def test_idle_stream_gets_heartbeats_with_the_current_revision(
    watch_server: ServerProcess, uid: str
) -> None:
    async with client(watch_server.address) as c:
        job = await c.create(uid)
        stream = c.watch(
            import_request_ids=[uid],
            start_revision=job.revision,
            heartbeat_interval=duration_pb2.Duration(nanos=500_000_000),
        )
        other = await c.create(f"{uid}-other")  # a change the stream does not match
        beats = await stream.reader.take_until(
            lambda item: (
                isinstance(item, Event)
                and item.type == HEARTBEAT
                and item.revision >= other.revision
            ),
            WAIT,
            f"a heartbeat at revision {other.revision} or later",
            BEATS,
        )
        assert all(isinstance(e, Event) and e.type == HEARTBEAT for e in beats), (
            f"{BEATS}: {stream.reader.saw()}"
        )
        stream.call.cancel()


async def test_start_revision_ahead_of_the_store_is_out_of_range(
    watch_server: ServerProcess,
) -> None:
    why = "a start revision ahead of the store is refused with OUT_OF_RANGE"
    async with client(watch_server.address) as c:
        stream = c.watch(start_revision=10**12)
        error = await stream.end(why)
        assert error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE, why
        assert error_info(error).reason == "REVISION_AHEAD", why


async def test_cancelled_streams_leave_no_watcher_behind(databases: Databases, uid: str) -> None:
    server = start_server(databases.new())
    try:
        async with client(server.address) as c:
            await c.create(uid)
            streams = [c.watch(import_request_ids=[uid]) for _ in range(5)]
            streams += [c.watch() for _ in range(5)]
            for stream in streams:
                assert (await stream.next(STARTS)).type in (STATE, SYNCED), stream.reader.saw()
            assert open_streams(server) == 10
            for stream in streams:
                stream.call.cancel()
            await eventually(lambda: open_streams(server) == 0, "no open watch stream")
            # The hub still serves: a new watcher gets the next change.
            fresh = c.watch(import_request_ids=[uid], start_revision=1)
            changed = await c.progress(uid, 1)
            assert (await fresh.changes(1, ORDER))[0].revision == changed.revision
            fresh.call.cancel()
    finally:
        server.stop()


async def test_revision_older_than_the_kept_history_is_out_of_range(
    databases: Databases, uid: str
) -> None:
    server = start_server(databases.new(), "--history-count", "5", "--compact-interval", "0.2")
    try:
        async with client(server.address) as c:
            first = await c.create(uid)
            for progress in range(1, 30):
                last = await c.progress(uid, progress)

            async def refused(start: int) -> grpc.aio.AioRpcError | None:
                """The stream's error; None while the changes after `start` are kept
                (it sends them)."""
                stream = c.watch(start_revision=start)
                try:
                    item = await stream.reader.take(WAIT, "a change or an error", COMPACTED)
                finally:
                    stream.call.cancel()
                return item if isinstance(item, grpc.aio.AioRpcError) else None

            # Compaction runs every 0.2 s: wait until it has run after the last write,
            # when the oldest kept revision no longer moves.
            deadline = asyncio.get_running_loop().time() + 10
            oldest: list[int] = []
            while len(oldest) < 3 or len(set(oldest[-3:])) > 1:
                assert asyncio.get_running_loop().time() < deadline, (
                    f"{COMPACTED}: 10 s after the writes (keeping 5 changes, compacting every "
                    f"0.2 s) a watch from {first.revision} is not refused at a stable oldest "
                    f"revision (oldest revisions named: {oldest})"
                )
                error = await refused(first.revision)
                if error is not None:
                    assert error.code() == grpc.StatusCode.OUT_OF_RANGE, f"{COMPACTED}: {error}"
                    info = error_info(error)
                    assert info.reason == "REVISION_COMPACTED", f"{COMPACTED}: {info}"
                    oldest.append(int(info.metadata["oldest_revision"]))
                await asyncio.sleep(0.2)
            kept = oldest[-1]
            assert first.revision < kept <= last.revision, f"{COMPACTED}: oldest {kept}"
            # One before the oldest kept revision is refused as well, naming the same.
            error = await refused(kept - 2)
            assert error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE, (
                f"{COMPACTED}: a watch from {kept - 2} (oldest kept {kept}) was not refused"
            )
            assert int(error_info(error).metadata["oldest_revision"]) == kept, COMPACTED
            # From the oldest kept revision on, the changes are all there.
            stream = c.watch(import_request_ids=[uid], start_revision=kept - 1)
            got = await stream.changes(last.revision - kept + 1, COMPACTED)
            assert [e.revision for e in got] == list(range(kept, last.revision + 1)), (
                f"{COMPACTED}: from {kept - 1} got {[e.revision for e in got]}"
            )
            stream.call.cancel()
    finally:
        server.stop()


async def _stall_then_write(
    c: Client, slow_client: Client, uid: str, updates: int
) -> tuple[grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event], list[int]]:
    """A watcher that stops reading after SYNCED while `updates` large changes commit
    (paced by a second watcher that keeps up); returns the stalled call and the
    revisions written, in order."""
    big = "x" * 60_000  # large events fill the transport's windows quickly
    await c.create(uid)
    slow = slow_client.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(import_request_ids=[uid])
    )
    assert (await read(slow, STARTS)).type == STATE, STARTS
    assert (await read(slow, STARTS)).type == SYNCED, STARTS
    # The writer goes at the pace of the watcher that keeps up: it is never cut off,
    # whatever the machine's load, while the stalled one falls behind.
    healthy = c.watch(import_request_ids=[uid], start_revision=1)
    written: list[int] = []
    for n in range(1, updates + 1):
        job = await c.progress(uid, n % 100 + 1, footprint=big)
        written.append(job.revision)
        (echoed,) = await healthy.changes(1, f"a watcher that keeps up is never cut off; {ORDER}")
        assert echoed.revision == job.revision, f"{ORDER}: {healthy.reader.saw()}"
    healthy.call.cancel()
    return slow, written


async def _read_to_the_end(
    call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event], why: str
) -> tuple[list[int], grpc.aio.AioRpcError]:
    received: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while True:
            received.append((await read(call, why)).revision)
    return received, raised.value


async def test_stalled_consumer_is_cut_off_and_others_keep_up(
    databases: Databases, uid: str
) -> None:
    """The stalled client keeps HTTP/2's small default window (no BDP probing); it
    reads again: what was buffered, then RESOURCE_EXHAUSTED; a resume from the last
    revision received yields the rest, no gap."""
    server = start_server(databases.new(), "--watch-buffer", "8")
    updates = 200
    try:
        async with (
            client(server.address) as c,
            client(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client,
        ):
            slow, written = await _stall_then_write(c, slow_client, uid, updates)
            received, error = await _read_to_the_end(slow, CUT_OFF)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{CUT_OFF}: {error}"
            assert 0 < len(received) < updates, f"{CUT_OFF}: received {len(received)}"
            assert received == written[: len(received)], f"{ORDER}: received {received}"
            resume = int(error_info(error).metadata["resume_revision"])
            assert resume == received[-1], (
                f"{CUT_OFF}: resume_revision {resume}, last received {received[-1]}"
            )
            rest = c.watch(import_request_ids=[uid], start_revision=received[-1])
            tail = await rest.changes(updates - len(received), FROM_RING)
            assert [e.revision for e in tail] == written[len(received) :], FROM_RING
            rest.call.cancel()
    finally:
        server.stop()


async def test_shutdown_ends_streams_with_unavailable_and_a_resume_revision(
    databases: Databases, uid: str
) -> None:
    server = start_server(databases.new())
    try:
        async with client(server.address) as c:
            await c.create(uid)
            stream = c.watch(import_request_ids=[uid])
            assert (await stream.next(STARTS)).type == STATE, stream.reader.saw()
            synced = await stream.next(STARTS)
            assert synced.type == SYNCED, stream.reader.saw()
            await asyncio.to_thread(server.terminate)
            error = await stream.end(SHUTDOWN)
            assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, (
                f"{SHUTDOWN}: {stream.reader.saw()}"
            )
            resume = int(error_info(error).metadata["resume_revision"])
            assert resume == synced.revision, (
                f"{SHUTDOWN}: resume_revision {resume}, last received {synced.revision}"
            )
    finally:
        server.stop()


async def test_until_settled_on_an_unknown_job_is_not_found(
    watch_server: ServerProcess, uid: str
) -> None:
    why = "an until_settled watch of a job that does not exist is NOT_FOUND"
    async with client(watch_server.address) as c:
        await c.create(uid)
        stream = c.watch(import_request_ids=[uid, f"{uid}-missing"], until_settled=True)
        error = await stream.end(why)
        assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND, why
        info = error_info(error)
        assert info.reason == "MAP.notFound", why
        assert info.metadata["import_request_id"] == f"{uid}-missing", why


async def test_a_cut_off_names_exactly_the_last_revision_received(
    databases: Databases, uid: str
) -> None:
    """A client that trusts the advertised resume revision gets every change once."""
    server = start_server(databases.new(), "--watch-buffer", "8")
    updates = 200
    try:
        async with (
            client(server.address) as c,
            client(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client,
        ):
            slow, written = await _stall_then_write(c, slow_client, uid, updates)
            received, error = await _read_to_the_end(slow, CUT_OFF)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{CUT_OFF}: {error}"
            assert error_info(error).reason == "WATCHER_TOO_SLOW", CUT_OFF
            assert 0 < len(received) < updates, f"{CUT_OFF}: received {len(received)}"
            assert received == written[: len(received)], f"{ORDER}: received {received}"
            resume = int(error_info(error).metadata["resume_revision"])
            assert resume == received[-1], (
                f"{CUT_OFF}: resume_revision {resume}, last received {received[-1]}"
            )
            rest = c.watch(import_request_ids=[uid], start_revision=resume)
            tail = await rest.changes(updates - len(received), FROM_RING)
            assert received + [e.revision for e in tail] == written, (
                f"{CUT_OFF}: a resume from {resume} did not give every change once"
            )
            rest.call.cancel()
    finally:
        server.stop()


async def test_a_shutdown_names_exactly_the_last_revision_received(
    databases: Databases, uid: str
) -> None:
    """SIGTERM while a stalled stream has changes in flight: the UNAVAILABLE names the
    last revision the client got, and a resume on the restarted server yields the rest
    exactly once."""
    server = start_server(databases.new())
    updates = 200
    try:
        async with client(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client:
            async with client(server.address) as c:
                slow, written = await _stall_then_write(c, slow_client, uid, updates)
            stopping = asyncio.create_task(asyncio.to_thread(server.terminate))
            received, error = await _read_to_the_end(slow, SHUTDOWN)
            assert await stopping == 0
        assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{SHUTDOWN}: {error}"
        assert error_info(error).reason == "WATCH_INTERRUPTED", SHUTDOWN
        assert received == written[: len(received)], f"{ORDER}: received {received}"
        resume = int(error_info(error).metadata["resume_revision"])
        last = received[-1] if received else 1
        assert resume == last, f"{SHUTDOWN}: resume_revision {resume}, last received {last}"
        server.start()
        async with client(server.address) as c:
            rest = c.watch(import_request_ids=[uid], start_revision=resume)
            tail = await rest.changes(len(written) - len(received), FROM_LOG)
            assert received + [e.revision for e in tail] == written, (
                f"{SHUTDOWN}: a resume from {resume} did not give every change once"
            )
            rest.call.cancel()
    finally:
        server.stop()


async def test_a_slow_reader_that_lags_gets_every_change_in_order(
    watch_server: ServerProcess, uid: str
) -> None:
    """Large changes keep the slow reader's sends waiting on HTTP/2 flow control while
    more changes commit: it lags, and reads on from the kept changes as they arrive."""
    big = "x" * 60_000
    updates = 60
    async with (
        client(watch_server.address) as c,
        client(watch_server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client,
    ):
        created = await c.create(uid)
        slow = slow_client.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(
                import_request_ids=[uid], start_revision=created.revision
            )
        )

        async def write() -> list[int]:
            written = []
            for n in range(1, updates + 1):
                written.append((await c.progress(uid, n, footprint=big)).revision)
            return written

        async def read_slowly() -> list[int]:
            got: list[int] = []
            while len(got) < updates:
                event = await read(slow, f"{ORDER} (a slow reader; got {got})")
                assert event.type == CHANGE, f"{ORDER}: {show(event)} after {got}"
                got.append(event.revision)
                await asyncio.sleep(0.01)
            return got

        written, got = await asyncio.gather(write(), read_slowly())
        slow.cancel()
        assert got == written, f"{ORDER}: a slow reader got {got}, written {written}"


async def test_a_shutdown_during_a_catch_up_names_exactly_the_last_revision_received(
    databases: Databases, uid: str
) -> None:
    """A watch resumed far behind reads its changes ahead in batches: SIGTERM while its
    client is stalled names the last revision the client got, not the batch's end."""
    server = start_server(databases.new())
    big = "x" * 60_000
    try:
        async with client(server.address) as c:
            created = await c.create(uid)
            written = [(await c.progress(uid, n, footprint=big)).revision for n in range(1, 41)]
        async with client(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client:
            slow = slow_client.maps.WatchMapImportStatus(
                mi.WatchMapImportStatusRequest(
                    import_request_ids=[uid], start_revision=created.revision
                )
            )
            first = await read(slow, SHUTDOWN)
            assert first.revision == written[0], f"{FROM_RING}: first change {first.revision}"
            await asyncio.sleep(0.5)  # the server fills the stalled client's window
            stopping = asyncio.create_task(asyncio.to_thread(server.terminate))
            rest, error = await _read_to_the_end(slow, SHUTDOWN)
            assert await stopping == 0
        received = [first.revision, *rest]
        assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{SHUTDOWN}: {error}"
        assert received == written[: len(received)], f"{ORDER}: received {received}"
        assert len(received) < len(written), f"{SHUTDOWN}: the client was not stalled"
        resume = int(error_info(error).metadata["resume_revision"])
        assert resume == received[-1], (
            f"{SHUTDOWN}: resume_revision {resume}, last received {received[-1]}"
        )
    finally:
        server.stop()
