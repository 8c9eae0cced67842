"""A gRPC watch's initial state over many jobs, against a real server on SQLite and
PostgreSQL: writes racing it are neither lost nor sent twice, other tenants' jobs never
appear, and a client that stops reading mid-state holds the server's memory to a page
or so, then is cut off with resume revision 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from tests.bigstore import fill, map_job, resident_bytes
from tests.conftest import Databases
from tests.grpc_api.test_watch import Client, Event, Piped, client, error_info
from tests.serverproc import ServerProcess

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
THEIRS = "never sent: another tenant's"  # the footprint of the other tenant's jobs
WAIT = 60.0

RACE = (
    "writes racing a gRPC watch's initial state are neither lost nor sent twice, and its "
    "view is the store's"
)
ISOLATED = "a watch's initial state holds only its tenant's jobs"
STALL = "a gRPC client that stops reading its initial state holds little server memory"
CUT = "a client stalled in its initial state is cut off with RESOURCE_EXHAUSTED, resume 0"


@pytest.fixture
async def filled(databases: Databases) -> AsyncIterator[tuple[ServerProcess, list[str]]]:
    """A server on a store of 1,500 jobs of this tenant and the same ids in another."""
    url = databases.new()
    ids = [f"job-{n:05d}" for n in range(0, 3000, 2)]  # room for new ids between
    await fill(
        url,
        MAP_IMPORT,
        {
            DEFAULT_TENANT: [map_job(i) for i in ids],
            "other": [map_job(i, footprint=THEIRS) for i in ids],
        },
    )
    server = ServerProcess(url).start()
    yield server, ids
    server.stop()


async def list_all(c: Client) -> dict[str, mi.MapImport]:
    jobs: dict[str, mi.MapImport] = {}
    token = ""
    while True:
        page = await c.maps.ListMapImports(
            mi.ListMapImportsRequest(page_size=1000, page_token=token)
        )
        jobs.update((job.import_request_id, job) for job in page.map_imports)
        token = page.next_page_token
        if not token:
            return jobs


async def slow_pump(piped: Piped) -> None:
    """Read the stream a little at a time, so the server's sends wait on flow control."""
    taken = 0
    try:
        async for event in piped.call:
            await piped.queue.put(event)
            taken += 1
            if taken % 50 == 0:
                await asyncio.sleep(0.01)
        await piped.queue.put(None)
    except grpc.aio.AioRpcError as error:
        await piped.queue.put(error)


async def test_writes_racing_the_initial_state_over_grpc(
    filled: tuple[ServerProcess, list[str]],
) -> None:
    server, ids = filled
    options = [("grpc.http2.bdp_probe", 0)]
    async with client(server.address) as writer, client(server.address, options=options) as c:
        request = mi.WatchMapImportStatusRequest(
            heartbeat_interval=duration_pb2.Duration(nanos=500_000_000)
        )
        stream = Piped(c.maps.WatchMapImportStatus(request))
        stream.task = asyncio.create_task(slow_pump(stream))
        began = (await writer.progress(ids[0], 1)).revision
        synced_seen = asyncio.Event()

        async def write() -> int:
            last, step = began, 0
            while not synced_seen.is_set() or step < 20:
                step += 1
                job_id = ids[(step * 37) % len(ids)]
                if step % 4 == 0:
                    last = (await writer.create(f"{job_id}-new{step}")).revision
                else:
                    last = (await writer.progress(job_id, step % 100 + 1)).revision
            return last

        writing = asyncio.create_task(write())
        initial = await stream.reader.take_until(
            lambda item: not isinstance(item, Event) or item.type == SYNCED, WAIT, "SYNCED", RACE
        )
        synced_seen.set()
        written = await writing
        assert isinstance(initial[-1], Event), f"{RACE}: {stream.reader.saw()}"
        synced = initial[-1].revision
        rest = await stream.reader.take_until(
            lambda item: (
                not isinstance(item, Event)
                or (item.type in (CHANGE, HEARTBEAT) and item.revision >= written)
            ),
            WAIT,
            f"every change up to {written}",
            RACE,
        )
        stream.call.cancel()
        events = [e for e in initial + rest if isinstance(e, Event)]
        assert synced > began, f"{RACE}: no write raced the initial state"
        view: dict[str, mi.MapImport] = {}
        sent: list[int] = []
        for event in events:
            if event.type in (STATE, CHANGE):
                job = event.map_import
                assert job.meta_data.footprint != THEIRS, f"{ISOLATED}: {job}"
                assert (event.type == STATE) == (event.revision <= synced), (
                    f"{RACE}: {stream.reader.saw()}"
                )
                sent.append(job.revision)
                view[job.import_request_id] = job
        assert len(sent) == len(set(sent)), f"{RACE}: a change was sent twice"
        assert view == await list_all(writer), f"{RACE}: the view differs from the store"


