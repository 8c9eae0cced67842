"""Every documented error status of every path, with its body, on a server with API keys.

Also the gRPC side of the same keys: UNAUTHENTICATED and PERMISSION_DENIED with
ErrorInfo. The dataset path's rate limit is 1 request per second per key here
(5 s by default) and its quota 2 requests per key per day, so both are quick to hit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.access import auth
from jobstatus_server.contract.errors import HOW_TO_PASS_A_KEY
from tests.conftest import Databases, Stubs
from tests.restkit import Keyed, keyed_server, metadata
from tests.rpcerrors import fails

KEYS = {
    "rw": ("acme", ["read", "write"]),
    "w": ("acme", ["write"]),
    "other": ("globex", ["read"]),
    "d404": ("acme", ["read"]),
    "d422": ("acme", ["read"]),
    "d429": ("acme", ["read"]),
    "d402": ("acme", ["read"]),
    "query": ("acme", ["read"]),
}
WRONG_SECRET = "jsk_0123456789abcdef_" + "A" * 43


@pytest.fixture(scope="module")
def keyed(databases: Databases) -> Iterator[Keyed]:
    """On SQLite and on PostgreSQL (conftest's `databases`)."""
    args = ("--dataset-rate-interval", "1", "--dataset-quota", "2", "--key-refresh", "0.5")
    with keyed_server(databases.new("keyed"), KEYS, *args) as server:
        yield server


@pytest.fixture(scope="module")
def stubs(keyed: Keyed) -> Iterator[Stubs]:
    connected = Stubs.connect(keyed.server.address)
    yield connected
    connected.channel.close()


@pytest.fixture(scope="module")
def http(keyed: Keyed) -> Iterator[httpx.Client]:
    with keyed.http() as client:
        yield client


@pytest.fixture(scope="module")
def dataset_id(keyed: Keyed, stubs: Stubs) -> str:
    md = metadata(keyed.keys["rw"])
    created = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset()), metadata=md
    )
    job_id = created.dataset.dataset_id
    stubs.datasets.StartDatasetImport(ds.StartDatasetImportRequest(dataset_id=job_id), metadata=md)
    return job_id


def _json(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# --- GetApp: map import and prepared delivery ---------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/map/import/status/m-1",
        "/api/v2/map/import/status/m-1",
        "/api/v1/delivery/preparedDelivery/d-1?source=cache",
    ],
)
def test_getapp_paths_401_and_403(keyed: Keyed, http: httpx.Client, path: str) -> None:
    missing = _json(http.get(path), 401)
    assert missing == {
        "statusCode": 401,
        "message": f"this call needs an API key: {HOW_TO_PASS_A_KEY}",
    }
    for headers in (
        {"x-api-key": WRONG_SECRET},
        {"authorization": f"Bearer {WRONG_SECRET}"},
        {"authorization": f"Basic {keyed.keys['rw']}"},
        {"api-key": keyed.keys["rw"]},  # the catalog path's header, not this one's
    ):
        body = _json(http.get(path, headers=headers), 401)
        assert body["statusCode"] == 401, headers
    denied = _json(http.get(path, headers={"x-api-key": keyed.keys["w"]}), 403)
    assert denied == {
        "statusCode": 403,
        "message": f"API key {keyed.keys['w'].split('_')[1]} does not have the read scope",
    }
    for headers in (
        {"x-api-key": keyed.keys["rw"]},
        {"authorization": f"Bearer {keyed.keys['rw']}"},
    ):
        assert http.get(path, headers=headers).status_code in (200, 404)


# --- Woosmap: dataset import --------------------------------------------------------------


def test_dataset_401_without_credentials(http: httpx.Client, dataset_id: str) -> None:
    body = _json(http.get(f"/datasets/{dataset_id}/status"), 401)
    assert body == {"detail": "Unable to locate credentials."}


def test_dataset_403_when_credentials_do_not_match(
    keyed: Keyed, http: httpx.Client, dataset_id: str
) -> None:
    path = f"/datasets/{dataset_id}/status"
    for params, headers in (
        ({"private_key": WRONG_SECRET}, {}),
        ({}, {"x-api-key": "not-a-key"}),
        ({}, {"x-api-key": keyed.keys["w"]}),  # no read scope
        ({"private_key": keyed.keys["other"]}, {}),  # another tenant's key: its dataset is absent
    ):
        response = http.get(path, params=params, headers=headers)
        if params.get("private_key") == keyed.keys["other"]:
            assert _json(response, 404) == {"details": "Dataset was not found"}
        else:
            assert _json(response, 403) == {"detail": "Credentials found, but not matching."}


