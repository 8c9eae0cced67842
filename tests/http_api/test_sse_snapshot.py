"""An SSE watch's initial state over many jobs, against a real server on SQLite and
PostgreSQL: writes racing it are neither lost nor sent twice, other tenants' jobs and
other ids never appear, and a client that stops reading mid-state holds the server's
memory to a page or so, then gets an error event with resume revision 0."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from tests.bigstore import fill, map_job, resident_bytes
from tests.conftest import Databases, Stubs
from tests.http_api.test_sse import Events, watch
from tests.serverproc import ServerProcess

THEIRS = "never sent: another tenant's"  # the footprint of the other tenant's jobs
WAIT = 60.0

RACE = (
    "writes racing an SSE watch's initial state are neither lost nor sent twice, and its "
    "view is the store's"
)
ISOLATED = "an SSE watch's initial state holds only its tenant's jobs (and its ids)"
STALL = "an SSE client that stops reading its initial state holds little server memory"
CUT = "an SSE client stalled in its initial state gets an error event with resume 0"


def start(url: str, jobs: dict[str, list[mi.MapImport]], *args: str) -> ServerProcess:
    """A server on a store filled with `jobs` (by tenant) before it starts."""
    asyncio.run(fill(url, MAP_IMPORT, jobs))
    return ServerProcess(url, extra_args=list(args)).start()


@pytest.fixture
def filled(databases: Databases) -> Iterator[tuple[ServerProcess, list[str]]]:
    """1,500 jobs of 4 KB of this tenant (more than the sockets buffer), and the same ids
    in another tenant."""
    ids = [f"job-{n:05d}" for n in range(0, 3000, 2)]  # room for new ids between
    mine = [map_job(i, footprint="x" * 4000) for i in ids]
    server = start(
        databases.new(),
        {DEFAULT_TENANT: mine, "other": [map_job(i, footprint=THEIRS) for i in ids]},
    )
    yield server, ids
    server.stop()


def list_all(stubs: Stubs) -> dict[str, int]:
    """Every job of this tenant: its revision."""
    jobs: dict[str, int] = {}
    token = ""
    while True:
        page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000, page_token=token))
        jobs.update((job.import_request_id, job.revision) for job in page.map_imports)
        token = page.next_page_token
        if not token:
            return jobs


def slowly(events: Events, done: Any, why: str) -> list[dict[str, Any]]:
    """Events up to the first for which `done` holds, read a little at a time (the
    server's sends wait on the socket meanwhile)."""
    deadline = time.monotonic() + WAIT
    taken: list[dict[str, Any]] = []
    while not taken or not done(taken[-1]):
        assert time.monotonic() < deadline, f"{why}: not done in {WAIT:g} s: {events.saw()}"
        taken.append(events.next(why))
        if len(taken) % 50 == 0:
            time.sleep(0.01)
    return taken


def test_writes_racing_the_initial_state_over_sse(
    filled: tuple[ServerProcess, list[str]],
) -> None:
    server, ids = filled
    stubs = Stubs.connect(server.address)
    synced = threading.Event()
    written: list[int] = []
    failed: list[BaseException] = []

    def write() -> None:
        try:
            write_until_synced()
        except BaseException as error:
            failed.append(error)
            raise

    def write_until_synced() -> None:
        step = 0
        while not synced.is_set() or step < 20:
            step += 1
            job_id = ids[(step * 37) % len(ids)]
            if step % 4 == 0:
                job = mi.MapImport(import_request_id=f"{job_id}-new{step}")
                made = stubs.maps.CreateMapImport(mi.CreateMapImportRequest(map_import=job))
                written.append(made.map_import.revision)
            else:
                job = mi.MapImport(
                    import_request_id=job_id,
                    status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                    meta_data=mi.MapImportMetaData(progress=step % 100 + 1),
                )
                changed = stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job))
                written.append(changed.map_import.revision)

    try:
        with (
            httpx.Client(base_url=server.http_url, timeout=10) as http,
            watch(http, "envelope=true&heartbeat=0.5") as events,
        ):
            first = events.next(RACE)
            began = list_all(stubs)  # the store as the state began to come
            writer = threading.Thread(target=write)
            writer.start()
            try:
                initial = [first, *slowly(events, lambda e: e["event"] == "synced", RACE)]
            finally:
                synced.set()
                writer.join()
            assert not failed, f"{RACE}: a write failed: {failed}"
            at = int(initial[-1]["id"])
            rest = slowly(
                events,
                lambda e: e["event"] in ("change", "heartbeat") and int(e["id"]) >= written[-1],
                RACE,
            )
        assert at > max(began.values()), f"{RACE}: no write raced the initial state"
        view: dict[str, int] = {}
        sent: list[int] = []
        for event in initial[:-1] + rest:
            if event["event"] not in ("state", "change"):
                continue
            data = event["data"]
            job = data["job"]
            assert job["metaData"].get("footprint") != THEIRS, f"{ISOLATED}: {job}"
            assert (event["event"] == "state") == (data["revision"] <= at), RACE
            sent.append(data["revision"])
            view[job["importRequestId"]] = data["revision"]
        assert len(sent) == len(set(sent)), f"{RACE}: a change was sent twice"
        assert view == list_all(stubs), f"{RACE}: the view differs from the store"
    finally:
        stubs.channel.close()


