"""Tenant isolation: 2 tenants x read and write keys x every RPC and every REST path.

Tenant `alpha` owns one job of each kind. Only alpha's keys see it or change it,
and only with the right scope: a read key never writes, a write key never reads,
and `beta`'s keys get exactly what they would get if the job did not exist.
"""

from __future__ import annotations

import time
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
from jobstatus_server.access import auth
from tests.conftest import Databases, Stubs
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
        expected = _expected(key, scope, on_alpha_job)
        assert code == expected, (
            f"{rpc} with key {key} ({'bearer' if bearer else 'x-api-key'}) answered {code}, "
            f"not {expected}: "
            + (
                f"a key without the {scope} scope was let through"
                if expected == DENIED
                else "a key of tenant beta reached tenant alpha's job"
                if expected == ABSENT
                else "a key was refused what its tenant and scope allow"
            )
        )
    if KEYS[key][0] != "alpha" or scope not in KEYS[key][1]:
        assert _snapshot(stubs, keyed, owned) == before, (
            f"{rpc} with key {key} changed tenant alpha's jobs"
        )


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_list_isolation(keyed: Keyed, stubs: Stubs, owned: Owned, key: str) -> None:
    md = metadata(keyed.keys[key])
    if "read" not in KEYS[key][1]:
        return  # refused: test_rpc_isolation
    sees = KEYS[key][0] == "alpha"
    why = (
        f"a list of tenant alpha (key {key}) missed alpha's job"
        if sees
        else f"a list of tenant beta (key {key}) showed tenant alpha's job"
    )
    maps = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000), metadata=md)
    assert (owned.map_id in {j.import_request_id for j in maps.map_imports}) == sees, why
    deliveries = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(page_size=1000), metadata=md
    )
    found = {j.catalog_id for j in deliveries.prepared_deliveries}
    assert (owned.delivery_id in found) == sees, why
    datasets = stubs.datasets.ListDatasets(ds.ListDatasetsRequest(page_size=1000), metadata=md)
    assert (owned.dataset_id in {j.dataset_id for j in datasets.datasets}) == sees, why
    imports = stubs.catalog.ListImports(cat.ListImportsRequest(page_size=1000), metadata=md)
    assert (owned.catalog_id in {j.id for j in imports.catalog_imports}) == sees, why


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
            code = _code(lambda s=stream: next(iter(s)))  # type: ignore[misc]
            assert code == DENIED, f"a gRPC watch let key {key} without the read scope watch"

            continue
        first = _first_events(stream, 1)[0]
        # alpha's key gets the job's state first; beta's key sees nothing: only the marker.
        expected = (
            watch_pb2.WATCH_EVENT_TYPE_STATE
            if KEYS[key][0] == "alpha"
            else watch_pb2.WATCH_EVENT_TYPE_SYNCED
        )
        assert first.type == expected, (
            f"a gRPC watch of key {key} by id of tenant alpha's job began with {first.type}"
        )


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
        assert response.status_code == 403, (
            f"REST {name} let key {key} without the read scope read: {response.text}"
        )
        return
    expected = owner_status if tenant == "alpha" else other_status
    assert response.status_code == expected, f"REST {name} with key {key}: {response.text}"
    assert _sees_alpha_job(name, response, owned) == (tenant == "alpha"), (
        f"REST {name}: a key of tenant beta read tenant alpha's job"
        if tenant != "alpha"
        else f"REST {name}: tenant alpha's key did not see its own job"
    )


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_sse_isolation(keyed: Keyed, http: httpx.Client, owned: Owned, key: str) -> None:
    url = f"/api/v1/watch/map_import?ids={owned.map_id}&heartbeat=0.5"
    tenant, scopes = KEYS[key]
    with http.stream("GET", url, headers={"x-api-key": keyed.keys[key]}) as response:
        if "read" not in scopes:
            assert response.status_code == 403, (
                f"an SSE watch let key {key} without the read scope watch"
            )
            return
        assert response.status_code == 200, f"an SSE watch refused key {key}"
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if "event: synced" in text:
                break
    names = [e["event"] for e in sse_events(text)]
    assert names == (["state", "synced"] if tenant == "alpha" else ["synced"]), (
        f"an SSE watch of tenant {tenant} by id of tenant alpha's job sent {names}"
    )


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
        md = metadata(keyed.keys[f"{tenant}-read"])
        got = stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=job_id), metadata=md
        )
        assert got.map_import.status == status, (
            f"tenant {tenant}'s job {job_id} has status {got.map_import.status}: the other "
            "tenant's job with the same id changed it"
        )
        # A list reads the jobs' rows, not the view: the update's row of the other tenant.
        listed = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000), metadata=md)
        statuses = [j.status for j in listed.map_imports if j.import_request_id == job_id]
        assert statuses == [status], (
            f"tenant {tenant}'s list shows job {job_id} with statuses {statuses}, not "
            f"[{status}]: an update of the other tenant's job with the same id reached it"
        )


