"""Tenant isolation: 2 tenants x read and write keys x every RPC and every REST path.

Tenant `alpha` owns one job of each kind. Only alpha's keys see it or change it,
and only with the right scope: a read key never writes, a write key never reads,
and `beta`'s keys get exactly what they would get if the job did not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from tests.conftest import Stubs
from tests.restkit import Keyed, keyed_server, metadata, sse_events

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
ABSENT = grpc.StatusCode.NOT_FOUND
KEYS = {
    "alpha-read": ("alpha", ["read"]),
    "alpha-write": ("alpha", ["write"]),
    "beta-read": ("beta", ["read"]),
    "beta-write": ("beta", ["write"]),
    "alpha-admin": ("alpha", ["read", "write"]),
    "beta-admin": ("beta", ["read", "write"]),
}
MATRIX_KEYS = ["alpha-read", "alpha-write", "beta-read", "beta-write"]


@pytest.fixture(scope="module")
def keyed(database_url: str) -> Iterator[Keyed]:
    """On SQLite and on PostgreSQL (conftest's `database_url`)."""
    with keyed_server(database_url, KEYS, "--dataset-rate-interval", "0") as server:
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


@dataclass
class Owned:
    """alpha's jobs, one per kind."""

    map_id: str
    delivery_id: str
    dataset_id: str
    idle_dataset_id: str  # no run yet: StartDatasetImport may start one
    catalog_id: str


@pytest.fixture(scope="module")
def owned(keyed: Keyed, stubs: Stubs) -> Owned:
    md = metadata(keyed.keys["alpha-admin"])
    map_id = f"m-{uuid.uuid4().hex[:8]}"
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=map_id)), metadata=md
    )
    delivery_id = f"d-{uuid.uuid4().hex[:8]}"
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=delivery_id)
        ),
        metadata=md,
    )
    dataset = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset()), metadata=md
    ).dataset
    stubs.datasets.StartDatasetImport(
        ds.StartDatasetImportRequest(dataset_id=dataset.dataset_id), metadata=md
    )
    idle = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset()), metadata=md
    ).dataset
    catalog = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS)),
        metadata=md,
    ).catalog_import
    return Owned(map_id, delivery_id, dataset.dataset_id, idle.dataset_id, catalog.id)


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return error.code()
    return OK


def _expected(key: str, scope: str, on_alpha_job: bool) -> grpc.StatusCode:
    tenant, scopes = KEYS[key]
    if scope not in scopes:
        return DENIED
    return ABSENT if on_alpha_job and tenant != "alpha" else OK


# Each RPC: (scope, whether it names alpha's job, the call with metadata).
Rpc = Callable[[Stubs, Owned, tuple[tuple[str, str], ...]], Any]


