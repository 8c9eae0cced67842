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
from tests.streams import shown

HISTORY = 30


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """On SQLite and on PostgreSQL (conftest's `database_url`)."""
    args = ["--history-count", str(HISTORY), "--compact-interval", "0.2"]
    proc = ServerProcess(database_url, extra_args=args).start()
    yield proc
    proc.stop()


WAIT = 15.0  # seconds an awaited event may take on a loaded machine

RESUMES = "an SSE client resuming with Last-Event-ID R gets exactly the changes after R, in order"
BEATS = "an idle SSE watch's heartbeat carries the current revision"
SETTLES = "an until_settled SSE watch ends with `settled` right after the settling change"
COMPACTED = "a resume point older than the kept history answers 410 naming the oldest kept revision"


class Events:
    """The events of an open text/event-stream response, read one at a time with
    deadlines; every event read is kept, so a failure says what the stream sent."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.seen: list[dict[str, Any]] = []

    def saw(self) -> str:
        return shown([f"{e['event']}@{e.get('id', '-')}" for e in self.seen])

    def next(self, why: str = "the stream goes on", expect: str = "an event") -> dict[str, Any]:
        """The next event; a read that gets nothing for the client's timeout (10 s) fails
        naming `why`."""
        event: dict[str, Any] = {}
        try:
            for line in self.lines:
                if not line:
                    if "event" in event:
                        if "data" in event:
                            event["data"] = json.loads(event["data"])
                        self.seen.append(event)
                        return event
                    event = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                event[name] = value
        except httpx.ReadTimeout:
            raise AssertionError(
                f"{why}: expected {expect}, nothing came; saw {self.saw()}"
            ) from None
        raise AssertionError(f"the stream ended; last partial event {event}; saw {self.saw()}")

    def until(
        self, name: str, why: str = "the stream goes on", within: float = WAIT
    ) -> list[dict[str, Any]]:
        """Events up to the first `name` event, all within `within` seconds."""
        deadline = time.monotonic() + within
        seen = []
        while True:
            event = self.next(why, f"a {name} event")
            seen.append(event)
            if event["event"] == name:
                return seen
            assert time.monotonic() < deadline, (
                f"{why}: expected a {name} event within {within:g} s, saw {self.saw()}"
            )


@contextmanager
def watch(
    http: httpx.Client, query: str, why: str = "a watch is answered with a stream", **headers: str
) -> Iterator[Events]:
    with http.stream("GET", f"/api/v1/watch/map_import?{query}", headers=headers) as response:
        status = response.status_code
        assert status == 200, (
            f"{why}: ?{query} with {headers} answered {status}: {response.read()!r}"
        )
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
        got = [events.next(RESUMES), events.next(RESUMES)]
        assert [int(e["id"]) for e in got] == seen, f"{RESUMES}: {events.saw()}"
        last = got[-1]["id"]
    # Disconnected: these changes are missed, and some of other jobs in between.
    missed = []
    for step in range(3, 9):
        missed.append(_progress(stubs, jobs[step % 2], step))
        _create(stubs, f"noise-{uuid.uuid4().hex[:8]}")
    expected_progress = list(range(3, 9))

    query = f"ids={','.join(jobs)}&heartbeat=0.5"
    with watch(http, query, RESUMES, **{"last-event-id": last}) as events:
        resumed = events.until("heartbeat", RESUMES)
        saw = events.saw()
    changes = resumed[:-1]
    assert [e["event"] for e in changes] == ["change"] * len(missed), f"{RESUMES}: {saw}"
    assert [int(e["id"]) for e in changes] == missed, f"{RESUMES}: {saw}, missed {missed}"
    assert [e["data"]["metaData"]["progress"] for e in changes] == expected_progress
    assert [e["data"]["importRequestId"] for e in changes] == [jobs[s % 2] for s in range(3, 9)]
    # The heartbeat brings the client to the current revision: resuming from it is safe.
    assert int(resumed[-1]["id"]) >= missed[-1], f"{BEATS}: {saw}"


def test_start_revision_query_and_last_event_id_wins(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    first = _create(stubs, uid)
    second = _progress(stubs, uid, 5)
    third = _progress(stubs, uid, 6)
    with watch(http, f"ids={uid}&start_revision={first}") as events:
        got = [int(events.next(RESUMES)["id"]) for _ in range(2)]
        assert got == [second, third], f"{RESUMES}: start_revision={first} gave {events.saw()}"
    why = "Last-Event-ID wins over start_revision (an EventSource reconnects to the same URL)"
    with watch(http, f"ids={uid}&start_revision={first}", **{"last-event-id": str(second)}) as ev:
        assert int(ev.next(why)["id"]) == third, f"{why}: {ev.saw()}"


def test_heartbeat_carries_the_current_revision(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    with watch(http, f"ids={uid}&heartbeat=0.5") as events:
        assert events.next(BEATS)["event"] == "synced", f"{BEATS}: {events.saw()}"
        _create(stubs, f"other-{uuid.uuid4().hex[:8]}")  # not watched: only moves the revision
        time.sleep(0.2)
        now = _create(stubs, f"other-{uuid.uuid4().hex[:8]}")
        deadline = time.monotonic() + WAIT
        heartbeat = events.until("heartbeat", BEATS)[-1]
        while int(heartbeat["id"]) < now:
            assert time.monotonic() < deadline, (
                f"{BEATS}: no heartbeat at revision {now} or later in {WAIT:g} s: {events.saw()}"
            )
            heartbeat = events.until("heartbeat", BEATS)[-1]
        assert heartbeat["data"] == {"revision": int(heartbeat["id"])}, BEATS


def test_until_settled_ends_and_a_reconnect_gets_204(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    _create(stubs, uid)
    with watch(http, f"ids={uid}&until_settled=true") as events:
        events.until("synced", SETTLES)
        _progress(stubs, uid, 50)
        cancel = _progress(stubs, uid, 50, mi.MAP_IMPORT_STATUS_CANCEL)
        seen = events.until("settled", SETTLES)
        assert [e["event"] for e in seen] == ["change", "change", "settled"], (
            f"{SETTLES}: {events.saw()}"
        )
        assert seen[-1]["data"] == {"revision": cancel}, f"{SETTLES}: {events.saw()}"
        with pytest.raises(AssertionError, match="stream ended"):
            events.next()
    again = http.get(
        f"/api/v1/watch/map_import?ids={uid}&until_settled=true",
        headers={"last-event-id": str(cancel)},
    )
    assert again.status_code == 204, "a reconnect after `settled` answers 204 (EventSource stops)"


def test_a_reconnect_before_the_settling_change_gets_it_then_settled(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    """Settled now, but not at the client's Last-Event-ID: no 204, the missed changes."""
    created = _create(stubs, uid)
    progressed = _progress(stubs, uid, 50)
    cancel = _progress(stubs, uid, 50, mi.MAP_IMPORT_STATUS_CANCEL)
    query = f"ids={uid}&until_settled=true"
    with http.stream(
        "GET", f"/api/v1/watch/map_import?{query}", headers={"last-event-id": str(created)}
    ) as response:
        assert response.status_code == 200, (
            f"{SETTLES}: a reconnect from {created}, before the settling change {cancel}, "
            f"answered {response.status_code}"
        )
        events = Events(response)
        seen = events.until("settled", SETTLES)
    assert [(e["event"], e.get("id")) for e in seen] == [
        ("change", str(progressed)),
        ("change", str(cancel)),
        ("settled", None),
    ], f"{SETTLES}: {events.saw()}"


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