# --- watches: later, resumed and all-jobs changes of another tenant --------------------------
#
# Each test writes alpha's change first and then a sentinel change of beta's, and reads beta's
# watch until the sentinel (within DEADLINE): anything of alpha's before it is a leak.

DEADLINE = 10.0
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED


def _put_map(stubs: Stubs, secret: str, job_id: str, progress: int | None = None) -> int:
    """Create (progress None) or update `job_id` with the key's tenant; its new revision."""
    md = metadata(secret)
    if progress is None:
        return int(
            stubs.maps.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
                metadata=md,
            ).map_import.revision
        )
    return int(
        stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(
                    import_request_id=job_id, meta_data=mi.MapImportMetaData(progress=progress)
                )
            ),
            metadata=md,
        ).map_import.revision
    )


def _brief(events: list[Any]) -> list[tuple[str, int, str]]:
    return [
        (watch_pb2.WatchEventType.Name(e.type), e.revision, e.map_import.import_request_id)
        for e in events
    ]


def _grpc_until(stream: Any, done: Callable[[Any], bool], what: str) -> list[Any]:
    """The events of a gRPC watch (opened with timeout=DEADLINE) up to the first for which
    `done` holds; fails with what came instead if the call ends first."""
    seen: list[Any] = []
    try:
        for event in stream:
            seen.append(event)
            if done(event):
                return seen
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        pytest.fail(f"{what} did not come: the watch ended {error.code()}; saw {_brief(seen)}")
    pytest.fail(f"{what} did not come: the watch ended; saw {_brief(seen)}")


def _watch_maps(stubs: Stubs, secret: str, ids: list[str], start: int = 0) -> Any:
    return stubs.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(import_request_ids=ids, start_revision=start),
        metadata=metadata(secret),
        timeout=DEADLINE,
    )


def _assert_no_leak(
    events: list[Any], foreign: set[int], foreign_ids: set[str], watch: str
) -> None:
    leaked = [
        (e.revision, e.map_import.import_request_id)
        for e in events
        if e.revision in foreign or e.map_import.import_request_id in foreign_ids
    ]
    assert not leaked, (
        f"{watch} of tenant beta received tenant alpha's job changes {leaked}; saw {_brief(events)}"
    )


@pytest.mark.parametrize("scope", ["by ids", "of all jobs"])
def test_a_live_watch_gets_none_of_another_tenants_later_changes(
    keyed: Keyed, stubs: Stubs, scope: str
) -> None:
    alpha, beta = keyed.keys["alpha-admin"], keyed.keys["beta-admin"]
    job_id = f"twin-{uuid.uuid4().hex[:8]}"  # the same id in both tenants
    _put_map(stubs, alpha, job_id)
    _put_map(stubs, beta, job_id)
    stream = _watch_maps(stubs, keyed.keys["beta-read"], [job_id] if scope == "by ids" else [])
    try:
        _grpc_until(stream, lambda e: e.type == SYNCED, "the synced marker")
        alpha_only = f"alpha-{uuid.uuid4().hex[:8]}"
        foreign = {_put_map(stubs, alpha, job_id, 11), _put_map(stubs, alpha, alpha_only)}
        sentinel = _put_map(stubs, beta, job_id, 22)
        events = _grpc_until(
            stream, lambda e: e.revision >= sentinel, f"beta's change at revision {sentinel}"
        )
    finally:
        stream.cancel()
    _assert_no_leak(events, foreign, {alpha_only}, f"a live gRPC watch {scope}")
    assert [(e.type, e.revision) for e in events] == [(CHANGE, sentinel)], (
        f"a live gRPC watch {scope} of tenant beta got other events than beta's change: "
        f"{_brief(events)}"
    )


