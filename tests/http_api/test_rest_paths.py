"""The documented REST paths, body for body, for every status value of every kind.

The expected bodies are written out from the documents in ../shared/seeds by
hand (keys, spellings, number types, date-times), not from the server's code.
Jobs are driven over gRPC; the paths are read over real HTTP. The server is
open (no keys): the keys and their errors are tested in test_rest_errors.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2 as er
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.restkit import DATETIME
from tests.serverproc import ServerProcess

# The documents' "Possible values", copied from the seeds.
MAP_STATUSES = [
    "Draft",
    "Pending",
    "Start",
    "InProgress",
    "Pause",
    "Cancel",
    "Error",
    "Done",
    "Discovered",
    "Expired",
    "Archived",
]
DELIVERY_STATUSES = ["start", "inProgress", "done", "error", "delete", "pending"]
DATASET_STATUSES = ["success", "in_progress", "failed"]
CATALOG_STATUSES = [
    "NOT_FOUND",
    "WAITING",
    "BLOCKED",
    "IN_PROGRESS",
    "SUCCESS",
    "FAILURE",
    "ABORTED",
]
ERROR_CODES = [
    "APP.unknown",
    "DELIVERY.unknown",
    "DELIVERY.notFound",
    "DELIVERY.download",
    "DELIVERY.downloadNotAvailable",
    "DELIVERY.notExist",
    "DELIVERY.invalid",
    "DELIVERY.notVerified",
    "DELIVERY.packageTooLarge",
    "DELIVERY.unableClearCache",
    "PROJECT_MANAGEMENT.unknown",
    "PROJECT_MANAGEMENT.deleteProjectFailed",
    "PROJECT_MANAGEMENT.labelNotFound",
    "PROJECT_MANAGEMENT.labelAlreadyExists",
    "PROJECT_MANAGEMENT.labelInUse",
    "MAP.unknown",
    "MAP.notFound",
    "MAP.bBoxIsInvalid",
    "MAP.bBoxNotInAnyPolygon",
    "MAP.getRecordsFailed",
    "MAP.exportMapFailed",
    "MAP.requestInProgress",
    "MAP.areaTooLarge",
    "MAP.areaTooSmall",
    "DEVICE.notFound",
    "DEVICE.hasChildren",
    "DEVICE_TYPE.notFound",
    "DEVICE_TYPE.alreadyExists",
    "DEVICE_PLATFORM.notFound",
    "DEVICE_PLATFORM.alreadyExists",
    "GROUP.notFound",
    "GROUP.notAllowedToAdd",
    "GROUP.orgIdUnknown",
    "GROUP.orgIdNotAllowed",
    "GROUP.orgIdConflict",
    "GROUP.orgIdNotFound",
    "RULE.validationFailed",
    "RULE.fieldNotSupported",
    "RULE.fieldAlreadyExists",
    "RULE.fieldNotFound",
    "RELEASE.hasDependents",
]


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """On SQLite and on PostgreSQL (conftest's `database_url`)."""
    proc = ServerProcess(database_url, extra_args=["--dataset-rate-interval", "0"]).start()
    yield proc
    proc.stop()


def _get(http: httpx.Client, path: str, status: int = 200) -> Any:
    response = http.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _stamp(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp


# --- map import -----------------------------------------------------------------------------

M = mi.MapImportStatus


MapMove = tuple[mi.MapImportStatus.ValueType, mi.MapImport | None]


def _map(stubs: Stubs, job_id: str, *moves: MapMove) -> None:
    first, *rest = moves
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(
            map_import=mi.MapImport(import_request_id=job_id, status=first[0])
        )
    )
    for status, extra in rest:
        job = mi.MapImport(import_request_id=job_id, status=status)
        if extra is not None:
            job.MergeFrom(extra)
        stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job))