async def test_a_grpc_client_that_stops_reading_holds_little_memory_then_is_cut_off(
    databases: Databases,
) -> None:
    url = databases.new()
    big = "x" * 8000
    ids = [f"job-{n:05d}" for n in range(6000)]
    await fill(url, MAP_IMPORT, {DEFAULT_TENANT: [map_job(i, footprint=big) for i in ids]})
    stored = len(ids) * len(big)
    server = ServerProcess(url, extra_args=["--watch-buffer", "8"]).start()
    assert server.process is not None
    pid = server.process.pid
    try:
        options = [("grpc.http2.bdp_probe", 0)]
        async with client(server.address) as c, client(server.address, options=options) as slow:
            warm = c.watch(import_request_ids=ids[:3])  # the first watch's one-time costs
            await warm.reader.take_until(
                lambda item: not isinstance(item, Event) or item.type == SYNCED,
                WAIT,
                "SYNCED",
                STALL,
            )
            warm.call.cancel()
            before = resident_bytes(pid)
            call = slow.maps.WatchMapImportStatus(mi.WatchMapImportStatusRequest())
            for _ in range(10):
                event = await asyncio.wait_for(call.read(), WAIT)
                assert isinstance(event, Event) and event.type == STATE, f"{STALL}: {event}"
            peak = before
            for _ in range(30):  # the server fills the client's window, then waits
                await asyncio.sleep(0.05)
                peak = max(peak, resident_bytes(pid))
            assert peak - before < stored / 2, (
                f"{STALL}: the server grew from {before} to {peak} bytes while one client, "
                f"stalled, watched {stored} bytes of jobs"
            )
            for n in range(12):  # more than --watch-buffer of its changes
                await c.progress(ids[n], 5)
            states = 10
            while True:
                try:
                    event = await asyncio.wait_for(call.read(), WAIT)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{CUT}: {error}"
                    info = error_info(error)
                    assert info.reason == "WATCHER_TOO_SLOW", f"{CUT}: {info}"
                    assert info.metadata["resume_revision"] == "0", f"{CUT}: {info}"
                    break
                assert isinstance(event, Event) and event.type == STATE, (
                    f"{CUT}: event {states + 1} is {event}"
                )
                states += 1
            assert states < len(ids), f"{CUT}: the whole state was sent ({states} events)"
    finally:
        server.stop()


async def test_many_watches_starting_at_once_hold_little_memory(databases: Databases) -> None:
    """Eight clients open a watch over the same 48 MB of jobs at once and stop reading:
    a few read and hold a page each (--watch-snapshot-streams), the others wait their
    turn, so the server's memory grows by less than one copy of the jobs, not eight
    (measured here: 14 MB on SQLite, 26 MB on PostgreSQL, whose reader threads each
    keep their own malloc arena)."""
    why = "many watches starting at once are limited, never multiplying memory"
    url = databases.new()
    big = "x" * 8000
    ids = [f"job-{n:05d}" for n in range(6000)]
    await fill(url, MAP_IMPORT, {DEFAULT_TENANT: [map_job(i, footprint=big) for i in ids]})
    stored = len(ids) * len(big)
    server = ServerProcess(url).start()
    assert server.process is not None
    pid = server.process.pid
    channels = [
        grpc.aio.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)])
        for _ in range(8)
    ]
    try:
        async with client(server.address) as c:
            warm = c.watch(import_request_ids=ids[:3])  # the first watch's one-time costs
            await warm.reader.take_until(
                lambda item: not isinstance(item, Event) or item.type == SYNCED, WAIT, "SYNCED", why
            )
            warm.call.cancel()
        before = resident_bytes(pid)
        calls = [
            mi_grpc.MapImportServiceStub(channel).WatchMapImportStatus(
                mi.WatchMapImportStatusRequest()
            )
            for channel in channels
        ]
        firsts = [asyncio.create_task(call.read()) for call in calls]  # then none read on
        peak = before
        for _ in range(40):
            await asyncio.sleep(0.05)
            peak = max(peak, resident_bytes(pid))
        started = sum(first.done() for first in firsts)
        # Before, each watch read every job at once: eight copies of the store.
        assert peak - before < stored, (
            f"{why}: the server grew from {before} to {peak} bytes while 8 stalled clients "
            f"watched {stored} bytes of jobs ({started} of them got an event)"
        )
        for call in calls:
            call.cancel()
    finally:
        for channel in channels:
            await channel.close(None)
        server.stop()
