"""Writes: idempotent create, optimistic concurrency, revisions, update_mask semantics."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs
from tests.rpcerrors import fails
from tests.serverproc import ServerProcess


def _rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def _create_map(stubs: Stubs, job: mi.MapImport, request_id: str = "") -> mi.MapImport:
    request = mi.CreateMapImportRequest(request_id=request_id, map_import=job)
    return stubs.maps.CreateMapImport(request).map_import


def _get_map(stubs: Stubs, job_id: str) -> mi.MapImport:
    request = mi.GetMapImportStatusRequest(import_request_id=job_id)
    return stubs.maps.GetMapImportStatus(request).map_import


def _update_map(
    stubs: Stubs, job: mi.MapImport, paths: list[str] | None = None, expected: int = 0
) -> mi.MapImport:
    request = mi.UpdateMapImportRequest(
        map_import=job,
        update_mask=field_mask_pb2.FieldMask(paths=paths or []),
        expected_revision=expected,
    )
    return stubs.maps.UpdateMapImport(request).map_import


def _map_ids(stubs: Stubs) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000, page_token=token))
        ids.extend(j.import_request_id for j in page.map_imports)
        token = page.next_page_token
        if not token:
            return ids


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """This module's server. Not about durability: SQLite skips the fsync per commit."""
    proc = ServerProcess(database_url, ["--sqlite-synchronous", "NORMAL"]).start()
    yield proc
    proc.stop()


# --- idempotent create ---------------------------------------------------------------


def _again(create: Callable[[], mi.MapImport]) -> mi.MapImport:
    """A create repeated with the first one's request_id: it answers, it does not fail."""
    try:
        return create()
    except grpc.RpcError as error:
        raise AssertionError(
            f"a create repeated with its request_id failed with {error.code()} "
            "instead of returning the job the first one made"
        ) from error


def test_map_import_create_is_idempotent_by_request_id(stubs: Stubs, uid: str) -> None:
    request_id = _rid()
    job = mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(job_id=7))

    first = _create_map(stubs, job, request_id)
    second = _again(lambda: _create_map(stubs, job, request_id))

    assert second == first, "a create repeated with its request_id changed the job"
    assert second.revision == first.revision
    assert _get_map(stubs, uid) == first
    assert _map_ids(stubs).count(uid) == 1


def test_repeated_create_returns_the_job_as_it_is_now(stubs: Stubs, uid: str) -> None:
    request_id = _rid()
    first = _create_map(stubs, mi.MapImport(import_request_id=uid), request_id)
    moved = _update_map(
        stubs, mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_PENDING), ["status"]
    )

    again = _create_map(stubs, mi.MapImport(import_request_id=uid), request_id)

    assert again == moved
    assert again.revision > first.revision
    assert _map_ids(stubs).count(uid) == 1


def test_same_id_from_another_request_already_exists(stubs: Stubs, uid: str) -> None:
    first = _create_map(stubs, mi.MapImport(import_request_id=uid), _rid())

    for request_id in (_rid(), ""):

        def create(request_id: str = request_id) -> mi.MapImport:
            return _create_map(stubs, mi.MapImport(import_request_id=uid), request_id)

        failure = fails(create)
        assert failure.code == grpc.StatusCode.ALREADY_EXISTS, failure
    assert _get_map(stubs, uid) == first


def test_request_id_reused_for_another_id_is_refused(stubs: Stubs, uid: str) -> None:
    request_id = _rid()
    first = _create_map(stubs, mi.MapImport(import_request_id=uid), request_id)
    other = f"{uid}-other"

    failure = fails(lambda: _create_map(stubs, mi.MapImport(import_request_id=other), request_id))

    assert failure.code == grpc.StatusCode.ALREADY_EXISTS, (
        f"a request_id reused to create another job was not refused: {failure}"
    )
    assert other not in _map_ids(stubs)
    assert _get_map(stubs, uid) == first


def test_delivery_create_is_idempotent_by_request_id(stubs: Stubs, uid: str) -> None:
    request = dl.CreatePreparedDeliveryRequest(
        request_id=_rid(), prepared_delivery=dl.PreparedDelivery(catalog_id=uid)
    )
    first = stubs.deliveries.CreatePreparedDelivery(request).prepared_delivery
    second = stubs.deliveries.CreatePreparedDelivery(request).prepared_delivery
    assert second == first

    other = dl.CreatePreparedDeliveryRequest(
        request_id=_rid(), prepared_delivery=dl.PreparedDelivery(catalog_id=uid)
    )
    failure = fails(lambda: stubs.deliveries.CreatePreparedDelivery(other))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS, failure