FULL_META = mi.MapImportMetaData(
    job_id=9007199254740993,  # beyond a double's exact integers: still an exact JSON number
    export_start=_stamp("2026-01-02T03:04:05Z"),
    export_end=_stamp("2026-01-02T04:05:06.250Z"),
    size=123456789012,
    area=4500000,
    footprint="POLYGON((34.78 32.08,34.80 32.08,34.80 32.10,34.78 32.08))",
    zoom_level=12,
    package_url="https://packages.example.com/p.gpkg",
    file_name="p.gpkg",
    imaging_start=_stamp("2025-06-01T00:00:00Z"),
    imaging_end=_stamp("2025-06-30T23:59:59Z"),
)
FULL_META_JSON = {
    "jobId": 9007199254740993,
    "exportStart": "2026-01-02T03:04:05Z",
    "exportEnd": "2026-01-02T04:05:06.250Z",
    "progress": 100,
    "size": 123456789012,
    "area": 4500000,
    "footprint": "POLYGON((34.78 32.08,34.80 32.08,34.80 32.10,34.78 32.08))",
    "zoomLevel": 12,
    "packageUrl": "https://packages.example.com/p.gpkg",
    "fileName": "p.gpkg",
    "imagingStart": "2025-06-01T00:00:00Z",
    "imagingEnd": "2025-06-30T23:59:59Z",
}
EMPTY_META = {"jobId": 0, "progress": 0, "size": 0, "area": 0, "zoomLevel": 1}
DONE = mi.MapImport(meta_data=FULL_META)
FAILED = mi.MapImport(
    error=er.Error(error_code=er.ERROR_CODE_MAP_B_BOX_IS_INVALID, message="the bbox crosses itself")
)
ERROR_JSON = {"errorCode": "MAP.bBoxIsInvalid", "message": "the bbox crosses itself"}

# status on the v2 path: (how to get there, v1 spelling, extra keys of the body)
MAP_CASES: dict[str, tuple[list[MapMove], str, dict[str, Any]]] = {
    "Start": ([(M.MAP_IMPORT_STATUS_START, None)], "Start", {}),
    "Draft": ([(M.MAP_IMPORT_STATUS_DRAFT, None)], "Start", {}),
    "Discovered": ([(M.MAP_IMPORT_STATUS_DISCOVERED, None)], "Start", {}),
    "Pending": (
        [(M.MAP_IMPORT_STATUS_START, None), (M.MAP_IMPORT_STATUS_PENDING, None)],
        "Pending",
        {},
    ),
    "InProgress": (
        [
            (M.MAP_IMPORT_STATUS_START, None),
            (
                M.MAP_IMPORT_STATUS_IN_PROGRESS,
                mi.MapImport(meta_data=mi.MapImportMetaData(job_id=7001, progress=40)),
            ),
        ],
        "InProgress",
        {"metaData": {**EMPTY_META, "jobId": 7001, "progress": 40}},
    ),
    "Pause": (
        [
            (M.MAP_IMPORT_STATUS_START, None),
            (M.MAP_IMPORT_STATUS_IN_PROGRESS, None),
            (M.MAP_IMPORT_STATUS_PAUSE, None),
        ],
        "Pause",
        {},
    ),
    "Cancel": (
        [(M.MAP_IMPORT_STATUS_START, None), (M.MAP_IMPORT_STATUS_CANCEL, None)],
        "Cancel",
        {},
    ),
    "Error": (
        [(M.MAP_IMPORT_STATUS_START, None), (M.MAP_IMPORT_STATUS_ERROR, FAILED)],
        "Error",
        {"error": ERROR_JSON},
    ),
    "Done": (
        [(M.MAP_IMPORT_STATUS_START, None), (M.MAP_IMPORT_STATUS_DONE, DONE)],
        "Done",
        {"metaData": FULL_META_JSON},
    ),
    "Expired": (
        [
            (M.MAP_IMPORT_STATUS_START, None),
            (M.MAP_IMPORT_STATUS_DONE, DONE),
            (M.MAP_IMPORT_STATUS_EXPIRED, None),
        ],
        "Expired",
        {"metaData": FULL_META_JSON},
    ),
    "Archived": (
        [
            (M.MAP_IMPORT_STATUS_START, None),
            (M.MAP_IMPORT_STATUS_DONE, DONE),
            (M.MAP_IMPORT_STATUS_ARCHIVED, None),
        ],
        "Archived",
        {"metaData": FULL_META_JSON},
    ),
}


