"""The client library's watch() and wait() against a real server that dies and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
import pytest

from jobstatus import AsyncClient
from jobstatus.errors import DeadlineExceeded, JobStatusError
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.watch import EventType, WatchEvent
from tests.conftest import Databases
from tests.serverproc import ServerProcess

IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS


def progress(job_id: str, value: int) -> mi.MapImport:
    return mi.MapImport(
        import_request_id=job_id,
        status=IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=value),
    )


def has_at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


async def until(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    """Wait for `condition`; fail naming `what` (a guarantee, or a step) after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not so in {within:g} s"
        await asyncio.sleep(0.05)


async def next_event(events: AsyncIterator[WatchEvent[Any]], why: str, within: float = 30.0) -> Any:
    """The watch's next event within `within` s, else a failure naming `why`."""
    try:
        return await asyncio.wait_for(anext(events), within)
    except TimeoutError:
        raise AssertionError(f"{why}: no event within {within:g} s") from None


ONCE = "a client watch gets every change once, in order, across server deaths and restarts"


async def write_until(
    client: AsyncClient, job_id: str, acknowledged: list[int], stop: asyncio.Event
) -> None:
    """Update the job again and again, through server deaths; record each acknowledged revision."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            job = await client.map_imports.update(progress(job_id, n % 100 + 1), timeout=5)
        except JobStatusError:
            await asyncio.sleep(0.05)  # the server is down: try again
            continue
        acknowledged.append(job.revision)
        await asyncio.sleep(0.002)


async def test_watch_has_no_gap_and_no_duplicate_across_kill_9_and_restart(
    databases: Databases, uid: str
) -> None:
    server = ServerProcess(databases.new()).start()
    try:
        async with AsyncClient(server.address) as writer, AsyncClient(server.address) as watcher:
            created = await writer.map_imports.create(mi.MapImport(import_request_id=uid))
            acknowledged: list[int] = []
            seen: list[int] = []
            stop = asyncio.Event()

            async def watch() -> None:
                async for event in watcher.map_imports.watch(
                    [uid], start_revision=created.revision, heartbeat_interval=0.5
                ):
                    assert event.type in (EventType.CHANGE, EventType.HEARTBEAT)
                    if event.type is EventType.CHANGE:
                        seen.append(event.revision)

            watching = asyncio.create_task(watch())
            writing = asyncio.create_task(write_until(writer, uid, acknowledged, stop))
            for enough in (50, 100):
                await until(partial(has_at_least, acknowledged, enough), f"{enough} writes")
                await asyncio.to_thread(server.kill)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(server.start)
            await until(lambda: len(acknowledged) >= 150, "150 writes")
            stop.set()
            await writing
            last = acknowledged[-1]
            await until(
                lambda: bool(seen) and seen[-1] >= last,
                f"{ONCE}: the watch reached {last} (it got up to {seen[-1:]}, "
                f"{'alive' if not watching.done() else 'ended'})",
            )
            watching.cancel()
            # Every change once, in order, with no gap: this job is the only writer.
            expected = list(range(created.revision + 1, last + 1))
            gaps = sorted(set(expected) - set(seen))
            twice = sorted({r for r in seen if seen.count(r) > 1})
            assert seen == expected, f"{ONCE}: missing {gaps[:10]}, twice {twice[:10]}"
            assert set(acknowledged) <= set(seen), f"{ONCE}: an acknowledged write was not seen"
    finally:
        server.stop()


async def test_watch_resumes_across_a_graceful_restart(databases: Databases, uid: str) -> None:
    server = ServerProcess(databases.new()).start()
    try:
        async with AsyncClient(server.address) as client:
            created = await client.map_imports.create(mi.MapImport(import_request_id=uid))
            events = client.map_imports.watch([uid], start_revision=created.revision)
            first = await client.map_imports.update(progress(uid, 1))
            why = "a client watch resumes across a graceful restart with the next change"
            event = await next_event(events, why)
            assert (event.type, event.revision) == (EventType.CHANGE, first.revision), why
            await asyncio.to_thread(server.restart)
            second = await client.map_imports.update(progress(uid, 2), timeout=30)
            event = await next_event(events, why)
            assert (event.type, event.revision) == (EventType.CHANGE, second.revision), (
                f"{why}: got {event.type} at {event.revision}, wrote {second.revision}"
            )
            assert event.job is not None and event.job.meta_data.progress == 2, why
            await events.aclose()
    finally:
        server.stop()


async def test_watch_behind_the_history_resyncs_explicitly(databases: Databases, uid: str) -> None:
    server = ServerProcess(
        databases.new(), extra_args=["--history-count", "3", "--compact-interval", "0.2"]
    ).start()
    try:
        async with AsyncClient(server.address) as client:
            created = await client.map_imports.create(mi.MapImport(import_request_id=uid))
            for value in range(1, 20):
                last = await client.map_imports.update(progress(uid, value))
            why = "a client watch behind the kept history resyncs: RESYNC, STATE, SYNCED"
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until a compaction has run, the changes are still sent
                events = client.map_imports.watch([uid], start_revision=created.revision)
                first = await next_event(events, why)
                if first.type is not EventType.CHANGE:
                    break
                await events.aclose()
                assert asyncio.get_running_loop().time() < deadline, f"{why}: never compacted"
                await asyncio.sleep(0.2)
            kinds = [first.type] + [(await next_event(events, why)).type for _ in range(2)]
            assert kinds == [EventType.RESYNC, EventType.STATE, EventType.SYNCED], f"{why}: {kinds}"
            await events.aclose()
            state = await client.map_imports.get(uid)
            assert state.revision == last.revision
    finally:
        server.stop()


async def test_wait_returns_the_settled_job_or_raises_on_the_deadline(
    server: ServerProcess, uid: str
) -> None:
    async with AsyncClient(server.address) as client:
        await client.map_imports.create(mi.MapImport(import_request_id=uid))
        with pytest.raises(DeadlineExceeded):
            await client.map_imports.wait(uid, timeout=1.0)
        waiting = asyncio.create_task(client.map_imports.wait(uid, timeout=30))
        await asyncio.sleep(0.2)
        await client.map_imports.update(progress(uid, 50))
        cancelled = await client.map_imports.update(
            mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_CANCEL)
        )
        settled = await waiting
        assert settled.status == mi.MAP_IMPORT_STATUS_CANCEL
        assert settled.revision == cancelled.revision


async def test_watch_from_a_revision_ahead_of_the_store_raises(
    server: ServerProcess, uid: str
) -> None:
    async with AsyncClient(server.address) as client:
        await client.map_imports.create(mi.MapImport(import_request_id=uid))
        events = client.map_imports.watch([uid], start_revision=10**12)
        with pytest.raises(JobStatusError) as raised:
            await anext(events)
        assert raised.value.code == grpc.StatusCode.OUT_OF_RANGE
        assert raised.value.reason == "REVISION_AHEAD"
        with pytest.raises(JobStatusError) as missing:
            await client.map_imports.wait(f"{uid}-missing", timeout=10)
        assert missing.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_job_deleted_by_retention_is_a_deleted_event(databases: Databases) -> None:
    retaining = ServerProcess(
        databases.new("retention"), extra_args=["--retention-age", "1", "--compact-interval", "0.2"]
    ).start()
    try:
        async with AsyncClient(retaining.address) as client:
            await client.map_imports.create(mi.MapImport(import_request_id="r"))
            cancelled = await client.map_imports.update(
                mi.MapImport(import_request_id="r", status=mi.MAP_IMPORT_STATUS_CANCEL)
            )
            events = client.map_imports.watch(["r"], start_revision=cancelled.revision, timeout=60)
            seen = []
            async for event in events:
                seen.append(event.type)
                if event.type is EventType.DELETED:
                    break
            assert seen and seen[-1] is EventType.DELETED, f"no DELETED event; saw {seen}"
            # The job's last state, its status by name.
            assert event.job == cancelled
            assert str(event.status) == "MAP_IMPORT_STATUS_CANCEL"
            await events.aclose()
            with pytest.raises(JobStatusError) as gone:
                await client.map_imports.get("r")
            assert gone.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        retaining.stop()