@pytest.mark.parametrize("scope", ["by ids", "of all jobs"])
def test_a_watch_resumed_from_the_ring_gets_none_of_another_tenants_changes(
    keyed: Keyed, stubs: Stubs, scope: str
) -> None:
    alpha, beta = keyed.keys["alpha-admin"], keyed.keys["beta-admin"]
    job_id = f"twin-{uuid.uuid4().hex[:8]}"
    _put_map(stubs, alpha, job_id)
    start = _put_map(stubs, beta, job_id)
    alpha_only = f"alpha-{uuid.uuid4().hex[:8]}"
    foreign = {_put_map(stubs, alpha, job_id, 11), _put_map(stubs, alpha, alpha_only)}
    sentinel = _put_map(stubs, beta, job_id, 22)
    ids = [job_id] if scope == "by ids" else []
    stream = _watch_maps(stubs, keyed.keys["beta-read"], ids, start)
    try:
        events = _grpc_until(
            stream, lambda e: e.revision >= sentinel, f"beta's change at revision {sentinel}"
        )
    finally:
        stream.cancel()
    _assert_no_leak(events, foreign, {alpha_only}, f"a gRPC watch {scope} resumed from {start}")
    assert [(e.type, e.revision) for e in events] == [(CHANGE, sentinel)], (
        f"a gRPC watch {scope} of tenant beta resumed from {start} got other events than "
        f"beta's change: {_brief(events)}"
    )


def test_a_watch_resumed_from_the_event_log_gets_none_of_another_tenants_changes(
    databases: Databases,
) -> None:
    """After a restart the ring is empty: a resume reads the event log (Store.events_after)."""
    with keyed_server(databases.new("tenants-log"), KEYS) as server:
        stubs = Stubs.connect(server.server.address)
        try:
            alpha, beta = server.keys["alpha-admin"], server.keys["beta-admin"]
            job_id = "twin"
            _put_map(stubs, alpha, job_id)
            start = _put_map(stubs, beta, job_id)
            foreign = {_put_map(stubs, alpha, job_id, 11), _put_map(stubs, alpha, "alpha-only")}
            sentinel = _put_map(stubs, beta, job_id, 22)
            server.server.restart()
            for ids in ([job_id], []):
                scope = "by ids" if ids else "of all jobs"
                stream = _watch_maps(stubs, server.keys["beta-read"], ids, start)
                try:
                    events = _grpc_until(
                        stream,
                        lambda e: e.revision >= sentinel,
                        f"beta's change at revision {sentinel}",
                    )
                finally:
                    stream.cancel()
                watch = f"a gRPC watch {scope} resumed from the event log at {start}"
                _assert_no_leak(events, foreign, {"alpha-only"}, watch)
                assert [(e.type, e.revision) for e in events] == [(CHANGE, sentinel)], (
                    f"{watch} got other events than beta's change: {_brief(events)}"
                )
        finally:
            stubs.channel.close()


class _SseReader:
    """Reads one SSE response's events, each wait bounded by DEADLINE."""

    def __init__(self, response: httpx.Response) -> None:
        self.chunks = response.iter_text()
        self.text = ""
        self.taken = 0

    def until(self, done: Callable[[dict[str, str]], bool], what: str) -> list[dict[str, str]]:
        deadline = time.monotonic() + DEADLINE
        seen: list[dict[str, str]] = []
        while True:
            complete = self.text[: self.text.rfind("\n\n") + 2]
            events = sse_events(complete)
            for event in events[self.taken :]:
                self.taken += 1
                if event.get("event") != "heartbeat":
                    seen.append(event)
                if done(event):
                    return seen
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not come within {DEADLINE} s; saw {seen}")
            try:
                self.text += next(self.chunks)
            except StopIteration:
                pytest.fail(f"{what} did not come: the SSE watch ended; saw {seen}")


def _assert_no_sse_leak(
    events: list[dict[str, str]], foreign: set[int], foreign_ids: set[str], watch: str
) -> None:
    leaked = [
        e
        for e in events
        if (e.get("id", "").isdigit() and int(e["id"]) in foreign)
        or any(f'"{job_id}"' in e.get("data", "") for job_id in foreign_ids)
    ]
    assert not leaked, f"{watch} of tenant beta received tenant alpha's job changes {leaked}"