def test_every_map_status_is_covered() -> None:
    assert sorted(MAP_CASES) == sorted(MAP_STATUSES)


@pytest.mark.parametrize("status", MAP_STATUSES)
def test_map_import_body(stubs: Stubs, http: httpx.Client, uid: str, status: str) -> None:
    moves, v1_status, extra = MAP_CASES[status]
    _map(stubs, uid, *moves)

    v2 = _get(http, f"/api/v2/map/import/status/{uid}")
    v1 = _get(http, f"/api/v1/map/import/status/{uid}")

    expected = {"importRequestId": uid, "status": status, "metaData": EMPTY_META, **extra}
    keys = ("importRequestId", "status", "error", "metaData")
    assert set(v2) <= set(keys), f"the map import body's documented keys are {keys}, not {list(v2)}"
    assert v2.get("status") == status, (
        f"the v2 map status is spelled {status}, not {v2.get('status')}"
    )
    assert v2 == expected
    assert list(v2) == [k for k in keys if k in v2]
    assert v1.get("status") == v1_status, (
        f"the v1 map path reports status {status} as {v1_status}, not {v1.get('status')}"
    )
    assert v1 == {**expected, "status": v1_status}


def test_unknown_map_answers_200_with_only_the_error(http: httpx.Client, uid: str) -> None:
    for version in ("v1", "v2"):
        body = _get(http, f"/api/{version}/map/import/status/{uid}")
        assert body == {"error": {"errorCode": "MAP.notFound", "message": body["error"]["message"]}}
        assert uid in body["error"]["message"]


# --- prepared delivery ------------------------------------------------------------------------

D = dl.PreparedDeliveryStatus


def _artifacts(catalog_id: str) -> list[dl.Artifact]:
    return [
        dl.Artifact(
            id=1,
            item_key="map.gpkg",
            artifact_type="gpkg",
            url=f"https://cache.example.com/{catalog_id}/map.gpkg",
            size=3_000_000_000,
            hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_HEX, hash="ab" * 32),
        ),
        dl.Artifact(
            id=2,
            item_key="map.json",
            artifact_type="json",
            meta_data='{"zoom": 12}',
            url=f"https://cache.example.com/{catalog_id}/map.json",
            size=512,
        ),
        dl.Artifact(
            id=3,
            item_key="installer",
            url=f"https://cache.example.com/{catalog_id}/setup.exe",
            size=10,
            hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_BASE64, hash="q83v"),
            signature="sig",
            is_executable=True,
            arguments="--quiet",
        ),
    ]


def _artifacts_json(catalog_id: str) -> list[dict[str, Any]]:
    return [
        {
            "catalogId": catalog_id,
            "id": 1,
            "itemKey": "map.gpkg",
            "artifactType": "gpkg",
            "url": f"https://cache.example.com/{catalog_id}/map.gpkg",
            "size": 3_000_000_000,
            "hash": {"algorithm": "SHA256Hex", "hash": "ab" * 32},
        },
        {
            "catalogId": catalog_id,
            "id": 2,
            "itemKey": "map.json",
            "artifactType": "json",
            "metaData": '{"zoom": 12}',
            "url": f"https://cache.example.com/{catalog_id}/map.json",
            "size": 512,
        },
        {
            "catalogId": catalog_id,
            "id": 3,
            "itemKey": "installer",
            "url": f"https://cache.example.com/{catalog_id}/setup.exe",
            "size": 10,
            "hash": {"algorithm": "SHA256Base64", "hash": "q83v"},
            "signature": "sig",
            "isExecutable": True,
            "arguments": "--quiet",
        },
    ]