def test_dataset_key_by_query_or_header(keyed: Keyed, http: httpx.Client, dataset_id: str) -> None:
    by_query = http.get(
        f"/datasets/{dataset_id}/status", params={"private_key": keyed.keys["query"]}
    )
    assert _json(by_query, 200)["status"] == "in_progress"
    time.sleep(1.05)
    by_header = http.get(
        f"/datasets/{dataset_id}/status", headers={"x-api-key": keyed.keys["query"]}
    )
    assert by_header.json() == by_query.json()


def test_dataset_404(keyed: Keyed, http: httpx.Client) -> None:
    response = http.get(
        f"/datasets/{uuid.uuid4()}/status", headers={"x-api-key": keyed.keys["d404"]}
    )
    assert _json(response, 404) == {"details": "Dataset was not found"}


def test_dataset_422_when_the_id_is_not_a_uuid(keyed: Keyed, http: httpx.Client) -> None:
    response = http.get("/datasets/not-a-uuid/status", headers={"x-api-key": keyed.keys["d422"]})
    assert _json(response, 422) == {
        "detail": [
            {
                "type": "uuid_parsing",
                "loc": ["path", "dataset_id"],
                "msg": "Input should be a valid UUID",
                "input": "not-a-uuid",
            }
        ]
    }


def test_dataset_429_with_retry_after(keyed: Keyed, http: httpx.Client, dataset_id: str) -> None:
    headers = {"x-api-key": keyed.keys["d429"]}
    assert http.get(f"/datasets/{dataset_id}/status", headers=headers).status_code == 200
    limited = http.get(f"/datasets/{dataset_id}/status", headers=headers)
    assert _json(limited, 429) == {"details": "Rate limit reached"}, "the dataset 429 body"
    assert limited.headers.get("retry-after") == "1", (
        "the dataset path's 429 says Retry-After: the seconds until the key may call again"
    )
    # Per key: another key is not held back.
    other = http.get(f"/datasets/{dataset_id}/status", headers={"x-api-key": keyed.keys["rw"]})
    assert other.status_code == 200
    time.sleep(float(limited.headers["retry-after"]) + 0.05)
    assert http.get(f"/datasets/{dataset_id}/status", headers=headers).status_code == 200


def _utc_day() -> str:
    return datetime.now(UTC).date().isoformat()


def test_dataset_402_when_the_quota_is_used_up(
    keyed: Keyed, http: httpx.Client, dataset_id: str
) -> None:
    """The quota is 2 requests per key per UTC day. When the day turns between the first
    request and the last (a run across midnight UTC), the quota rightly starts over: the
    attempt is repeated with a fresh key, wholly inside the new day."""
    for attempt in range(2):
        key = keyed.keys["d402"] if attempt == 0 else keyed.key("d402-again", "acme", ["read"])
        headers = {"x-api-key": key}
        day = _utc_day()
        answers = []
        for n in range(3):
            if n:
                time.sleep(1.05)  # past the rate limit of 1 request per second
            answers.append(http.get(f"/datasets/{dataset_id}/status", headers=headers))
        if _utc_day() == day:
            break
    else:
        raise AssertionError("the UTC day turned during both attempts")
    codes = [answer.status_code for answer in answers]
    assert codes == [200, 200, 402], f"a key's quota of 2 a day answered {codes}"
    assert _json(answers[2], 402) == {"detail": "Out of free quota."}, "the 402 body"


# --- Voyado Elevate: catalog import -------------------------------------------------------