def test_dataset_create_with_server_id_is_idempotent(stubs: Stubs) -> None:
    request_id = _rid()
    request = ds.CreateDatasetRequest(request_id=request_id, dataset=ds.Dataset(name="shops"))

    first = stubs.datasets.CreateDataset(request).dataset
    second = stubs.datasets.CreateDataset(request).dataset
    third = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(request_id=_rid(), dataset=ds.Dataset(name="shops"))
    ).dataset

    assert first.dataset_id
    assert second.dataset_id == first.dataset_id
    assert second.revision == first.revision
    assert third.dataset_id != first.dataset_id
    listed = _all_datasets(stubs)
    assert listed.count(first.dataset_id) == 1


def _all_datasets(stubs: Stubs) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = stubs.datasets.ListDatasets(ds.ListDatasetsRequest(page_size=1000, page_token=token))
        ids.extend(d.dataset_id for d in page.datasets)
        token = page.next_page_token
        if not token:
            return ids


def test_catalog_create_with_server_id_is_idempotent(stubs: Stubs) -> None:
    request_id = _rid()
    request = cat.CreateImportRequest(
        request_id=request_id,
        catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PRODUCTS),
    )

    first = stubs.catalog.CreateImport(request).catalog_import
    second = stubs.catalog.CreateImport(request).catalog_import
    third = stubs.catalog.CreateImport(
        cat.CreateImportRequest(
            request_id=_rid(),
            catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PRODUCTS),
        )
    ).catalog_import

    assert first.id
    assert second == first
    assert third.id != first.id
    ids: list[str] = []
    token = ""
    while True:
        page = stubs.catalog.ListImports(cat.ListImportsRequest(page_size=1000, page_token=token))
        ids.extend(j.id for j in page.catalog_imports)
        token = page.next_page_token
        if not token:
            break
    assert ids.count(first.id) == 1


def test_dataset_start_is_idempotent_by_request_id(stubs: Stubs) -> None:
    dataset_id = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset(name="x"))
    ).dataset.dataset_id
    request = ds.StartDatasetImportRequest(dataset_id=dataset_id, request_id=_rid())

    first = stubs.datasets.StartDatasetImport(request).dataset
    second = stubs.datasets.StartDatasetImport(request).dataset

    assert second == first
    assert second.latest_run.id == first.latest_run.id


# --- revisions and optimistic concurrency ------------------------------------------------


def test_every_write_returns_a_strictly_greater_revision(stubs: Stubs, uid: str) -> None:
    revisions: list[int] = []
    revisions.append(_create_map(stubs, mi.MapImport(import_request_id=uid)).revision)
    for progress in (5, 10, 50):
        job = mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=progress),
        )
        revisions.append(_update_map(stubs, job, ["status", "meta_data.progress"]).revision)
    revisions.append(
        stubs.deliveries.CreatePreparedDelivery(
            dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
        ).prepared_delivery.revision
    )
    dataset = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset())).dataset
    revisions.append(dataset.revision)
    revisions.append(
        stubs.datasets.StartDatasetImport(
            ds.StartDatasetImportRequest(dataset_id=dataset.dataset_id)
        ).dataset.revision
    )
    revisions.append(
        stubs.catalog.CreateImport(
            cat.CreateImportRequest(
                catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PANELS)
            )
        ).catalog_import.revision
    )
    assert all(b > a for a, b in itertools.pairwise(revisions)), revisions
    assert _get_map(stubs, uid).revision == revisions[3]


def test_stale_expected_revision_is_aborted(stubs: Stubs, uid: str) -> None:
    created = _create_map(stubs, mi.MapImport(import_request_id=uid))
    pending = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_PENDING)
    moved = _update_map(stubs, pending, ["status"], expected=created.revision)
    assert moved.status == mi.MAP_IMPORT_STATUS_PENDING
    assert moved.revision > created.revision

    running = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    failure = fails(lambda: _update_map(stubs, running, ["status"], expected=created.revision))

    assert failure.code == grpc.StatusCode.ABORTED, (
        f"an update with a stale expected_revision was not ABORTED: {failure}"
    )
    assert failure.info is not None and failure.info.reason == "REVISION_MISMATCH", failure
    assert _get_map(stubs, uid) == moved
    again = _update_map(stubs, running, ["status"], expected=moved.revision)
    assert again.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS


def test_stale_expected_revision_is_aborted_for_every_kind(stubs: Stubs, uid: str) -> None:
    delivery = stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    ).prepared_delivery
    update = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=dl.PreparedDelivery(catalog_id=uid, progress=10),
        update_mask=field_mask_pb2.FieldMask(paths=["progress"]),
        expected_revision=delivery.revision + 1000,
    )
    assert fails(lambda: stubs.deliveries.UpdatePreparedDelivery(update)).code == (
        grpc.StatusCode.ABORTED
    )
    update.expected_revision = delivery.revision
    assert stubs.deliveries.UpdatePreparedDelivery(update).prepared_delivery.progress == 10

    imported = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS))
    ).catalog_import
    abort = cat.UpdateImportRequest(
        catalog_import=cat.CatalogImport(id=imported.id, status=cat.CATALOG_IMPORT_STATUS_ABORTED),
        update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        expected_revision=imported.revision - 1,
    )
    assert fails(lambda: stubs.catalog.UpdateImport(abort)).code == grpc.StatusCode.ABORTED
    abort.expected_revision = imported.revision
    assert stubs.catalog.UpdateImport(abort).catalog_import.status == (
        cat.CATALOG_IMPORT_STATUS_ABORTED
    )

    dataset = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset())).dataset
    started = stubs.datasets.StartDatasetImport(
        ds.StartDatasetImportRequest(dataset_id=dataset.dataset_id)
    ).dataset
    log = ds.UpdateDatasetImportRequest(
        dataset_id=dataset.dataset_id,
        step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
        entries=[ds.DatasetLogEntry(detail="x", level=ds.DATASET_LOG_LEVEL_INFO)],
        expected_revision=dataset.revision,
    )
    assert fails(lambda: stubs.datasets.UpdateDatasetImport(log)).code == grpc.StatusCode.ABORTED
    current = stubs.datasets.GetDatasetStatus(
        ds.GetDatasetStatusRequest(dataset_id=dataset.dataset_id)
    ).dataset
    assert current == started
    log.expected_revision = started.revision
    assert stubs.datasets.UpdateDatasetImport(log).dataset.revision > started.revision


# --- update_mask ----------------------------------------------------------------------------


def test_update_mask_changes_only_the_named_fields(stubs: Stubs, uid: str) -> None:
    created = _create_map(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            meta_data=mi.MapImportMetaData(progress=10, size=5, file_name="before.gpkg"),
        ),
    )
    job = mi.MapImport(
        import_request_id=uid,
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=50, size=999, file_name="after.gpkg"),
    )

    updated = _update_map(stubs, job, ["meta_data.progress"])

    assert updated.meta_data.progress == 50
    assert updated.meta_data.size == 5
    assert updated.meta_data.file_name == "before.gpkg"
    assert updated.status == mi.MAP_IMPORT_STATUS_START
    expected = mi.MapImport()
    expected.CopyFrom(created)
    expected.meta_data.progress = 50
    expected.revision = updated.revision
    expected.update_time.CopyFrom(updated.update_time)
    assert updated == expected


def test_empty_update_mask_changes_the_populated_fields(stubs: Stubs, uid: str) -> None:
    _create_map(
        stubs,
        mi.MapImport(
            import_request_id=uid, meta_data=mi.MapImportMetaData(size=5, file_name="keep.gpkg")
        ),
    )
    updated = _update_map(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=30),
        ),
    )
    assert updated.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
    assert updated.meta_data.progress == 30
    assert updated.meta_data.size == 5
    assert updated.meta_data.file_name == "keep.gpkg"


@pytest.mark.parametrize(
    "path",
    [
        "revision",
        "create_time",
        "update_time",
        "import_request_id",
        "no_such_field",
        "meta_data.nope",
    ],
)
def test_update_mask_refuses_paths_that_cannot_change(stubs: Stubs, uid: str, path: str) -> None:
    created = _create_map(stubs, mi.MapImport(import_request_id=uid))
    job = mi.MapImport(import_request_id=uid, revision=created.revision + 100)
    job.create_time.seconds = 1

    failure = fails(lambda: _update_map(stubs, job, [path, "status"]))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert "update_mask" in failure.fields
    assert _get_map(stubs, uid) == created