def _delivery(
    stubs: Stubs,
    catalog_id: str,
    first: dl.PreparedDeliveryStatus.ValueType,
    *moves: dl.PreparedDelivery,
) -> None:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=catalog_id, status=first)
        )
    )
    for move in moves:
        move.catalog_id = catalog_id
        stubs.deliveries.UpdatePreparedDelivery(
            dl.UpdatePreparedDeliveryRequest(prepared_delivery=move)
        )


def _running(catalog_id: str) -> dl.PreparedDelivery:
    return dl.PreparedDelivery(
        status=D.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
        progress=35,
        artifacts=_artifacts(catalog_id),
    )


@pytest.mark.parametrize("status", DELIVERY_STATUSES)
@pytest.mark.parametrize("source", ["", "?source=remote", "?source=cache"])
def test_delivery_body(
    stubs: Stubs, http: httpx.Client, uid: str, status: str, source: str
) -> None:
    size = 3_000_000_000 + 512 + 10
    gpkg = f"https://cache.example.com/{uid}/map.gpkg"
    base = {"catalogId": uid, "status": status, "progress": 0, "size": 0, "artifacts": []}
    done = dl.PreparedDelivery(status=D.PREPARED_DELIVERY_STATUS_DONE)
    error = dl.PreparedDelivery(
        status=D.PREPARED_DELIVERY_STATUS_ERROR,
        error=er.Error(error_code=er.ERROR_CODE_DELIVERY_UNABLE_CLEAR_CACHE, message="disk full"),
    )
    running = {"progress": 35, "size": size, "artifacts": _artifacts_json(uid)}
    finished = {"progress": 100, "size": size, "url": gpkg, "artifacts": _artifacts_json(uid)}
    cases: dict[
        str, tuple[dl.PreparedDeliveryStatus.ValueType, list[dl.PreparedDelivery], dict[str, Any]]
    ] = {
        "start": (D.PREPARED_DELIVERY_STATUS_START, [], {}),
        "pending": (D.PREPARED_DELIVERY_STATUS_PENDING, [], {}),
        "inProgress": (D.PREPARED_DELIVERY_STATUS_START, [_running(uid)], running),
        "done": (D.PREPARED_DELIVERY_STATUS_START, [_running(uid), done], finished),
        "delete": (
            D.PREPARED_DELIVERY_STATUS_START,
            [_running(uid), done, dl.PreparedDelivery(status=D.PREPARED_DELIVERY_STATUS_DELETE)],
            {**finished, "url": None},
        ),
        "error": (
            D.PREPARED_DELIVERY_STATUS_START,
            [error],
            {"error": {"errorCode": "DELIVERY.unableClearCache", "message": "disk full"}},
        ),
    }
    first, moves, extra = cases[status]
    _delivery(stubs, uid, first, *moves)
    expected = {k: v for k, v in {**base, **extra}.items() if v is not None}

    body = _get(http, f"/api/v1/delivery/preparedDelivery/{uid}{source}")

    assert body == expected


def test_every_error_code_is_spelled_as_documented(stubs: Stubs, http: httpx.Client) -> None:
    seen = []
    for code in er.ErrorCode.values():
        if code == er.ERROR_CODE_UNSPECIFIED:
            continue
        catalog_id = f"e-{uuid.uuid4().hex[:10]}"
        _delivery(
            stubs,
            catalog_id,
            D.PREPARED_DELIVERY_STATUS_START,
            dl.PreparedDelivery(
                status=D.PREPARED_DELIVERY_STATUS_ERROR, error=er.Error(error_code=code)
            ),
        )
        body = _get(http, f"/api/v1/delivery/preparedDelivery/{catalog_id}")
        seen.append(body["error"]["errorCode"])
        assert body["error"] == {"errorCode": body["error"]["errorCode"]}
    assert seen == ERROR_CODES