def _rpcs() -> dict[str, tuple[str, bool, Rpc]]:
    def new_id() -> str:
        return f"n-{uuid.uuid4().hex[:8]}"

    return {
        "CreateMapImport": (
            "write",
            False,
            lambda s, o, md: s.maps.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=new_id())),
                metadata=md,
            ),
        ),
        "UpdateMapImport": (
            "write",
            True,
            lambda s, o, md: s.maps.UpdateMapImport(
                mi.UpdateMapImportRequest(
                    map_import=mi.MapImport(
                        import_request_id=o.map_id, meta_data=mi.MapImportMetaData(progress=1)
                    )
                ),
                metadata=md,
            ),
        ),
        "GetMapImportStatus": (
            "read",
            True,
            lambda s, o, md: s.maps.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id=o.map_id), metadata=md
            ),
        ),
        "ListMapImports": (
            "read",
            False,
            lambda s, o, md: s.maps.ListMapImports(mi.ListMapImportsRequest(), metadata=md),
        ),
        "CreatePreparedDelivery": (
            "write",
            False,
            lambda s, o, md: s.deliveries.CreatePreparedDelivery(
                dl.CreatePreparedDeliveryRequest(
                    prepared_delivery=dl.PreparedDelivery(catalog_id=new_id())
                ),
                metadata=md,
            ),
        ),
        "UpdatePreparedDelivery": (
            "write",
            True,
            lambda s, o, md: s.deliveries.UpdatePreparedDelivery(
                dl.UpdatePreparedDeliveryRequest(
                    prepared_delivery=dl.PreparedDelivery(catalog_id=o.delivery_id, progress=1),
                    update_mask=field_mask_pb2.FieldMask(paths=["progress"]),
                ),
                metadata=md,
            ),
        ),
        "GetPreparedDeliveryStatus": (
            "read",
            True,
            lambda s, o, md: s.deliveries.GetPreparedDeliveryStatus(
                dl.GetPreparedDeliveryStatusRequest(catalog_id=o.delivery_id), metadata=md
            ),
        ),
        "ListPreparedDeliveries": (
            "read",
            False,
            lambda s, o, md: s.deliveries.ListPreparedDeliveries(
                dl.ListPreparedDeliveriesRequest(), metadata=md
            ),
        ),
        "CreateDataset": (
            "write",
            False,
            lambda s, o, md: s.datasets.CreateDataset(
                ds.CreateDatasetRequest(dataset=ds.Dataset()), metadata=md
            ),
        ),
        "StartDatasetImport": (
            "write",
            True,
            lambda s, o, md: s.datasets.StartDatasetImport(
                ds.StartDatasetImportRequest(
                    dataset_id=o.idle_dataset_id, request_id="isolation-start"
                ),
                metadata=md,
            ),
        ),
        "UpdateDatasetImport": (
            "write",
            True,
            lambda s, o, md: s.datasets.UpdateDatasetImport(
                ds.UpdateDatasetImportRequest(
                    dataset_id=o.dataset_id,
                    step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
                    entries=[ds.DatasetLogEntry(detail="x", level=ds.DATASET_LOG_LEVEL_INFO)],
                ),
                metadata=md,
            ),
        ),
        "GetDatasetStatus": (
            "read",
            True,
            lambda s, o, md: s.datasets.GetDatasetStatus(
                ds.GetDatasetStatusRequest(dataset_id=o.dataset_id), metadata=md
            ),
        ),
        "ListDatasets": (
            "read",
            False,
            lambda s, o, md: s.datasets.ListDatasets(ds.ListDatasetsRequest(), metadata=md),
        ),
        "CreateImport": (
            "write",
            False,
            lambda s, o, md: s.catalog.CreateImport(
                cat.CreateImportRequest(
                    catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PANELS)
                ),
                metadata=md,
            ),
        ),
        "UpdateImport": (
            "write",
            True,
            lambda s, o, md: s.catalog.UpdateImport(
                cat.UpdateImportRequest(
                    catalog_import=cat.CatalogImport(id=o.catalog_id, message="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=["message"]),
                ),
                metadata=md,
            ),
        ),
        "GetImportStatus": (
            "read",
            True,
            lambda s, o, md: s.catalog.GetImportStatus(
                cat.GetImportStatusRequest(id=o.catalog_id), metadata=md
            ),
        ),
        "ListImports": (
            "read",
            False,
            lambda s, o, md: s.catalog.ListImports(cat.ListImportsRequest(), metadata=md),
        ),
        "GetMapImportHistory": (
            "read",
            True,
            lambda s, o, md: s.maps.GetMapImportHistory(
                mi.GetMapImportHistoryRequest(import_request_id=o.map_id), metadata=md
            ),
        ),
        "GetPreparedDeliveryHistory": (
            "read",
            True,
            lambda s, o, md: s.deliveries.GetPreparedDeliveryHistory(
                dl.GetPreparedDeliveryHistoryRequest(catalog_id=o.delivery_id), metadata=md
            ),
        ),
        "GetDatasetHistory": (
            "read",
            True,
            lambda s, o, md: s.datasets.GetDatasetHistory(
                ds.GetDatasetHistoryRequest(dataset_id=o.dataset_id), metadata=md
            ),
        ),
        "GetImportHistory": (
            "read",
            True,
            lambda s, o, md: s.catalog.GetImportHistory(
                cat.GetImportHistoryRequest(id=o.catalog_id), metadata=md
            ),
        ),
    }