def test_an_sse_watch_of_ids_gets_only_those(filled: tuple[ServerProcess, list[str]]) -> None:
    server, ids = filled
    named = [ids[5], ids[700], "job-missing"]
    with (
        httpx.Client(base_url=server.http_url, timeout=10) as http,
        watch(http, "ids=" + ",".join(named)) as events,
    ):
        states = events.until("synced", ISOLATED)[:-1]
    assert sorted(e["data"]["importRequestId"] for e in states) == sorted(named[:2]), (
        f"{ISOLATED}: {events.saw()}"
    )


def test_an_sse_client_that_stops_reading_holds_little_memory_then_is_cut_off(
    databases: Databases,
) -> None:
    big = "x" * 8000
    ids = [f"job-{n:05d}" for n in range(6000)]
    stored = len(ids) * len(big)
    server = start(
        databases.new(),
        {DEFAULT_TENANT: [map_job(i, footprint=big) for i in ids]},
        "--watch-buffer",
        "8",
    )
    assert server.process is not None
    pid = server.process.pid
    stubs = Stubs.connect(server.address)
    try:
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            with watch(http, "ids=" + ",".join(ids[:3])) as warm:  # one-time costs
                warm.until("synced", STALL)
            before = resident_bytes(pid)
            with watch(http, "") as events:
                for _ in range(10):
                    assert events.next(STALL)["event"] == "state", f"{STALL}: {events.saw()}"
                peak = before
                for _ in range(30):  # the server fills the sockets, then waits
                    time.sleep(0.05)
                    peak = max(peak, resident_bytes(pid))
                assert peak - before < stored / 2, (
                    f"{STALL}: the server grew from {before} to {peak} bytes while one "
                    f"client, stalled, watched {stored} bytes of jobs"
                )
                for n in range(12):  # more than --watch-buffer of its changes
                    job = mi.MapImport(
                        import_request_id=ids[n],
                        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                        meta_data=mi.MapImportMetaData(progress=5),
                    )
                    stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job))
                got = events.until("error", CUT, within=WAIT)
        assert {e["event"] for e in got[:-1]} <= {"state"}, f"{CUT}: {events.saw()}"
        assert len(events.seen) < len(ids), f"{CUT}: the whole state was sent"
        error = got[-1]["data"]
        assert (error["code"], error["reason"]) == ("RESOURCE_EXHAUSTED", "WATCHER_TOO_SLOW"), (
            f"{CUT}: {error}"
        )
        assert error["metadata"]["resume_revision"] == "0", f"{CUT}: {error}"
    finally:
        stubs.channel.close()
        server.stop()