def test_unknown_delivery_answers_404_delivery_not_found(http: httpx.Client, uid: str) -> None:
    body = _get(http, f"/api/v1/delivery/preparedDelivery/{uid}?source=cache", 404)
    assert body == {
        "error": {"errorCode": "DELIVERY.notFound", "message": body["error"]["message"]}
    }
    assert uid in body["error"]["message"]


@pytest.mark.parametrize("source", ["disk", "", "CACHE", "cache%00"])
def test_delivery_source_is_validated(http: httpx.Client, uid: str, source: str) -> None:
    """`source` is remote or cache, spelled so (an empty one is not left out: NestJS's
    IsOptional passes only a missing value)."""
    response = http.get(f"/api/v1/delivery/preparedDelivery/{uid}?source={source}")
    assert response.status_code == 400, (
        f"the delivery path's source is remote or cache, else 400: {source!r} answered "
        f"{response.status_code}"
    )
    assert _get(http, f"/api/v1/delivery/preparedDelivery/{uid}?source={source}", 400) == {
        "statusCode": 400,
        "message": ["source must be one of the following values: remote, cache"],
        "error": "Bad Request",
    }


# --- dataset import ---------------------------------------------------------------------------

S = ds.DatasetImportStatus
FETCH, IMPORT = ds.DATASET_IMPORT_STEP_NAME_FETCH, ds.DATASET_IMPORT_STEP_NAME_IMPORT


def _entries() -> list[ds.DatasetLogEntry]:
    return [
        ds.DatasetLogEntry(
            created_at=_stamp("2026-03-04T05:06:07Z"),
            detail="downloaded 12 MB",
            level=ds.DATASET_LOG_LEVEL_INFO,
        ),
        ds.DatasetLogEntry(
            created_at=_stamp("2026-03-04T05:06:08.5Z"),
            detail="3 rows skipped",
            level=ds.DATASET_LOG_LEVEL_WARNING,
        ),
        ds.DatasetLogEntry(
            created_at=_stamp("2026-03-04T05:06:09Z"),
            detail="row 7: bad geometry",
            level=ds.DATASET_LOG_LEVEL_ERROR,
        ),
    ]


ENTRIES_JSON = [
    {"created_at": "2026-03-04T05:06:07Z", "detail": "downloaded 12 MB", "level": "info"},
    {"created_at": "2026-03-04T05:06:08.500Z", "detail": "3 rows skipped", "level": "warning"},
    {"created_at": "2026-03-04T05:06:09Z", "detail": "row 7: bad geometry", "level": "error"},
]


def _step(name: str, status: str, entries: list[Any], *, ended: bool) -> dict[str, Any]:
    return {
        "name": name,
        "start": DATETIME,
        "end": DATETIME if ended else None,
        "entries": entries,
        "status": status,
    }


def _update(
    stubs: Stubs,
    dataset_id: str,
    step: ds.DatasetImportStepName.ValueType,
    status: ds.DatasetImportStatus.ValueType = ds.DATASET_IMPORT_STATUS_UNSPECIFIED,
    **kw: Any,
) -> None:
    stubs.datasets.UpdateDatasetImport(
        ds.UpdateDatasetImportRequest(dataset_id=dataset_id, step=step, step_status=status, **kw)
    )


