"""Counts of jobs per kind and status: CountJobs, GET /api/v1/counts and the /metrics
gauge `jobstatus_jobs`, against a real server on each database.

The counts are kept by the store in each write's transaction, so every answer is
exact as of the revision it names: after creates and transitions, after a
time-driven move (a done delivery that becomes delete by itself), per tenant, and
after a kill -9 and a restart. The module's tests share one server, so each
compares the counts before and after its own writes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from jobstatus.v1 import counts_pb2, counts_pb2_grpc, map_import_pb2_grpc, watch_pb2
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import KINDS
from jobstatus_server.usecases.counts import counted_statuses
from tests.conftest import Databases, Stubs
from tests.restkit import keyed_server, metadata
from tests.serverproc import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"
LIFETIME = 1  # seconds a done delivery stays in the cache, then becomes delete
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
BEAT = duration_pb2.Duration(nanos=500_000_000)
Tally = dict[tuple[str, str], int]  # (kind, status name) -> jobs


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, ["--delivery-cache-lifetime", str(LIFETIME)]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def counter(stubs: Stubs) -> counts_pb2_grpc.JobCountServiceStub:
    return counts_pb2_grpc.JobCountServiceStub(stubs.channel)


def _tally(response: counts_pb2.CountJobsResponse) -> Tally:
    return {(c.kind, c.status): c.count for c in response.counts}


def _counts(
    counter: counts_pb2_grpc.JobCountServiceStub, min_revision: int = 0, *kinds: str
) -> counts_pb2.CountJobsResponse:
    request = counts_pb2.CountJobsRequest(kinds=kinds, min_revision=min_revision)
    response: counts_pb2.CountJobsResponse = counter.CountJobs(request, timeout=10)
    return response


def _moved(before: Tally, after: Tally) -> Tally:
    """What changed between two tallies: (kind, status) -> difference, zeros left out."""
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def _create_map(stubs: Stubs, job_id: str) -> mi.MapImport:
    request = mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    return stubs.maps.CreateMapImport(request).map_import


def _map_status(stubs: Stubs, job_id: str, status: mi.MapImportStatus.ValueType) -> int:
    job = mi.MapImport(import_request_id=job_id, status=status)
    request = mi.UpdateMapImportRequest(
        map_import=job, update_mask=field_mask_pb2.FieldMask(paths=["status"])
    )
    return int(stubs.maps.UpdateMapImport(request).map_import.revision)


def test_every_kind_and_status_is_listed_in_order_zeros_included(
    counter: counts_pb2_grpc.JobCountServiceStub,
) -> None:
    response = _counts(counter)
    expected = [
        (kind.name, kind.status_enum.values_by_number[status].name)
        for kind in KINDS.values()
        for status in counted_statuses(kind)
    ]
    assert [(c.kind, c.status) for c in response.counts] == expected
    assert ("dataset", "DATASET_IMPORT_STATUS_UNSPECIFIED") in expected  # before a first run
    assert ("map_import", "MAP_IMPORT_STATUS_UNSPECIFIED") not in expected
    only = _counts(counter, 0, "dataset", "map_import")
    assert {c.kind for c in only.counts} == {"map_import", "dataset"}
    assert only.counts[0].kind == "map_import"  # the kind table's order, not the request's


def test_creates_and_transitions_move_the_counts_exactly(
    stubs: Stubs, counter: counts_pb2_grpc.JobCountServiceStub, uid: str
) -> None:
    before = _tally(_counts(counter))
    for n in range(3):
        _create_map(stubs, f"{uid}-{n}")
    _map_status(stubs, f"{uid}-0", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    _map_status(stubs, f"{uid}-1", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    _map_status(stubs, f"{uid}-1", mi.MAP_IMPORT_STATUS_PAUSE)
    last = _map_status(stubs, f"{uid}-2", mi.MAP_IMPORT_STATUS_CANCEL)
    # A progress update changes no status: no count moves.
    progress = mi.MapImport(
        import_request_id=f"{uid}-0", meta_data=mi.MapImportMetaData(progress=40)
    )
    stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=progress,
            update_mask=field_mask_pb2.FieldMask(paths=["meta_data.progress"]),
        )
    )
    dataset = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset()))
    response = _counts(counter, last)
    assert response.revision >= last
    assert _moved(before, _tally(response)) == {
        ("map_import", "MAP_IMPORT_STATUS_IN_PROGRESS"): 1,
        ("map_import", "MAP_IMPORT_STATUS_PAUSE"): 1,
        ("map_import", "MAP_IMPORT_STATUS_CANCEL"): 1,
        ("dataset", "DATASET_IMPORT_STATUS_UNSPECIFIED"): 1,
    }
    stubs.datasets.StartDatasetImport(
        ds.StartDatasetImportRequest(dataset_id=dataset.dataset.dataset_id)
    )
    after = _tally(_counts(counter))
    assert _moved(before, after) == {
        ("map_import", "MAP_IMPORT_STATUS_IN_PROGRESS"): 1,
        ("map_import", "MAP_IMPORT_STATUS_PAUSE"): 1,
        ("map_import", "MAP_IMPORT_STATUS_CANCEL"): 1,
        ("dataset", "DATASET_IMPORT_STATUS_IN_PROGRESS"): 1,
    }


def test_a_time_driven_move_is_counted(
    stubs: Stubs, counter: counts_pb2_grpc.JobCountServiceStub, uid: str
) -> None:
    before = _tally(_counts(counter, 0, "prepared_delivery"))
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    done = stubs.deliveries.UpdatePreparedDelivery(
        dl.UpdatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(
                catalog_id=uid,
                status=dl.PREPARED_DELIVERY_STATUS_DONE,
                artifacts=[
                    dl.Artifact(item_key="a", artifact_type="gpkg", url="https://c.example/a")
                ],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status", "artifacts"]),
        )
    ).prepared_delivery
    assert _moved(before, _tally(_counts(counter, done.revision, "prepared_delivery"))) == {
        ("prepared_delivery", "PREPARED_DELIVERY_STATUS_DONE"): 1
    }
    # The server moves it to delete by itself: wait for that event (bounded by the call's
    # deadline), then count as of its revision.
    watch = stubs.deliveries.WatchPreparedDeliveryStatus(
        dl.WatchPreparedDeliveryStatusRequest(
            catalog_ids=[uid], start_revision=done.revision, heartbeat_interval=BEAT
        ),
        timeout=LIFETIME + 20,
    )
    moved = next(event for event in watch if event.type == CHANGE)
    watch.cancel()  # type: ignore[no-untyped-call]
    assert moved.prepared_delivery.status == dl.PREPARED_DELIVERY_STATUS_DELETE
    assert _moved(before, _tally(_counts(counter, moved.revision, "prepared_delivery"))) == {
        ("prepared_delivery", "PREPARED_DELIVERY_STATUS_DELETE"): 1
    }


def test_rest_answers_the_same_counts_with_labels(
    stubs: Stubs, server: ServerProcess, counter: counts_pb2_grpc.JobCountServiceStub, uid: str
) -> None:
    revision = _create_map(stubs, uid).revision
    answer = httpx.get(
        f"{server.http_url}/api/v1/counts",
        params={"kind": "map_import"},
        headers={"X-Min-Revision": str(revision)},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    grpc_answer = _counts(counter, revision, "map_import")
    assert body["revision"] >= revision
    assert [(c["kind"], c["status"]) for c in body["counts"]] == [
        (c.kind, c.status) for c in grpc_answer.counts
    ]
    labels = {c["status"]: c["label"] for c in body["counts"]}
    assert labels["MAP_IMPORT_STATUS_IN_PROGRESS"] == "InProgress"
    assert labels["MAP_IMPORT_STATUS_DONE"] == "Done"
    if body["revision"] == grpc_answer.revision:
        assert {(c["kind"], c["status"]): c["count"] for c in body["counts"]} == _tally(grpc_answer)
    every = httpx.get(f"{server.http_url}/api/v1/counts").json()
    assert {c["kind"] for c in every["counts"]} == set(KINDS)
    both = httpx.get(f"{server.http_url}/api/v1/counts?kind=dataset,catalog_import").json()
    assert both["counts"][0]["kind"] == "dataset"
    assert {c["kind"] for c in both["counts"]} == {"dataset", "catalog_import"}


def test_bad_input_gets_the_right_code_and_body(
    server: ServerProcess, counter: counts_pb2_grpc.JobCountServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _counts(counter, 0, "map_import", "spaceship")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spaceship" in str(raised.value.details())
    with pytest.raises(grpc.RpcError) as raised:
        _counts(counter, -1)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ahead = _counts(counter).revision + 1000
    with pytest.raises(grpc.RpcError) as raised:
        counter.CountJobs(counts_pb2.CountJobsRequest(min_revision=ahead), timeout=1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    answer = httpx.get(f"{server.http_url}/api/v1/counts?kind=spaceship")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert "kind: unknown kind 'spaceship'" in error["message"]
    answer = httpx.get(f"{server.http_url}/api/v1/counts", headers={"X-Min-Revision": "x"})
    assert answer.status_code == 400, answer.text


def test_the_metrics_gauge_sums_every_tenant(
    stubs: Stubs, server: ServerProcess, counter: counts_pb2_grpc.JobCountServiceStub, uid: str
) -> None:
    _create_map(stubs, uid)
    _map_status(stubs, uid, mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    text = httpx.get(f"{server.http_url}/metrics").text
    gauge = {
        (kind, status): int(float(value))
        for kind, status, value in re.findall(
            r'^jobstatus_jobs\{kind="(\w+)",status="(\w+)"\} (\S+)$', text, re.MULTILINE
        )
    }
    # One tenant here (the open server's): the gauge is its counts, every kind listed.
    assert gauge == _tally(_counts(counter))
    assert gauge[("map_import", "MAP_IMPORT_STATUS_IN_PROGRESS")] >= 1


def test_grpcurl_lists_and_calls_the_service(server: ServerProcess) -> None:
    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", server.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert "jobstatus.v1.JobCountService" in listed
    called = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"kinds": ["catalog_import"]}',
            server.address,
            "jobstatus.v1.JobCountService/CountJobs",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(called.stdout)
    assert [c["status"] for c in answer["counts"]][:2] == [
        "CATALOG_IMPORT_STATUS_NOT_FOUND",
        "CATALOG_IMPORT_STATUS_WAITING",
    ]
    health = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"service": "jobstatus.v1.JobCountService"}',
            server.address,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_counts_are_exact_after_a_kill_and_a_restart(
    stubs: Stubs, server: ServerProcess, uid: str
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        before = _counts(counts_pb2_grpc.JobCountServiceStub(channel))
    _create_map(stubs, uid)
    last = _map_status(stubs, uid, mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    server.kill()
    server.start()
    with grpc.insecure_channel(server.address) as channel:
        after = _counts(counts_pb2_grpc.JobCountServiceStub(channel), last)
    assert after.revision == last
    assert _moved(_tally(before), _tally(after)) == {
        ("map_import", "MAP_IMPORT_STATUS_IN_PROGRESS"): 1
    }


def test_each_tenant_counts_its_own_jobs(databases: Databases) -> None:
    keys = {
        "a": ("acme", ["read", "write"]),
        "b": ("bolt", ["read", "write"]),
        "w": ("acme", ["write"]),
    }
    with (
        keyed_server(databases.new("tenants"), keys) as keyed,
        grpc.insecure_channel(keyed.server.address) as channel,
    ):
        writer = map_import_pb2_grpc.MapImportServiceStub(channel)
        counter = counts_pb2_grpc.JobCountServiceStub(channel)
        for n in range(2):
            writer.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=f"a{n}")),
                metadata=metadata(keyed.keys["a"]),
            )
        revision = writer.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="b0")),
            metadata=metadata(keyed.keys["b"]),
        ).map_import.revision
        start = "MAP_IMPORT_STATUS_START"
        for key, jobs in (("a", 2), ("b", 1)):
            response = counter.CountJobs(
                counts_pb2.CountJobsRequest(kinds=["map_import"], min_revision=revision),
                metadata=metadata(keyed.keys[key]),
            )
            assert _tally(response)[("map_import", start)] == jobs, key
            answer = httpx.get(
                f"{keyed.server.http_url}/api/v1/counts?kind=map_import",
                headers={"x-api-key": keyed.keys[key]},
            ).json()
            assert {c["status"]: c["count"] for c in answer["counts"]}[start] == jobs
        with pytest.raises(grpc.RpcError) as raised:
            counter.CountJobs(counts_pb2.CountJobsRequest())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert httpx.get(f"{keyed.server.http_url}/api/v1/counts").status_code == 401
        # The READ scope, as every Get: a write-only key may not count.
        with pytest.raises(grpc.RpcError) as raised:
            counter.CountJobs(counts_pb2.CountJobsRequest(), metadata=metadata(keyed.keys["w"]))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        refused = httpx.get(
            f"{keyed.server.http_url}/api/v1/counts", headers={"x-api-key": keyed.keys["w"]}
        )
        assert refused.status_code == 403
        text = httpx.get(f"{keyed.server.http_url}/metrics").text
        assert f'jobstatus_jobs{{kind="map_import",status="{start}"}} 3.0' in text


def _pushed(lines: Iterator[str], name: str) -> dict[str, Any]:
    """The data of the next server-sent event called `name` (others skipped); the
    stream's read timeout bounds the wait."""
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == name:
            data: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return data
    raise AssertionError(f"the stream ended before an event {name!r}")


def test_the_counts_push_follows_the_store(
    stubs: Stubs, server: ServerProcess, counter: counts_pb2_grpc.JobCountServiceStub, uid: str
) -> None:
    url = f"{server.http_url}/api/v1/counts/watch?kind=map_import&heartbeat=0.5"
    with httpx.stream("GET", url, timeout=httpx.Timeout(10)) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        first = _pushed(lines, "counts")
        assert {c["kind"] for c in first["counts"]} == {"map_import"}
        beat = _pushed(lines, "heartbeat")  # nothing changed: a heartbeat, no counts
        assert beat["revision"] == first["revision"]
        revision = _create_map(stubs, uid).revision
        pushed = _pushed(lines, "counts")
        while pushed["revision"] < revision:
            pushed = _pushed(lines, "counts")
        expected = _counts(counter, revision, "map_import")
        if expected.revision == pushed["revision"]:
            assert {(c["kind"], c["status"]): c["count"] for c in pushed["counts"]} == _tally(
                expected
            )
    refused = httpx.get(f"{server.http_url}/api/v1/counts/watch?kind=nope", timeout=10)
    assert refused.status_code == 400