RPCS = _rpcs()


def _snapshot(stubs: Stubs, keyed: Keyed, owned: Owned) -> list[Any]:
    md = metadata(keyed.keys["alpha-admin"])
    return [
        stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=owned.map_id), metadata=md
        ),
        stubs.deliveries.GetPreparedDeliveryStatus(
            dl.GetPreparedDeliveryStatusRequest(catalog_id=owned.delivery_id), metadata=md
        ),
        stubs.datasets.GetDatasetStatus(
            ds.GetDatasetStatusRequest(dataset_id=owned.dataset_id), metadata=md
        ),
        stubs.datasets.GetDatasetStatus(
            ds.GetDatasetStatusRequest(dataset_id=owned.idle_dataset_id), metadata=md
        ),
        stubs.catalog.GetImportStatus(cat.GetImportStatusRequest(id=owned.catalog_id), metadata=md),
    ]


def test_every_rpc_of_every_service_is_in_the_matrix() -> None:
    names = {
        method.name
        for module in (mi, dl, ds, cat)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    watches = {n for n in names if n.startswith("Watch")}
    assert names - watches == set(RPCS)
    assert len(watches) == 4  # in test_watch_rpc_isolation


@pytest.mark.parametrize("key", MATRIX_KEYS)
@pytest.mark.parametrize("rpc", list(RPCS))
def test_rpc_isolation(keyed: Keyed, stubs: Stubs, owned: Owned, rpc: str, key: str) -> None:
    scope, on_alpha_job, call = RPCS[rpc]
    before = _snapshot(stubs, keyed, owned)
    for bearer in (False, True):
        md = metadata(keyed.keys[key], bearer=bearer)
        code = _code(lambda md=md: call(stubs, owned, md))  # type: ignore[misc]
        assert code == _expected(key, scope, on_alpha_job), (rpc, key, bearer)
    if KEYS[key][0] != "alpha" or scope not in KEYS[key][1]:
        assert _snapshot(stubs, keyed, owned) == before  # nothing of alpha's changed


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_list_isolation(keyed: Keyed, stubs: Stubs, owned: Owned, key: str) -> None:
    md = metadata(keyed.keys[key])
    if "read" not in KEYS[key][1]:
        return  # refused: test_rpc_isolation
    sees = KEYS[key][0] == "alpha"
    maps = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000), metadata=md)
    assert (owned.map_id in {j.import_request_id for j in maps.map_imports}) == sees
    deliveries = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(page_size=1000), metadata=md
    )
    found = {j.catalog_id for j in deliveries.prepared_deliveries}
    assert (owned.delivery_id in found) == sees
    datasets = stubs.datasets.ListDatasets(ds.ListDatasetsRequest(page_size=1000), metadata=md)
    assert (owned.dataset_id in {j.dataset_id for j in datasets.datasets}) == sees
    imports = stubs.catalog.ListImports(cat.ListImportsRequest(page_size=1000), metadata=md)
    assert (owned.catalog_id in {j.id for j in imports.catalog_imports}) == sees


def _first_events(stream: Any, count: int) -> list[Any]:
    events = []
    for event in stream:
        events.append(event)
        if len(events) == count:
            break
    stream.cancel()
    return events


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_watch_rpc_isolation(keyed: Keyed, stubs: Stubs, owned: Owned, key: str) -> None:
    md = metadata(keyed.keys[key])
    watches: list[tuple[Any, Any]] = [
        (
            stubs.maps.WatchMapImportStatus,
            mi.WatchMapImportStatusRequest(import_request_ids=[owned.map_id]),
        ),
        (
            stubs.deliveries.WatchPreparedDeliveryStatus,
            dl.WatchPreparedDeliveryStatusRequest(catalog_ids=[owned.delivery_id]),
        ),
        (
            stubs.datasets.WatchDatasetStatus,
            ds.WatchDatasetStatusRequest(dataset_ids=[owned.dataset_id]),
        ),
        (stubs.catalog.WatchImportStatus, cat.WatchImportStatusRequest(ids=[owned.catalog_id])),
    ]
    for method, request in watches:
        stream = method(request, metadata=md, timeout=10)
        if "read" not in KEYS[key][1]:
            assert _code(lambda s=stream: next(iter(s))) == DENIED  # type: ignore[misc]
            continue
        first = _first_events(stream, 1)[0]
        # alpha's key gets the job's state first; beta's key sees nothing: only the marker.
        expected = (
            watch_pb2.WATCH_EVENT_TYPE_STATE
            if KEYS[key][0] == "alpha"
            else watch_pb2.WATCH_EVENT_TYPE_SYNCED
        )
        assert first.type == expected, (method, key)


