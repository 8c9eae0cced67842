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


@dataclass
class Piped:
    """A watch stream piped into a queue by a background task."""

    call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event]
    queue: asyncio.Queue[Event | grpc.aio.AioRpcError | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        try:
            async for event in self.call:
                await self.queue.put(event)
            await self.queue.put(None)
        except grpc.aio.AioRpcError as error:
            await self.queue.put(error)

    async def next(self, wait: float = 20.0) -> Event:
        item = await asyncio.wait_for(self.queue.get(), wait)
        assert isinstance(item, Event), f"expected an event, got {item!r}"
        return item

    async def end(self, wait: float = 20.0) -> grpc.aio.AioRpcError | None:
        """Skip heartbeats; return the error the stream ended with (None: OK)."""
        while True:
            item = await asyncio.wait_for(self.queue.get(), wait)
            if not isinstance(item, Event):
                return item
            assert item.type == HEARTBEAT, f"unexpected event {item}"

    async def changes(self, count: int, wait: float = 60.0) -> list[Event]:
        found: list[Event] = []
        while len(found) < count:
            event = await self.next(wait)
            if event.type == CHANGE:
                found.append(event)
        return found


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


async def read(call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event]) -> Event:
    """The next event of a raw stream; fails on its end."""
    event = await asyncio.wait_for(call.read(), 20)
    assert isinstance(event, Event), f"the stream ended: {event!r}"
    return event


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_initial_state_then_synced_then_changes(
    watch_server: ServerProcess, uid: str
) -> None:
    async with client(watch_server.address) as c:
        created = await c.create(uid)
        stream = c.watch(import_request_ids=[uid])
        state = await stream.next()
        assert (state.type, state.map_import) == (STATE, created)
        synced = await stream.next()
        assert synced.type == SYNCED and synced.revision >= created.revision
        updated = await c.progress(uid, 10)
        change = await stream.next()
        assert (change.type, change.revision, change.map_import) == (
            CHANGE,
            updated.revision,
            updated,
        )
        stream.call.cancel()


async def test_two_watchers_are_isolated(watch_server: ServerProcess, uid: str) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    async with client(watch_server.address) as c:
        await c.create(a)
        await c.create(b)
        watch_a = c.watch(import_request_ids=[a])
        watch_b = c.watch(import_request_ids=[b])
        for stream in (watch_a, watch_b):
            assert (await stream.next()).type == STATE
            assert (await stream.next()).type == SYNCED
        for progress in range(1, 6):
            await c.progress(a, progress)
        got_a = await watch_a.changes(5)
        assert [e.map_import.meta_data.progress for e in got_a] == [1, 2, 3, 4, 5]
        # B saw none of A's changes: its first change is its own.
        mine = await c.progress(b, 50)
        first_b = await watch_b.next()
        assert (first_b.type, first_b.map_import.import_request_id) == (CHANGE, b)
        assert first_b.revision == mine.revision
        assert watch_b.queue.empty()
        watch_a.call.cancel()
        watch_b.call.cancel()


async def test_resume_from_revision_yields_exactly_the_later_changes(
    watch_server: ServerProcess, uid: str
) -> None:
    async with client(watch_server.address) as c:
        revisions = [(await c.create(uid)).revision]
        for progress in range(1, 8):
            revisions.append((await c.progress(uid, progress)).revision)
        start = revisions[3]
        stream = c.watch(
            import_request_ids=[uid],
            start_revision=start,
            heartbeat_interval=duration_pb2.Duration(seconds=1),
        )
        got = await stream.changes(4)
        assert [e.revision for e in got] == revisions[4:]
        assert [e.map_import.meta_data.progress for e in got] == [4, 5, 6, 7]
        # Nothing more: the next event is a heartbeat at the store's revision.
        beat = await stream.next()
        assert beat.type == HEARTBEAT and beat.revision >= revisions[-1]
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
                assert (await stream.next()).type == STATE
            assert (await stream.next()).type == SYNCED

        async def write(job: str) -> list[int]:
            return [(await c.progress(job, n % 100 + 1)).revision for n in range(updates)]

        written = await asyncio.gather(*(write(job) for job in jobs))
        acknowledged = sorted(r for revisions in written for r in revisions)
        assert len(set(acknowledged)) == writers * updates
        for stream in streams:
            got = [e.revision for e in await stream.changes(writers * updates, wait=120)]
            assert got == acknowledged  # all of them, strictly increasing, none twice
            stream.call.cancel()