def test_catalog_403_404_and_not_found(keyed: Keyed, http: httpx.Client, stubs: Stubs) -> None:
    created = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS)),
        metadata=metadata(keyed.keys["rw"]),
    ).catalog_import
    path = f"/api/v2/import/status/{created.id}"
    forbidden = {"message": "Api-Key could not be validated."}
    assert _json(http.get(path), 403) == forbidden
    assert _json(http.get(path, headers={"api-key": WRONG_SECRET}), 403) == forbidden
    assert _json(http.get(path, headers={"x-api-key": keyed.keys["rw"]}), 403) == forbidden
    assert _json(http.get(path, headers={"api-key": keyed.keys["w"]}), 403) == forbidden
    # A key of another cluster, on this cluster's host.
    on_acme = {"host": "acme.api.esales.example.com"}
    assert _json(http.get(path, headers={"api-key": keyed.keys["other"], **on_acme}), 403) == (
        forbidden
    )
    unknown_cluster = {"host": "initech.api.esales.example.com", "api-key": keyed.keys["rw"]}
    assert _json(http.get(path, headers=unknown_cluster), 404) == {"message": "Cluster not found."}
    ok = _json(http.get(path, headers={"api-key": keyed.keys["rw"], **on_acme}), 200)
    assert ok == {"id": created.id, "status": "WAITING", "type": "ADS"}
    missing = http.get("/api/v2/import/status/42", headers={"api-key": keyed.keys["rw"]})
    assert missing.status_code == 200, (
        f"the catalog import path answers an unknown id 200 NOT_FOUND, not {missing.status_code}"
    )
    assert _json(missing, 200) == {"id": "42", "status": "NOT_FOUND"}


# --- the SSE watch ------------------------------------------------------------------------


def test_watch_401_403_404_400(keyed: Keyed, http: httpx.Client) -> None:
    def error(response: httpx.Response, status: int) -> dict[str, str]:
        body = _json(response, status)
        assert isinstance(body, dict) and set(body) == {"error"}
        return body["error"]  # type: ignore[no-any-return]

    assert error(http.get("/api/v1/watch/map_import"), 401)["reason"] == "API_KEY_MISSING"
    denied = http.get("/api/v1/watch/map_import", headers={"x-api-key": keyed.keys["w"]})
    assert error(denied, 403)["reason"] == "SCOPE_MISSING"
    headers = {"x-api-key": keyed.keys["rw"]}
    assert error(http.get("/api/v1/watch/nothing", headers=headers), 404)["code"] == "NOT_FOUND"
    for query in ("until_settled=maybe", "start_revision=-1", "heartbeat=0"):
        response = http.get(f"/api/v1/watch/map_import?{query}", headers=headers)
        assert error(response, 400)["code"] == "INVALID_ARGUMENT", query
    ahead = http.get("/api/v1/watch/map_import", headers={**headers, "last-event-id": "999999"})
    assert error(ahead, 410)["reason"] == "REVISION_AHEAD"


# --- gRPC ---------------------------------------------------------------------------------


def test_grpc_unauthenticated_and_permission_denied(keyed: Keyed, stubs: Stubs) -> None:
    get = mi.GetMapImportStatusRequest(import_request_id="m-1")
    missing = fails(lambda: stubs.maps.GetMapImportStatus(get))
    assert missing.code == grpc.StatusCode.UNAUTHENTICATED
    assert missing.info is not None and missing.info.reason == "API_KEY_MISSING"
    invalid = fails(lambda: stubs.maps.GetMapImportStatus(get, metadata=metadata(WRONG_SECRET)))
    assert invalid.code == grpc.StatusCode.UNAUTHENTICATED
    assert invalid.info is not None and invalid.info.reason == "API_KEY_INVALID"
    denied = fails(lambda: stubs.maps.GetMapImportStatus(get, metadata=metadata(keyed.keys["w"])))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.info is not None and denied.info.reason == "SCOPE_MISSING"
    assert denied.info.domain == "jobstatus.v1", "a gRPC error's ErrorInfo domain"
    assert denied.metadata.get("required_scope") == "read", (
        f"a PERMISSION_DENIED's ErrorInfo names the required scope: metadata {denied.metadata}"
    )
    bearer = metadata(keyed.keys["rw"], bearer=True)
    found = fails(lambda: stubs.maps.GetMapImportStatus(get, metadata=bearer))
    assert found.code == grpc.StatusCode.NOT_FOUND  # authenticated: the job is just not there
    # Health and reflection need no key.
    from grpc_health.v1 import health_pb2

    assert stubs.health.Check(health_pb2.HealthCheckRequest()).status == 1