# --- REST ----------------------------------------------------------------------------------


def _paths(owned: Owned) -> dict[str, tuple[str, Callable[[str], dict[str, str]], int, int]]:
    """path: (url, headers for a key, status for the owner, status for another tenant)."""

    def getapp(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def woosmap(key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def elevate(key: str) -> dict[str, str]:
        return {"api-key": key}

    return {
        "map v1": (f"/api/v1/map/import/status/{owned.map_id}", getapp, 200, 200),
        "map v2": (f"/api/v2/map/import/status/{owned.map_id}", woosmap, 200, 200),
        "delivery": (f"/api/v1/delivery/preparedDelivery/{owned.delivery_id}", getapp, 200, 404),
        "dataset": (f"/datasets/{owned.dataset_id}/status", woosmap, 200, 404),
        "catalog": (f"/api/v2/import/status/{owned.catalog_id}", elevate, 200, 200),
    }


def _sees_alpha_job(name: str, response: httpx.Response, owned: Owned) -> bool:
    body = response.json()
    if name.startswith("map"):
        return bool(body.get("importRequestId") == owned.map_id)
    if name == "catalog":
        return bool(body["status"] != "NOT_FOUND")
    return response.status_code == 200


@pytest.mark.parametrize("key", MATRIX_KEYS)
@pytest.mark.parametrize("name", ["map v1", "map v2", "delivery", "dataset", "catalog"])
def test_rest_isolation(
    keyed: Keyed, http: httpx.Client, owned: Owned, name: str, key: str
) -> None:
    url, headers, owner_status, other_status = _paths(owned)[name]
    tenant, scopes = KEYS[key]
    response = http.get(url, headers=headers(keyed.keys[key]))
    if "read" not in scopes:
        assert response.status_code == 403, response.text
        return
    assert response.status_code == (owner_status if tenant == "alpha" else other_status)
    assert _sees_alpha_job(name, response, owned) == (tenant == "alpha")


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_sse_isolation(keyed: Keyed, http: httpx.Client, owned: Owned, key: str) -> None:
    url = f"/api/v1/watch/map_import?ids={owned.map_id}&heartbeat=0.5"
    tenant, scopes = KEYS[key]
    with http.stream("GET", url, headers={"x-api-key": keyed.keys[key]}) as response:
        if "read" not in scopes:
            assert response.status_code == 403
            return
        assert response.status_code == 200
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if "event: synced" in text:
                break
    names = [e["event"] for e in sse_events(text)]
    assert names == (["state", "synced"] if tenant == "alpha" else ["synced"])


def test_the_same_id_in_two_tenants_is_two_jobs(keyed: Keyed, stubs: Stubs) -> None:
    job_id = f"same-{uuid.uuid4().hex[:8]}"
    for tenant in ("alpha", "beta"):
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
            metadata=metadata(keyed.keys[f"{tenant}-admin"]),
        )
    stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_CANCEL)
        ),
        metadata=metadata(keyed.keys["beta-admin"]),
    )
    for tenant, status in (
        ("alpha", mi.MAP_IMPORT_STATUS_START),
        ("beta", mi.MAP_IMPORT_STATUS_CANCEL),
    ):
        got = stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=job_id),
            metadata=metadata(keyed.keys[f"{tenant}-read"]),
        )
        assert got.map_import.status == status
