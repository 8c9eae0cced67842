"""The SSE watch: state, synced, changes with id = revision, heartbeats, resume with
Last-Event-ID (exactly the missed events), until_settled and 204, 410 past the history."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs
from tests.serverproc import ServerProcess

HISTORY = 30


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """On SQLite and on PostgreSQL (conftest's `database_url`)."""
    args = ["--history-count", str(HISTORY), "--compact-interval", "0.2"]
    proc = ServerProcess(database_url, extra_args=args).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


class Events:
    """The events of an open text/event-stream response, read one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self.lines:
            if not line:
                if "event" in event:
                    if "data" in event:
                        event["data"] = json.loads(event["data"])
                    return event
                event = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            event[name] = value
        raise AssertionError(f"the stream ended; last partial event {event}")

    def until(self, name: str) -> list[dict[str, Any]]:
        seen = []
        while True:
            event = self.next()
            seen.append(event)
            if event["event"] == name:
                return seen


@contextmanager
def watch(http: httpx.Client, query: str, **headers: str) -> Iterator[Events]:
    with http.stream("GET", f"/api/v1/watch/map_import?{query}", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        yield Events(response)


def _create(stubs: Stubs, job_id: str) -> int:
    made = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    )
    return made.map_import.revision


def _progress(
    stubs: Stubs, job_id: str, progress: int, status: mi.MapImportStatus.ValueType | None = None
) -> int:
    job = mi.MapImport(
        import_request_id=job_id,
        status=status or mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=progress),
    )
    return stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job)).map_import.revision


def test_state_then_synced_then_changes(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    created = _create(stubs, uid)
    with watch(http, f"ids={uid}") as events:
        state, synced = events.next(), events.next()
        assert state == {
            "event": "state",
            "data": {
                "importRequestId": uid,
                "status": "Start",
                "metaData": {"jobId": 0, "progress": 0, "size": 0, "area": 0, "zoomLevel": 1},
            },
        }
        assert synced["event"] == "synced"
        assert int(synced["id"]) >= created and synced["data"] == {"revision": int(synced["id"])}
        revision = _progress(stubs, uid, 10)
        change = events.next()
        assert change["event"] == "change" and change["id"] == str(revision)
        assert change["data"]["status"] == "InProgress"
        assert change["data"]["metaData"]["progress"] == 10


def test_resume_with_last_event_id_yields_exactly_the_missed_events(
    stubs: Stubs, http: httpx.Client
) -> None:
    jobs = [f"r-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for job_id in jobs:
        _create(stubs, job_id)
    with watch(http, f"ids={','.join(jobs)}") as events:
        assert [e["event"] for e in events.until("synced")] == ["state", "state", "synced"]
        seen = [_progress(stubs, jobs[0], 1), _progress(stubs, jobs[1], 2)]
        got = [events.next(), events.next()]
        assert [int(e["id"]) for e in got] == seen
        last = got[-1]["id"]
    # Disconnected: these changes are missed, and some of other jobs in between.
    missed = []
    for step in range(3, 9):
        missed.append(_progress(stubs, jobs[step % 2], step))
        _create(stubs, f"noise-{uuid.uuid4().hex[:8]}")
    expected_progress = list(range(3, 9))

    with watch(http, f"ids={','.join(jobs)}&heartbeat=0.5", **{"last-event-id": last}) as events:
        resumed = events.until("heartbeat")
    changes = resumed[:-1]
    assert [e["event"] for e in changes] == ["change"] * len(missed)
    assert [int(e["id"]) for e in changes] == missed
    assert [e["data"]["metaData"]["progress"] for e in changes] == expected_progress
    assert [e["data"]["importRequestId"] for e in changes] == [jobs[s % 2] for s in range(3, 9)]
    # The heartbeat brings the client to the current revision: resuming from it is safe.
    assert int(resumed[-1]["id"]) >= missed[-1]


def test_start_revision_query_and_last_event_id_wins(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    first = _create(stubs, uid)
    second = _progress(stubs, uid, 5)
    third = _progress(stubs, uid, 6)
    with watch(http, f"ids={uid}&start_revision={first}") as events:
        assert [int(events.next()["id"]) for _ in range(2)] == [second, third]
    with watch(http, f"ids={uid}&start_revision={first}", **{"last-event-id": str(second)}) as ev:
        assert int(ev.next()["id"]) == third


def test_heartbeat_carries_the_current_revision(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    with watch(http, f"ids={uid}&heartbeat=0.5") as events:
        assert events.next()["event"] == "synced"
        _create(stubs, f"other-{uuid.uuid4().hex[:8]}")  # not watched: only moves the revision
        time.sleep(0.2)
        now = _create(stubs, f"other-{uuid.uuid4().hex[:8]}")
        heartbeat = events.until("heartbeat")[-1]
        while int(heartbeat["id"]) < now:
            heartbeat = events.until("heartbeat")[-1]
        assert heartbeat["data"] == {"revision": int(heartbeat["id"])}


def test_until_settled_ends_and_a_reconnect_gets_204(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    _create(stubs, uid)
    with watch(http, f"ids={uid}&until_settled=true") as events:
        events.until("synced")
        _progress(stubs, uid, 50)
        cancel = _progress(stubs, uid, 50, mi.MAP_IMPORT_STATUS_CANCEL)
        seen = events.until("settled")
        assert [e["event"] for e in seen] == ["change", "change", "settled"]
        assert seen[-1]["data"] == {"revision": cancel}
        with pytest.raises(AssertionError, match="stream ended"):
            events.next()
    again = http.get(
        f"/api/v1/watch/map_import?ids={uid}&until_settled=true",
        headers={"last-event-id": str(cancel)},
    )
    assert again.status_code == 204


def test_until_settled_on_an_unknown_job_answers_404(http: httpx.Client, uid: str) -> None:
    response = http.get(f"/api/v1/watch/map_import?ids={uid}&until_settled=true")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["reason"] == "MAP.notFound" and error["metadata"] == {"import_request_id": uid}


def test_dataset_events_carry_the_dataset_id(stubs: Stubs, http: httpx.Client) -> None:
    created = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset()))
    dataset_id = created.dataset.dataset_id
    url = f"/api/v1/watch/dataset?ids={dataset_id}&start_revision={created.dataset.revision}"
    with http.stream("GET", url) as response:
        events = Events(response)
        started = stubs.datasets.StartDatasetImport(
            ds.StartDatasetImportRequest(dataset_id=dataset_id)
        )
        change = events.next()
    assert change["data"] == {
        "dataset_id": dataset_id,
        "id": started.dataset.latest_run.id,
        "steps": [
            {
                "name": "fetch",
                "start": change["data"]["steps"][0]["start"],
                "end": None,
                "entries": [],
                "status": "in_progress",
            }
        ],
        "status": "in_progress",
    }


def test_a_resume_point_past_the_history_answers_410(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    first = _create(stubs, uid)
    for step in range(HISTORY + 5):
        _progress(stubs, uid, step % 100)
    deadline = time.monotonic() + 15
    url = f"/api/v1/watch/map_import?ids={uid}"
    while True:  # compaction runs every 0.2 s
        with http.stream("GET", url, headers={"last-event-id": str(first)}) as response:
            status = response.status_code
            body = response.read() if status != 200 else b""
        if status == 410 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 410
    error = json.loads(body)["error"]
    assert error["code"] == "OUT_OF_RANGE" and error["reason"] == "REVISION_COMPACTED"
    assert int(error["metadata"]["oldest_revision"]) > first


def test_a_closed_stream_leaves_no_trace(http: httpx.Client, uid: str) -> None:
    for _ in range(3):
        with watch(http, f"ids={uid}") as events:
            events.next()
    deadline = time.monotonic() + 10
    gauge = re.compile(r"^jobstatus_http_watch_streams (\S+)$", re.M)
    while True:
        found = gauge.search(http.get("/metrics").text)
        assert found is not None
        if float(found.group(1)) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert float(found.group(1)) == 0


def test_head_answers_the_headers_without_a_stream(http: httpx.Client) -> None:
    response = http.head("/api/v1/watch/map_import")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""


def test_shutdown_ends_the_stream_with_its_resume_point_and_a_restart_resumes(
    server: ServerProcess, stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    _create(stubs, uid)
    with watch(http, f"ids={uid}") as events:
        events.until("synced")
        last = _progress(stubs, uid, 1)
        assert int(events.next()["id"]) == last
        stopping = threading.Thread(target=server.terminate)
        stopping.start()
        error = events.until("error")[-1]
        stopping.join()
    assert error["data"]["code"] == "UNAVAILABLE"
    assert error["data"]["metadata"] == {"resume_revision": str(last)}
    server.start()
    restarted = Stubs.connect(server.address)
    try:
        later = _progress(restarted, uid, 2)
        query = f"ids={uid}&until_settled=true"
        with watch(
            http, query, **{"last-event-id": error["data"]["metadata"]["resume_revision"]}
        ) as ev:
            change = ev.next()
    finally:
        restarted.channel.close()
    assert change["id"] == str(later) and change["data"]["metaData"]["progress"] == 2