@pytest.mark.parametrize("case", ["fetching", "importing", "success", "failed"])
def test_dataset_status_body(stubs: Stubs, http: httpx.Client, case: str) -> None:
    created = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset(name="d")))
    dataset_id = created.dataset.dataset_id
    started = stubs.datasets.StartDatasetImport(ds.StartDatasetImportRequest(dataset_id=dataset_id))
    run_id = started.dataset.latest_run.id
    _update(stubs, dataset_id, FETCH, entries=_entries())
    steps: list[dict[str, Any]]
    if case == "fetching":
        status, steps = "in_progress", [_step("fetch", "in_progress", ENTRIES_JSON, ended=False)]
    elif case == "failed":
        _update(stubs, dataset_id, FETCH, S.DATASET_IMPORT_STATUS_FAILED)
        status, steps = "failed", [_step("fetch", "failed", ENTRIES_JSON, ended=True)]
    else:
        _update(stubs, dataset_id, FETCH, S.DATASET_IMPORT_STATUS_SUCCESS)
        status = "in_progress"
        steps = [
            _step("fetch", "success", ENTRIES_JSON, ended=True),
            _step("import", "in_progress", [], ended=False),
        ]
        if case == "success":
            _update(stubs, dataset_id, IMPORT, S.DATASET_IMPORT_STATUS_SUCCESS)
            status = "success"
            steps[1] = _step("import", "success", [], ended=True)

    body = _get(http, f"/datasets/{dataset_id}/status")

    assert body == {"id": run_id, "steps": steps, "status": status}
    assert list(body) == ["id", "steps", "status"]
    assert list(body["steps"][0]) == ["name", "start", "end", "entries", "status"]
    assert str(uuid.UUID(body["id"])) == body["id"]
    # An upper-case id names the same dataset, as a uuid path parameter does.
    assert _get(http, f"/datasets/{dataset_id.upper()}/status") == body


def test_every_dataset_status_is_covered() -> None:
    covered = {"in_progress", "success", "failed"}  # the cases of test_dataset_status_body
    assert covered == set(DATASET_STATUSES)


def test_dataset_without_a_run_and_unknown_dataset(stubs: Stubs, http: httpx.Client) -> None:
    created = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset()))
    no_run = _get(http, f"/datasets/{created.dataset.dataset_id}/status", 404)
    assert no_run == {"details": "Dataset has no import run yet"}
    unknown = _get(http, f"/datasets/{uuid.uuid4()}/status", 404)
    assert unknown == {"details": "Dataset was not found"}


# --- catalog import ---------------------------------------------------------------------------

C = cat.CatalogImportStatus
TYPES = {
    "PRODUCTS": cat.CATALOG_IMPORT_TYPE_PRODUCTS,
    "ADS": cat.CATALOG_IMPORT_TYPE_ADS,
    "SYNONYMS": cat.CATALOG_IMPORT_TYPE_SYNONYMS,
    "CONFIGURATION": cat.CATALOG_IMPORT_TYPE_CONFIGURATION,
    "PANELS": cat.CATALOG_IMPORT_TYPE_PANELS,
}


def _catalog(
    stubs: Stubs, type_: cat.CatalogImportType.ValueType, *moves: cat.CatalogImport
) -> str:
    created = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=type_))
    ).catalog_import
    for move in moves:
        move.id = created.id
        stubs.catalog.UpdateImport(cat.UpdateImportRequest(catalog_import=move))
    return created.id


