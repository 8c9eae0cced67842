"""GET /api/v1/dashboard/jobs, the dashboard's server-side pages, against a real server
on each database: "active only" by default, each filter (status, id prefix, creation
time), keyset paging with tokens bound to their filter, bad input, and tenancy.

The module's tests share one server: each isolates its own jobs by an id prefix or by
a creation time after its start.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc
from tests.conftest import Databases, Stubs
from tests.restkit import keyed_server, metadata
from tests.serverproc import ServerProcess

PATH = "/api/v1/dashboard/jobs"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _create(
    stubs: Stubs, job_id: str, status: mi.MapImportStatus.ValueType = mi.MAP_IMPORT_STATUS_START
) -> int:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    )
    revision = 0
    path = {
        mi.MAP_IMPORT_STATUS_IN_PROGRESS: [mi.MAP_IMPORT_STATUS_IN_PROGRESS],
        mi.MAP_IMPORT_STATUS_CANCEL: [mi.MAP_IMPORT_STATUS_CANCEL],
        mi.MAP_IMPORT_STATUS_PAUSE: [mi.MAP_IMPORT_STATUS_IN_PROGRESS, mi.MAP_IMPORT_STATUS_PAUSE],
    }.get(status, [])
    for step in path:
        revision = stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(import_request_id=job_id, status=step),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
        ).map_import.revision
    return revision


def _get(server: ServerProcess, **query: Any) -> httpx.Response:
    return httpx.get(server.http_url + PATH, params=query, timeout=10)


def _page(server: ServerProcess, **query: Any) -> dict[str, Any]:
    answer = _get(server, **query)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [row["job"]["importRequestId"] for row in body["jobs"]]


def _all_pages(server: ServerProcess, **query: Any) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(100):
        body = _page(server, **query, page_token=token)
        ids.extend(_ids(body))
        token = body["nextPageToken"]
        if not token:
            return ids
    raise AssertionError(f"more than 100 pages: {ids}")


def test_active_only_is_the_default_newest_first(
    server: ServerProcess, stubs: Stubs, uid: str
) -> None:
    since = _iso(datetime.now(UTC))
    _create(stubs, f"{uid}-a")
    _create(stubs, f"{uid}-b", mi.MAP_IMPORT_STATUS_CANCEL)
    last = _create(stubs, f"{uid}-c", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    body = _page(server, kind="map_import", since=since)
    assert body["kind"] == "map_import"
    assert body["revision"] >= last
    assert _ids(body) == [f"{uid}-c", f"{uid}-a"]
    row = body["jobs"][0]
    assert row["revision"] == last
    assert row["job"]["status"] == "InProgress"
    assert row["updateTime"].endswith("Z")
    every = _page(server, kind="map_import", since=since, active="false")
    assert _ids(every) == [f"{uid}-c", f"{uid}-b", f"{uid}-a"]


def test_the_status_filter_takes_spellings_and_enum_names(
    server: ServerProcess, stubs: Stubs, uid: str
) -> None:
    since = _iso(datetime.now(UTC))
    _create(stubs, f"{uid}-start")
    _create(stubs, f"{uid}-pause", mi.MAP_IMPORT_STATUS_PAUSE)
    _create(stubs, f"{uid}-cancel", mi.MAP_IMPORT_STATUS_CANCEL)
    _create(stubs, f"{uid}-run", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    assert _ids(_page(server, kind="map_import", since=since, status="Pause,Start")) == [
        f"{uid}-pause",
        f"{uid}-start",
    ]
    # A settled status shows only when "active only" is off.
    assert _ids(_page(server, kind="map_import", since=since, status="Cancel")) == []
    assert _ids(
        _page(server, kind="map_import", since=since, status="MAP_IMPORT_STATUS_CANCEL", active="0")
    ) == [f"{uid}-cancel"]


def test_an_id_prefix_lists_in_id_order(server: ServerProcess, stubs: Stubs, uid: str) -> None:
    for name in ("b", "a", "c", "ab"):
        _create(stubs, f"{uid}-{name}")
    _create(stubs, f"{uid}x-other")
    assert _ids(_page(server, kind="map_import", prefix=f"{uid}-")) == [
        f"{uid}-a",
        f"{uid}-ab",
        f"{uid}-b",
        f"{uid}-c",
    ]
    assert _ids(_page(server, kind="map_import", prefix=f"{uid}-a")) == [f"{uid}-a", f"{uid}-ab"]
    assert _all_pages(server, kind="map_import", prefix=f"{uid}-", page_size=3) == [
        f"{uid}-a",
        f"{uid}-ab",
        f"{uid}-b",
        f"{uid}-c",
    ]


def test_a_time_range_bounds_the_creation_time(
    server: ServerProcess, stubs: Stubs, uid: str
) -> None:
    _create(stubs, f"{uid}-before")
    time.sleep(0.05)  # the server's clock must move between the jobs (not an assertion)
    since = datetime.now(UTC)
    _create(stubs, f"{uid}-inside")
    time.sleep(0.05)
    until = datetime.now(UTC)
    _create(stubs, f"{uid}-after")
    assert _ids(
        _page(server, kind="map_import", prefix=uid, since=_iso(since), until=_iso(until))
    ) == [f"{uid}-inside"]
    assert _ids(_page(server, kind="map_import", since=_iso(since), until=_iso(until))) == [
        f"{uid}-inside"
    ]
    assert _ids(_page(server, kind="map_import", since=_iso(until))) == [f"{uid}-after"]


def test_paging_visits_each_job_once_and_tokens_keep_their_filter(
    server: ServerProcess, stubs: Stubs, uid: str
) -> None:
    since = _iso(datetime.now(UTC))
    made = [f"{uid}-{n:02}" for n in range(7)]
    for job_id in made:
        _create(stubs, job_id)
    newest_first = list(reversed(made))
    assert _all_pages(server, kind="map_import", since=since, page_size=2) == newest_first
    assert _all_pages(server, kind="map_import", since=since, status="Start", page_size=3) == (
        newest_first
    )
    first = _page(server, kind="map_import", since=since, page_size=2)
    answer = _get(server, kind="map_import", page_size=2, page_token=first["nextPageToken"])
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("invalid request: page_token")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "kind"),
        ({"kind": "spaceship"}, "kind"),
        ({"kind": "map_import", "status": "Flying"}, "status"),
        ({"kind": "map_import", "since": "yesterday"}, "since"),
        ({"kind": "map_import", "page_size": "-1"}, "page_size"),
        ({"kind": "map_import", "active": "maybe"}, "active"),
        ({"kind": "map_import", "page_token": "made-up"}, "page_token"),
        ({"kind": "map_import", "prefix": "x" * 129}, "prefix"),
    ],
)
def test_bad_input_is_refused_with_the_field(
    server: ServerProcess, query: dict[str, str], field: str
) -> None:
    answer = _get(server, **query)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"invalid request: {field}"), error


def test_each_tenant_pages_its_own_jobs(databases: Databases) -> None:
    keys = {"a": ("acme", ["read", "write"]), "b": ("bolt", ["read", "write"])}
    with keyed_server(databases.new("pages"), keys) as keyed:
        with grpc.insecure_channel(keyed.server.address) as channel:
            maps = map_import_pb2_grpc.MapImportServiceStub(channel)
            for key, job_id in (("a", "same"), ("b", "same"), ("b", "other")):
                maps.CreateMapImport(
                    mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
                    metadata=metadata(keyed.keys[key]),
                )
        for key, expected in (("a", ["same"]), ("b", ["other", "same"])):
            answer = httpx.get(
                keyed.server.http_url + PATH,
                params={"kind": "map_import"},
                headers={"x-api-key": keyed.keys[key]},
            )
            assert _ids(answer.json()) == expected, key
        assert (
            httpx.get(keyed.server.http_url + PATH, params={"kind": "map_import"}).status_code
            == 401
        )
