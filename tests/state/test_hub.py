"""The watch hub in process, on a real SQLite store: what a replica's hub does when it
has fallen behind the kept history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.errors import OutOfRange
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from jobstatus_server.state.renderings import Renderings, WatchForm
from jobstatus_server.state.store import Store
from jobstatus_server.state.watch import Hub, WatchSettings
from jobstatus_server.usecases.jobs import Core
from tests.conftest import sqlite_url


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait for `condition`; fail naming `what` after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not so in {within:g} s"
        await asyncio.sleep(0.01)


class Revisions:
    """Frames every event as its revision (what this test reads of the stream)."""

    form = WatchForm.GRPC

    def job_event(self, event_type: int, revision: int, renderings: Renderings) -> bytes:
        return str(revision).encode()

    def marker(self, event_type: int, revision: int) -> bytes:
        return str(revision).encode()


SKIPS = (
    "a hub behind the kept history ends its streams with OUT_OF_RANGE and tails on "
    "from the compaction point"
)


async def test_a_hub_behind_the_compaction_point_skips_ahead_and_ends_its_streams(
    tmp_path: Path,
) -> None:
    store = Store(sqlite_url(tmp_path))
    await store.start()
    hub = Hub(store, WatchSettings(poll_interval=0.05))
    try:
        await hub.start()
        core = Core(store)
        job = await core.create(MAP_IMPORT, DEFAULT_TENANT, "", mi.MapImport(import_request_id="j"))
        sent: list[bytes] = []

        async def send(frame: bytes) -> None:
            sent.append(frame)

        watching = asyncio.create_task(
            hub.watch(
                MAP_IMPORT, DEFAULT_TENANT, ["j"], job.revision, False, 60.0, send, Revisions()
            )
        )
        await until(lambda: bool(hub.streams) and next(iter(hub.streams)).live, "the watch is live")
        # This hub stalls (as when its database connection is away) while another
        # replica writes and the history is compacted past where it stopped. (Its own
        # process's commits would reach it from the writer, not from the log.)
        hub_task, hub._task = hub._task, None
        assert hub_task is not None
        hub_task.cancel()
        other = Store(sqlite_url(tmp_path))
        await other.start()
        for progress in range(1, 21):
            last = await Core(other).update(
                MAP_IMPORT,
                DEFAULT_TENANT,
                mi.MapImport(
                    import_request_id="j",
                    status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                    meta_data=mi.MapImportMetaData(progress=progress),
                ),
                mi.UpdateMapImportRequest().update_mask,
                0,
            )
        compacted = await other.compact(keep_count=5, keep_age=10**9)
        await other.close()
        assert hub.revision < compacted < last.revision
        # The hub's tailing comes back: it jumps to the compaction point, ends the stream
        # that missed changes with OUT_OF_RANGE, and tails on from there.
        hub._task = asyncio.create_task(hub._run())
        with pytest.raises(OutOfRange) as raised:
            try:
                await asyncio.wait_for(watching, 10)
            except TimeoutError:
                raise AssertionError(f"{SKIPS}: the stream did not end in 10 s") from None
        assert raised.value.metadata["compact_revision"] == str(compacted), SKIPS
        await until(
            lambda: hub.revision >= last.revision, f"{SKIPS}: the hub reached {last.revision}"
        )
        assert [event.revision for event in hub.ring] == list(
            range(compacted + 1, last.revision + 1)
        ), f"{SKIPS}: the ring holds {[event.revision for event in hub.ring]}"
        assert not hub.streams, f"{SKIPS}: a stream is left"
    finally:
        await hub.close()
        await store.close()