async def test_until_settled_ends_with_ok(watch_server: ServerProcess, uid: str) -> None:
    async with client(watch_server.address) as c:
        await c.create(uid)
        stream = c.watch(import_request_ids=[uid], until_settled=True)
        assert (await stream.next()).type == STATE
        assert (await stream.next()).type == SYNCED
        await c.progress(uid, 5)
        cancelled = await c.set_status(uid, mi.MAP_IMPORT_STATUS_CANCEL)
        assert (await stream.next()).type == CHANGE
        last = await stream.next()
        assert last.revision == cancelled.revision
        assert await stream.end() is None
        assert await stream.call.code() == grpc.StatusCode.OK
        # Already settled: the stream ends right after the initial state.
        again = c.watch(import_request_ids=[uid], until_settled=True)
        assert (await again.next()).type == STATE
        assert (await again.next()).type == SYNCED
        assert await again.end() is None


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
        beat = await stream.next()
        assert beat.type == HEARTBEAT
        assert beat.revision >= other.revision
        stream.call.cancel()


async def test_start_revision_ahead_of_the_store_is_out_of_range(
    watch_server: ServerProcess,
) -> None:
    async with client(watch_server.address) as c:
        stream = c.watch(start_revision=10**12)
        error = await stream.end()
        assert error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert error_info(error).reason == "REVISION_AHEAD"


async def test_cancelled_streams_leave_no_watcher_behind(databases: Databases, uid: str) -> None:
    server = start_server(databases.new())
    try:
        async with client(server.address) as c:
            await c.create(uid)
            streams = [c.watch(import_request_ids=[uid]) for _ in range(5)]
            streams += [c.watch() for _ in range(5)]
            for stream in streams:
                assert (await stream.next()).type in (STATE, SYNCED)
            assert open_streams(server) == 10
            for stream in streams:
                stream.call.cancel()
            await eventually(lambda: open_streams(server) == 0)
            # The hub still serves: a new watcher gets the next change.
            fresh = c.watch(import_request_ids=[uid], start_revision=1)
            changed = await c.progress(uid, 1)
            assert (await fresh.changes(1))[0].revision == changed.revision
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

            async def compacted() -> grpc.aio.AioRpcError | None:
                """The stream's error once the history is compacted; None while the
                changes after the first revision are still there (it sends them)."""
                stream = c.watch(start_revision=first.revision)
                try:
                    item = await asyncio.wait_for(stream.queue.get(), 5)
                finally:
                    stream.call.cancel()
                return item if isinstance(item, grpc.aio.AioRpcError) else None

            deadline = asyncio.get_running_loop().time() + 20
            while True:
                error = await compacted()
                if error is not None:
                    break
                assert asyncio.get_running_loop().time() < deadline, "history never compacted"
                await asyncio.sleep(0.1)
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE
            info = error_info(error)
            assert info.reason == "REVISION_COMPACTED"
            oldest = int(info.metadata["oldest_revision"])
            assert first.revision < oldest <= last.revision
            # From the oldest kept revision on, the changes are all there.
            stream = c.watch(import_request_ids=[uid], start_revision=oldest - 1)
            got = await stream.changes(last.revision - oldest + 1)
            assert [e.revision for e in got] == list(range(oldest, last.revision + 1))
            stream.call.cancel()
    finally:
        server.stop()