def test_a_new_key_works_at_once_and_a_revoked_one_stops(keyed: Keyed, stubs: Stubs) -> None:
    secret = keyed.key("fresh", "acme", ["read"])
    request = mi.ListMapImportsRequest()
    stubs.maps.ListMapImports(request, metadata=metadata(secret))
    key_id = secret.split("_")[1]
    assert auth.revoke_key(keyed.database_url, key_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            stubs.maps.ListMapImports(request, metadata=metadata(secret))
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the revoked key still works")


def test_metrics_cover_rpcs_requests_streams_lag_writes_and_refusals(
    keyed: Keyed, http: httpx.Client, stubs: Stubs
) -> None:
    md = metadata(keyed.keys["rw"])
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="metrics-1")),
        metadata=md,
    )
    http.get("/api/v2/map/import/status/metrics-1", headers={"x-api-key": keyed.keys["rw"]})
    get = mi.GetMapImportStatusRequest(import_request_id="metrics-1")
    fails(lambda: stubs.maps.GetMapImportStatus(get))
    fails(lambda: stubs.maps.GetMapImportStatus(get, metadata=metadata(keyed.keys["w"])))
    http.get(f"/datasets/{uuid.uuid4()}/status")
    text = http.get("/metrics").text
    for line in (
        'jobstatus_rpcs_total{code="OK",method="CreateMapImport"}',
        'jobstatus_rpcs_total{code="UNAUTHENTICATED",method="GetMapImportStatus"}',
        'jobstatus_rpc_seconds_bucket{le="0.5",method="CreateMapImport"}',
        'jobstatus_http_requests_total{code="200",method="GET",'
        'route="/api/v2/map/import/status/{importRequestId}"}',
        'jobstatus_http_requests_total{code="401",method="GET",route="/datasets/{dataset_id}/status"}',
        'jobstatus_http_seconds_bucket{le="0.5",method="GET",'
        'route="/api/v2/map/import/status/{importRequestId}"}',
        'jobstatus_writes_total{kind="map_import"}',
        'jobstatus_auth_failures_total{reason="SCOPE_MISSING"}',
        "jobstatus_watch_streams ",
        "jobstatus_http_watch_streams ",
        "jobstatus_hub_lag_revisions ",
    ):
        assert line in text, line


def test_ready_answers_with_keys_match_the_handlers(
    keyed: Keyed, http: httpx.Client, stubs: Stubs
) -> None:
    """With keys, a read the view answers at once (the key known, the job in the view)
    answers what the handler does; any other key still gets its documented error."""
    rw, w, other = keyed.keys["rw"], keyed.keys["w"], keyed.keys["other"]
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="ready-keyed")),
        metadata=metadata(rw),
    )
    path = "/api/v2/map/import/status/ready-keyed"
    # `api-key` is not read by a map path: it takes the handler's way.
    handled = http.get(path, headers={"x-api-key": rw, "api-key": "unread"})
    assert handled.status_code == 200 and handled.json()["importRequestId"] == "ready-keyed"
    for headers in ({"x-api-key": rw}, {"authorization": f"Bearer {rw}"}):
        answer = http.get(path, headers=headers)
        assert (answer.status_code, answer.content) == (200, handled.content)
    assert http.get(path, headers={"x-api-key": w}).status_code == 403
    assert http.get(path, headers={"x-api-key": WRONG_SECRET}).status_code == 401
    assert http.get(path).status_code == 401
    unknown = http.get(path, headers={"x-api-key": other})  # another tenant: no such map
    assert unknown.status_code == 200 and "importRequestId" not in unknown.json()
    made = stubs.catalog.CreateImport(
        cat.CreateImportRequest(
            catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PRODUCTS)
        ),
        metadata=metadata(rw),
    ).catalog_import
    path = f"/api/v2/import/status/{made.id}"
    handled = http.get(path, headers={"api-key": rw, "x-api-key": "unread"})
    assert handled.status_code == 200 and handled.json()["id"] == made.id
    for headers in ({"api-key": rw}, {"api-key": rw, "host": "acme.jobstatus.example.com"}):
        answer = http.get(path, headers=headers)
        assert (answer.status_code, answer.content) == (200, handled.content)
    wrong = http.get(path, headers={"api-key": rw, "host": "globex.jobstatus.example.com"})
    assert wrong.status_code == 403
    assert http.get(path, headers={"api-key": w}).status_code == 403