@pytest.mark.parametrize("type_name", list(TYPES))
def test_catalog_import_body(stubs: Stubs, http: httpx.Client, type_name: str) -> None:
    type_ = TYPES[type_name]
    running = cat.CatalogImport(status=C.CATALOG_IMPORT_STATUS_IN_PROGRESS)
    ids = {
        "WAITING": _catalog(stubs, type_),
        "IN_PROGRESS": _catalog(stubs, type_, running),
    }
    # Queued behind the running import of the same type.
    ids["BLOCKED"] = _catalog(stubs, type_)
    ids["ABORTED"] = _catalog(
        stubs, type_, cat.CatalogImport(status=C.CATALOG_IMPORT_STATUS_ABORTED)
    )
    ids["FAILURE"] = _catalog(
        stubs,
        type_,
        cat.CatalogImport(status=C.CATALOG_IMPORT_STATUS_FAILURE, message="Import failed."),
    )
    stubs.catalog.UpdateImport(
        cat.UpdateImportRequest(
            catalog_import=cat.CatalogImport(
                id=ids["IN_PROGRESS"], status=C.CATALOG_IMPORT_STATUS_SUCCESS
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
    )
    ids["SUCCESS"] = ids.pop("IN_PROGRESS")
    ids["IN_PROGRESS"] = _catalog(stubs, type_, running)
    ids["NOT_FOUND"] = str(uuid.uuid4().int % 10**18 + 10**18)
    assert sorted(ids) == sorted(CATALOG_STATUSES)

    for status, import_id in ids.items():
        body = _get(http, f"/api/v2/import/status/{import_id}")
        expected: dict[str, Any] = {"id": import_id, "status": status, "type": type_name}
        if status == "FAILURE":
            expected["message"] = "Import failed."
        if status == "NOT_FOUND":
            del expected["type"]
        assert body == expected, status
        assert list(body) == list(expected)

    # Leave nothing running, so the next type's imports do not queue behind this one.
    stubs.catalog.UpdateImport(
        cat.UpdateImportRequest(
            catalog_import=cat.CatalogImport(
                id=ids["IN_PROGRESS"], status=C.CATALOG_IMPORT_STATUS_ABORTED
            )
        )
    )


def test_catalog_import_host_names_the_cluster(http: httpx.Client, stubs: Stubs) -> None:
    import_id = _catalog(stubs, cat.CATALOG_IMPORT_TYPE_ADS)
    # The open server's one tenant is `default`; an IP or a single label means the caller's own.
    for host in ("default.api.esales.example.com", "localhost", "127.0.0.1"):
        body = http.get(f"/api/v2/import/status/{import_id}", headers={"host": host}).json()
        assert body == {"id": import_id, "status": "WAITING", "type": "ADS"}, host
    response = http.get(
        f"/api/v2/import/status/{import_id}", headers={"host": "acme.api.esales.example.com"}
    )
    assert response.status_code == 404
    assert response.json() == {"message": "Cluster not found."}


@pytest.mark.parametrize("job_id", ["a%00b", "%E2%82%AC", "a%0Ab", "x" * 300, "a/b"])
def test_ids_no_job_can_have_get_the_not_found_answer(http: httpx.Client, job_id: str) -> None:
    # On every backend: an id with a NUL, a newline, a slash or too long is never looked up.
    assert set(_get(http, f"/api/v1/map/import/status/{job_id}")) == {"error"}
    assert set(_get(http, f"/api/v1/delivery/preparedDelivery/{job_id}", 404)) == {"error"}
    assert _get(http, f"/api/v2/import/status/{job_id}")["status"] == "NOT_FOUND"
    assert set(_get(http, f"/datasets/{job_id}/status", 422)) == {"detail"}


# PostgreSQL only: SQLite keeps answering reads on the connections it has open.
# A job the server holds in memory (its view) is still answered: only a read that
# needs the database (here: ids the view does not hold) gets the 503.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_storage_away_answers_503_in_each_documents_style(
    databases: Databases, http: httpx.Client, stubs: Stubs, uid: str
) -> None:
    assert databases.cluster is not None
    _map(stubs, uid, (M.MAP_IMPORT_STATUS_START, None))
    shown = _get(http, f"/api/v2/map/import/status/{uid}")
    paths = {
        f"/api/v1/map/import/status/{uid}-elsewhere": "statusCode",
        f"/api/v2/map/import/status/{uid}-elsewhere": "statusCode",
        f"/api/v1/delivery/preparedDelivery/{uid}": "statusCode",
        f"/datasets/{uuid.uuid4()}/status": "detail",
        "/api/v2/import/status/1234567": "message",
    }
    with databases.cluster.down():
        for path, key in paths.items():
            body = _get(http, path, 503)
            assert key in body and "database" in str(body), path
        assert _get(http, f"/api/v2/map/import/status/{uid}") == shown
    # And back: the pool reconnects.
    deadline = time.monotonic() + 30
    while http.get(f"/api/v2/map/import/status/{uid}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