@pytest.mark.parametrize("path", ["size", "url", "expire_time", "revision"])
def test_delivery_output_only_paths_are_refused(stubs: Stubs, uid: str, path: str) -> None:
    created = stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    ).prepared_delivery
    request = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=dl.PreparedDelivery(catalog_id=uid, size=10, url="https://x.example/"),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )

    failure = fails(lambda: stubs.deliveries.UpdatePreparedDelivery(request))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert "update_mask" in failure.fields
    got = stubs.deliveries.GetPreparedDeliveryStatus(
        dl.GetPreparedDeliveryStatusRequest(catalog_id=uid)
    ).prepared_delivery
    assert got == created


def test_catalog_type_cannot_change(stubs: Stubs) -> None:
    created = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS))
    ).catalog_import
    request = cat.UpdateImportRequest(
        catalog_import=cat.CatalogImport(id=created.id, type=cat.CATALOG_IMPORT_TYPE_PANELS),
        update_mask=field_mask_pb2.FieldMask(paths=["type"]),
    )

    failure = fails(lambda: stubs.catalog.UpdateImport(request))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert "catalog_import.type" in failure.fields
    got = stubs.catalog.GetImportStatus(cat.GetImportStatusRequest(id=created.id)).catalog_import
    assert got == created


def test_update_answers_the_bytes_of_the_job_as_stored(stubs: Stubs, uid: str) -> None:
    """An update's response is the job's stored bytes behind the response's field tag:
    byte for byte the response message a Get's job would serialize to, for an update
    that changes the job and for one that changes nothing (the job as it is)."""
    _create_map(stubs, mi.MapImport(import_request_id=uid))
    raw = stubs.channel.unary_unary(
        "/jobstatus.v1.MapImportService/UpdateMapImport",
        request_serializer=None,
        response_deserializer=None,
    )
    request = mi.UpdateMapImportRequest(
        map_import=mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=30, file_name="a.gpkg"),
        ),
        update_mask=field_mask_pb2.FieldMask(
            paths=["status", "meta_data.progress", "meta_data.file_name"]
        ),
    ).SerializeToString()
    for changes in (True, False):
        answer = raw(request, timeout=30)
        stored = _get_map(stubs, uid)
        assert stored.meta_data.progress == 30
        assert answer == mi.UpdateMapImportResponse(map_import=stored).SerializeToString()
        assert mi.UpdateMapImportResponse.FromString(answer).map_import.revision == (
            stored.revision
        ), changes


# --- an update that changes nothing ---------------------------------------------------

PACKAGE = mi.MapImportMetaData(package_url="https://p.example/x.gpkg", footprint="POLYGON EMPTY")


def _done_map(stubs: Stubs, uid: str) -> mi.MapImport:
    _create_map(stubs, mi.MapImport(import_request_id=uid))
    done = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_DONE, meta_data=PACKAGE)
    return _update_map(stubs, done)


def test_an_update_the_status_puts_back_is_refused_and_names_the_rule(
    stubs: Stubs, uid: str
) -> None:
    done = _done_map(stubs, uid)
    five = mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(progress=5))
    failure = fails(lambda: _update_map(stubs, five))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.info is not None and failure.info.reason == "FIELD_SET_BY_STATUS"
    assert failure.metadata == {"fields": "meta_data.progress", "status": "Done"}
    assert "changes nothing" in failure.message
    assert "meta_data.progress at 100" in failure.message
    assert "Archived (MAP_IMPORT_STATUS_ARCHIVED)" in failure.message
    assert _get_map(stubs, uid).revision == done.revision  # it changed nothing


def test_an_update_sent_again_still_succeeds_and_changes_nothing(stubs: Stubs, uid: str) -> None:
    done = _done_map(stubs, uid)
    again = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_DONE, meta_data=PACKAGE)
    assert _update_map(stubs, again) == done  # a retry: same answer, same revision
    same = mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(progress=100))
    assert _update_map(stubs, same, ["meta_data.progress"]) == done  # the state it has


def test_a_delivery_progress_on_done_is_refused(stubs: Stubs, uid: str) -> None:
    artifact = dl.Artifact(item_key="a", artifact_type="gpkg", url="https://p.example/a")
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    done = dl.PreparedDelivery(
        catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE, artifacts=[artifact]
    )
    stubs.deliveries.UpdatePreparedDelivery(
        dl.UpdatePreparedDeliveryRequest(prepared_delivery=done)
    )
    half = dl.PreparedDelivery(catalog_id=uid, progress=50)
    failure = fails(
        lambda: stubs.deliveries.UpdatePreparedDelivery(
            dl.UpdatePreparedDeliveryRequest(prepared_delivery=half)
        )
    )
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.metadata == {"fields": "progress", "status": "done"}