def _refusal(http: httpx.Client, url: str, resume: int) -> dict[str, Any] | None:
    """The 410's error for a resume from `resume`; None while it is accepted."""
    with http.stream("GET", url, headers={"last-event-id": str(resume)}) as response:
        status = response.status_code
        body = response.read() if status != 200 else b""
    if status == 200:
        return None
    assert status == 410, f"{COMPACTED}: a resume from {resume} answered {status}: {body!r}"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == "OUT_OF_RANGE", f"{COMPACTED}: {error}"
    assert error["reason"] == "REVISION_COMPACTED", f"{COMPACTED}: {error}"
    return error


def test_a_resume_point_past_the_history_answers_410(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    first = _create(stubs, uid)
    written = [_progress(stubs, uid, step % 100) for step in range(HISTORY + 5)]
    url = f"/api/v1/watch/map_import?ids={uid}"
    # Compaction runs every 0.2 s: wait until it has run after the last write, when the
    # oldest kept revision no longer moves.
    deadline = time.monotonic() + 10
    oldest: list[int] = []
    while len(oldest) < 3 or len(set(oldest[-3:])) > 1:
        assert time.monotonic() < deadline, (
            f"{COMPACTED}: no stable 410 in 10 s (oldest revisions named: {oldest})"
        )
        error = _refusal(http, url, first)
        if error is not None:
            oldest.append(int(error["metadata"]["oldest_revision"]))
        time.sleep(0.2)
    kept = oldest[-1]
    assert first < kept <= written[-1], f"{COMPACTED}: oldest {kept}"
    before = _refusal(http, url, kept - 2)
    assert before is not None, f"{COMPACTED}: a resume from {kept - 2} (oldest kept {kept}) ran"
    assert before["metadata"]["oldest_revision"] == str(kept), f"{COMPACTED}: {before}"
    # Resuming just before the oldest kept revision gets every change from it on.
    query = f"ids={uid}&heartbeat=0.5"
    with watch(http, query, COMPACTED, **{"last-event-id": str(kept - 1)}) as events:
        changes = events.until("heartbeat", COMPACTED)[:-1]
    expected = [r for r in written if r >= kept]
    assert [int(e["id"]) for e in changes] == expected, (
        f"{COMPACTED}: a resume from {kept - 1} gave {events.saw()}, expected {expected}"
    )


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
        events.until("synced", RESUMES)
        last = _progress(stubs, uid, 1)
        assert int(events.next(RESUMES)["id"]) == last, f"{RESUMES}: {events.saw()}"
        stopping = threading.Thread(target=server.terminate)
        stopping.start()
        error = events.until("error", "a shutdown ends an SSE watch with an error event")[-1]
        stopping.join()
    assert error["data"]["code"] == "UNAVAILABLE"
    assert error["data"]["metadata"] == {"resume_revision": str(last)}, (
        f"a shutdown's error event names the last revision sent, {last}: {error}"
    )
    server.start()
    restarted = Stubs.connect(server.address)
    try:
        later = _progress(restarted, uid, 2)
        query = f"ids={uid}&until_settled=true"
        with watch(
            http, query, **{"last-event-id": error["data"]["metadata"]["resume_revision"]}
        ) as ev:
            change = ev.next(RESUMES)
    finally:
        restarted.channel.close()
    assert change["id"] == str(later), f"{RESUMES}: after the restart got {change}"
    assert change["data"]["metaData"]["progress"] == 2, f"{RESUMES}: {change}"