@pytest.mark.parametrize("scope", ["by ids", "of all jobs"])
@pytest.mark.parametrize("when", ["later", "resumed"])
def test_an_sse_watch_gets_none_of_another_tenants_changes(
    keyed: Keyed, stubs: Stubs, http: httpx.Client, scope: str, when: str
) -> None:
    alpha, beta = keyed.keys["alpha-admin"], keyed.keys["beta-admin"]
    job_id = f"twin-{uuid.uuid4().hex[:8]}"
    alpha_only = f"alpha-{uuid.uuid4().hex[:8]}"
    _put_map(stubs, alpha, job_id)
    start = _put_map(stubs, beta, job_id)
    url = "/api/v1/watch/map_import?heartbeat=0.5" + (f"&ids={job_id}" if scope == "by ids" else "")
    headers = {"x-api-key": keyed.keys["beta-read"]}
    foreign: set[int] = set()
    sentinel = 0
    if when == "resumed":
        foreign = {_put_map(stubs, alpha, job_id, 11), _put_map(stubs, alpha, alpha_only)}
        sentinel = _put_map(stubs, beta, job_id, 22)
        headers["last-event-id"] = str(start)
    with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        reader = _SseReader(response)
        if when == "later":
            reader.until(lambda e: e.get("event") == "synced", "the synced event")
            foreign = {_put_map(stubs, alpha, job_id, 11), _put_map(stubs, alpha, alpha_only)}
            sentinel = _put_map(stubs, beta, job_id, 22)
        events = reader.until(
            lambda e: e.get("id") == str(sentinel), f"beta's change at revision {sentinel}"
        )
    watch = f"an SSE watch {scope} ({when})"
    _assert_no_sse_leak(events, foreign, {alpha_only}, watch)
    assert [(e.get("event"), e.get("id")) for e in events] == [("change", str(sentinel))], (
        f"{watch} of tenant beta got other events than beta's change: {events}"
    )


# --- keys, request ids, histories, clusters ---------------------------------------------------


def test_a_revoked_key_is_refused_on_every_transport(
    keyed: Keyed, stubs: Stubs, http: httpx.Client, owned: Owned
) -> None:
    secret = keyed.key(f"doomed-{uuid.uuid4().hex[:8]}", "alpha", ["read"])
    key_id = secret.split("_")[1]
    get = mi.GetMapImportStatusRequest(import_request_id=owned.map_id)
    rest = f"/api/v1/map/import/status/{owned.map_id}"
    assert _code(lambda: stubs.maps.GetMapImportStatus(get, metadata=metadata(secret))) == OK
    assert http.get(rest, headers={"x-api-key": secret}).status_code == 200
    stream = _watch_maps(stubs, secret, [owned.map_id])
    watch = f"/api/v1/watch/map_import?ids={owned.map_id}&heartbeat=0.5"
    with http.stream("GET", watch, headers={"x-api-key": secret}) as response:
        sse = _SseReader(response)
        sse.until(lambda e: e.get("event") == "synced", "the SSE watch's synced event")
        _grpc_until(stream, lambda e: e.type == SYNCED, "the gRPC watch's synced marker")
        assert auth.revoke_key(keyed.database_url, key_id)
        try:
            left = list(stream)  # ends within the key refresh, or at the call's DEADLINE
            pytest.fail(f"an open gRPC watch of a revoked key ended without an error: {left}")
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (
                f"an open gRPC watch of a revoked key went on (ended {error.code()})"
            )
        sse.until(lambda e: e.get("event") == "error", "the SSE watch's error event (revoked)")
    # The stream's end shows the server re-read the keys: the key is refused from now on.
    code = _code(lambda: stubs.maps.GetMapImportStatus(get, metadata=metadata(secret)))
    assert code == grpc.StatusCode.UNAUTHENTICATED, f"a revoked key still reads over gRPC ({code})"
    for headers in ({"x-api-key": secret}, {"authorization": f"Bearer {secret}"}):
        answer = http.get(rest, headers=headers)
        assert answer.status_code == 401, f"a revoked key still reads over REST: {answer.text}"