async def test_stalled_consumer_is_cut_off_and_others_keep_up(
    databases: Databases, uid: str
) -> None:
    server = start_server(databases.new(), "--watch-buffer", "8")
    big = "x" * 60_000  # large events fill the transport's windows quickly
    updates = 200
    try:
        # The stalled client keeps HTTP/2's small default window (no BDP probing).
        async with (
            client(server.address) as c,
            client(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_client,
        ):
            await c.create(uid)
            slow = slow_client.maps.WatchMapImportStatus(
                mi.WatchMapImportStatusRequest(import_request_ids=[uid])
            )
            assert (await read(slow)).type == STATE
            assert (await read(slow)).type == SYNCED
            healthy = c.watch(import_request_ids=[uid], start_revision=1)
            # The writer goes at the pace of the watcher that keeps up: it is never cut
            # off, whatever the machine's load, while the stalled one falls behind.
            written: list[int] = []
            for n in range(1, updates + 1):
                job = await c.progress(uid, n % 100 + 1, footprint=big)
                written.append(job.revision)
                (echoed,) = await healthy.changes(1)
                assert echoed.revision == job.revision
            healthy.call.cancel()
            # The stalled one reads again: what was buffered, then RESOURCE_EXHAUSTED.
            received: list[int] = []
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                while True:
                    received.append((await read(slow)).revision)
            error = raised.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            resume = int(error_info(error).metadata["resume_revision"])
            assert received == written[: len(received)]
            assert len(received) < updates
            assert resume in (received[-1] if received else 0, *received[-2:])
            # Resuming from the last received revision yields the rest, no gap.
            rest = c.watch(import_request_ids=[uid], start_revision=received[-1])
            tail = await rest.changes(updates - len(received))
            assert [e.revision for e in tail] == written[len(received) :]
            rest.call.cancel()
    finally:
        server.stop()


async def test_shutdown_ends_streams_with_unavailable_and_a_resume_revision(
    databases: Databases, uid: str
) -> None:
    server = start_server(databases.new())
    try:
        async with client(server.address) as c:
            job = await c.create(uid)
            stream = c.watch(import_request_ids=[uid])
            assert (await stream.next()).type == STATE
            assert (await stream.next()).type == SYNCED
            await asyncio.to_thread(server.terminate)
            error = await stream.end()
            assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
            assert int(error_info(error).metadata["resume_revision"]) >= job.revision
    finally:
        server.stop()


async def test_until_settled_on_an_unknown_job_is_not_found(
    watch_server: ServerProcess, uid: str
) -> None:
    async with client(watch_server.address) as c:
        await c.create(uid)
        stream = c.watch(import_request_ids=[uid, f"{uid}-missing"], until_settled=True)
        error = await stream.end()
        assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(error)
        assert info.reason == "MAP.notFound"
        assert info.metadata["import_request_id"] == f"{uid}-missing"


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
    assert (await read(slow)).type == STATE
    assert (await read(slow)).type == SYNCED
    healthy = c.watch(import_request_ids=[uid], start_revision=1)
    written: list[int] = []
    for n in range(1, updates + 1):
        job = await c.progress(uid, n % 100 + 1, footprint=big)
        written.append(job.revision)
        (echoed,) = await healthy.changes(1)
        assert echoed.revision == job.revision
    healthy.call.cancel()
    return slow, written


async def _read_to_the_end(
    call: grpc.aio.UnaryStreamCall[mi.WatchMapImportStatusRequest, Event],
) -> tuple[list[int], grpc.aio.AioRpcError]:
    received: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while True:
            received.append((await read(call)).revision)
    return received, raised.value


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
            received, error = await _read_to_the_end(slow)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(error).reason == "WATCHER_TOO_SLOW"
            assert 0 < len(received) < updates
            assert received == written[: len(received)]
            resume = int(error_info(error).metadata["resume_revision"])
            assert resume == received[-1]
            rest = c.watch(import_request_ids=[uid], start_revision=resume)
            tail = await rest.changes(updates - len(received))
            assert received + [e.revision for e in tail] == written
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
            received, error = await _read_to_the_end(slow)
            assert await stopping == 0
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(error).reason == "WATCH_INTERRUPTED"
        assert received == written[: len(received)]
        resume = int(error_info(error).metadata["resume_revision"])
        assert resume == (received[-1] if received else 1)
        server.start()
        async with client(server.address) as c:
            rest = c.watch(import_request_ids=[uid], start_revision=resume)
            tail = await rest.changes(len(written) - len(received))
            assert received + [e.revision for e in tail] == written
            rest.call.cancel()
    finally:
        server.stop()