def test_a_request_id_is_its_own_tenants(keyed: Keyed, stubs: Stubs) -> None:
    """A create's request id makes it idempotent within a tenant only."""
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    made: dict[str, str] = {}
    for tenant in ("alpha", "beta"):
        job_id = f"{tenant}-{uuid.uuid4().hex[:8]}"
        try:
            made[tenant] = stubs.maps.CreateMapImport(
                mi.CreateMapImportRequest(
                    request_id=request_id, map_import=mi.MapImport(import_request_id=job_id)
                ),
                metadata=metadata(keyed.keys[f"{tenant}-admin"]),
            ).map_import.import_request_id
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            pytest.fail(
                f"tenant {tenant}'s create with request id {request_id}, used by another "
                f"tenant, was refused: {error.code()} {error.details()}"
            )
        assert made[tenant] == job_id, (
            f"tenant {tenant}'s create with request id {request_id} (used by the other "
            f"tenant) answered job {made[tenant]!r}, not its own {job_id!r}"
        )
    datasets = {
        tenant: stubs.datasets.CreateDataset(
            ds.CreateDatasetRequest(request_id=request_id, dataset=ds.Dataset()),
            metadata=metadata(keyed.keys[f"{tenant}-admin"]),
        ).dataset.dataset_id
        for tenant in ("alpha", "beta")
    }
    assert datasets["alpha"] != datasets["beta"], (
        f"tenant beta's create with request id {request_id} answered tenant alpha's "
        f"dataset {datasets['alpha']}"
    )
    code = _code(
        lambda: stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=made["alpha"]),
            metadata=metadata(keyed.keys["beta-read"]),
        )
    )
    assert code == ABSENT, "a key of tenant beta read tenant alpha's job"


def test_a_jobs_history_is_its_own_tenants(keyed: Keyed, stubs: Stubs) -> None:
    job_id = f"twin-{uuid.uuid4().hex[:8]}"
    revisions: dict[str, list[int]] = {"alpha": [], "beta": []}
    for tenant, progress in (("alpha", None), ("beta", None), ("alpha", 11), ("beta", 22)):
        revisions[tenant].append(_put_map(stubs, keyed.keys[f"{tenant}-admin"], job_id, progress))
    for tenant in ("alpha", "beta"):
        history = stubs.maps.GetMapImportHistory(
            mi.GetMapImportHistoryRequest(import_request_id=job_id),
            metadata=metadata(keyed.keys[f"{tenant}-read"]),
        )
        got = [change.revision for change in history.changes]
        assert got == revisions[tenant], (
            f"the history of tenant {tenant}'s job {job_id} is {got}, not its own changes "
            f"{revisions[tenant]}: another tenant's job with the same id is in it"
        )


def test_a_key_is_refused_on_another_tenants_cluster(
    keyed: Keyed, stubs: Stubs, http: httpx.Client
) -> None:
    beta = keyed.keys["beta-read"]
    job = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS)),
        metadata=metadata(keyed.keys["beta-admin"]),
    ).catalog_import
    url = f"/api/v2/import/status/{job.id}"
    own = http.get(url, headers={"api-key": beta, "host": "beta.jobstatus.example.com"})
    assert own.status_code == 200 and own.json()["status"] != "NOT_FOUND", own.text
    for job_id in (job.id, "no-such-import"):
        other = http.get(
            f"/api/v2/import/status/{job_id}",
            headers={"api-key": beta, "host": "alpha.jobstatus.example.com"},
        )
        assert other.status_code == 403, (
            f"a key of tenant beta was answered on tenant alpha's cluster host: "
            f"{other.status_code} {other.text}"
        )


def test_one_keys_watch_streams_do_not_count_against_another_tenants(
    databases: Databases,
) -> None:
    url = databases.new("tenants-streams")
    with keyed_server(url, KEYS, "--max-streams-per-key", "2") as server:
        stubs = Stubs.connect(server.server.address)
        opened: list[Any] = []
        try:
            alpha, beta = server.keys["alpha-read"], server.keys["beta-read"]
            for _ in range(2):
                opened.append(_watch_maps(stubs, alpha, []))
                _grpc_until(opened[-1], lambda e: e.type == SYNCED, "alpha's synced marker")
            opened.append(_watch_maps(stubs, alpha, []))
            code = _code(lambda: next(iter(opened[-1])))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"a key's third watch with --max-streams-per-key 2 answered {code}"
            )
            opened.append(_watch_maps(stubs, beta, []))
            code = _code(lambda: next(iter(opened[-1])))
            assert code == OK, (
                f"tenant beta's first watch was refused ({code}) because tenant alpha's key "
                "has its most streams open: one key's streams counted against another's"
            )
        finally:
            for stream in opened:
                stream.cancel()
            stubs.channel.close()
