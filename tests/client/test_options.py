"""Every RPC option reaches the server through the client, under the RPC's own name:
min_revision, update_mask, expected_revision, request_id, page_size and page_token,
lease_duration's range, the deadline (timeout) and metadata; and statuses print as
their names. AsyncClient has Client's methods, parameters and docstrings. A real
server on both databases (tests/conftest.py)."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from jobstatus import AsyncClient, Client, DeadlineExceeded, JobStatusError, Status, aio, sync
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases
from tests.restkit import keyed_server

Code = grpc.StatusCode
FAR_AHEAD = 10**9  # a revision no store of a test reaches


def _in_progress(job_id: str, progress: int) -> mi.MapImport:
    return mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=progress),
    )


def test_min_revision_waits_for_a_later_write(client: Client, uid: str) -> None:
    created = client.map_imports.create(mi.MapImport(import_request_id=uid))
    assert client.map_imports.get(uid, min_revision=created.revision) == created
    with ThreadPoolExecutor(1) as pool:
        # Nothing else writes meanwhile: this Get can only answer after the update below.
        waiting = pool.submit(
            client.map_imports.get, uid, min_revision=created.revision + 1, timeout=30
        )
        updated = client.map_imports.update(_in_progress(uid, 5))
        assert waiting.result(timeout=60) == updated


def test_min_revision_not_reached_runs_into_the_deadline(client: Client, uid: str) -> None:
    client.deliveries.create(dl.PreparedDelivery(catalog_id=uid))
    with pytest.raises(DeadlineExceeded) as caught:
        client.deliveries.get(uid, min_revision=FAR_AHEAD, timeout=0.5)
    assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert isinstance(caught.value, TimeoutError)


async def test_async_min_revision(aclient: AsyncClient, uid: str) -> None:
    created = await aclient.datasets.create(ds.Dataset(name=uid))
    fetched = await aclient.datasets.get(created.dataset_id, min_revision=created.revision)
    assert fetched == created
    with pytest.raises(DeadlineExceeded):
        await aclient.datasets.get(created.dataset_id, min_revision=FAR_AHEAD, timeout=0.5)


def test_update_mask_changes_only_the_named_fields(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    # The status in the resource is not in the mask: it stays Start.
    updated = client.map_imports.update(_in_progress(uid, 40), update_mask=["meta_data.progress"])
    assert updated.status == mi.MAP_IMPORT_STATUS_START
    assert updated.meta_data.progress == 40


async def test_async_update_mask_and_expected_revision(aclient: AsyncClient, uid: str) -> None:
    created = await aclient.map_imports.create(mi.MapImport(import_request_id=uid))
    moved = await aclient.map_imports.update(
        _in_progress(uid, 10), update_mask=["status"], expected_revision=created.revision
    )
    assert moved.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
    assert moved.meta_data.progress == 0
    with pytest.raises(JobStatusError) as caught:
        await aclient.map_imports.update(_in_progress(uid, 20), expected_revision=created.revision)
    assert caught.value.code == Code.ABORTED
    assert (await aclient.map_imports.get(uid)) == moved  # the refused write changed nothing


def test_request_id_makes_creates_and_runs_idempotent(client: Client, uid: str) -> None:
    first = client.map_imports.create(mi.MapImport(import_request_id=uid), request_id=uid)
    assert client.map_imports.create(mi.MapImport(import_request_id=uid), request_id=uid) == first
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.create(mi.MapImport(import_request_id=uid), request_id=uid + "-2")
    assert caught.value.code == Code.ALREADY_EXISTS

    dataset = client.datasets.create(ds.Dataset(name=uid), request_id=uid)
    started = client.datasets.start_import(dataset.dataset_id, request_id=uid)
    again = client.datasets.start_import(dataset.dataset_id, request_id=uid)
    assert again.latest_run.id == started.latest_run.id


def test_page_size_and_page_token_of_the_history(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    for progress in (10, 20, 30, 40):
        client.map_imports.update(_in_progress(uid, progress))
    first = client.map_imports.history_page(uid, page_size=2)
    assert len(first.changes) == 2 and first.next_page_token
    second = client.map_imports.history_page(uid, page_size=2, page_token=first.next_page_token)
    third = client.map_imports.history_page(uid, page_size=2, page_token=second.next_page_token)
    assert third.next_page_token == ""
    paged = [c.revision for page in (first, second, third) for c in page.changes]
    assert paged == [c.revision for c in client.map_imports.history(uid, page_size=1000).changes]
    assert len(paged) == 5


def test_statuses_print_as_their_names(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    client.map_imports.update(_in_progress(uid, 50))
    changes = client.map_imports.history(uid).changes
    shown = [f"{change.revision} {change.status}" for change in changes]
    assert [line.split()[1] for line in shown] == [
        "MAP_IMPORT_STATUS_START",
        "MAP_IMPORT_STATUS_IN_PROGRESS",
    ]
    status = changes[-1].status
    assert isinstance(status, Status)
    assert int(status) == mi.MAP_IMPORT_STATUS_IN_PROGRESS  # still the number
    assert status.spelling == "InProgress"  # the documented spelling, as REST shows it
    assert int(client.map_imports.statuses["MAP_IMPORT_STATUS_DONE"]) == mi.MAP_IMPORT_STATUS_DONE
    assert str(client.deliveries.status(dl.PreparedDelivery())) == (
        "PREPARED_DELIVERY_STATUS_UNSPECIFIED"
    )


def test_watch_events_carry_status_names(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    client.map_imports.update(
        mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_CANCEL)
    )
    events = client.map_imports.watch([uid], until_settled=True, timeout=30)
    statuses = [str(event.status) for event in events if event.status is not None]
    assert statuses == ["MAP_IMPORT_STATUS_CANCEL"]


def test_lease_duration_out_of_range_is_refused_by_its_name(client: Client, uid: str) -> None:
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.create(mi.MapImport(import_request_id=uid), lease_duration=8 * 86400)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert any("lease_duration" in field for field, _ in caught.value.field_violations)


def test_metadata_reaches_the_server(databases: Databases) -> None:
    keys = {"rw": ("acme", ["read", "write"])}
    # No api_key on the client: the key travels only in the call's metadata.
    with keyed_server(databases.new("metadata"), keys) as keyed, Client(keyed.server.address) as c:
        key = [("x-api-key", keyed.keys["rw"])]
        created = c.map_imports.create(mi.MapImport(import_request_id="m"), metadata=key)
        assert c.map_imports.get("m", metadata=key) == created
        with pytest.raises(JobStatusError) as caught:
            c.map_imports.get("m")
        assert caught.value.code == Code.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("sync_class", "async_class"),
    [
        (sync.BaseKindClient, aio.AsyncBaseKindClient),
        (sync.KindClient, aio.AsyncKindClient),
        (sync.DeliveryClient, aio.AsyncDeliveryClient),
        (sync.DatasetClient, aio.AsyncDatasetClient),
        (sync.Client, aio.AsyncClient),
    ],
)
def test_the_async_client_has_the_sync_clients_methods(
    sync_class: type[Any], async_class: type[Any]
) -> None:
    def methods(cls: type[Any]) -> dict[str, list[tuple[str, Any, Any]]]:
        return {
            name: [
                (p.name, p.kind, p.default)
                for p in inspect.signature(member).parameters.values()
                if p.name != "grace"  # AsyncClient.close(grace): grpc.aio's own
            ]
            for name, member in inspect.getmembers(cls, callable)
            if not name.startswith("_")
        }

    assert methods(async_class) == methods(sync_class)
    for name in methods(sync_class):
        assert getattr(async_class, name).__doc__ == getattr(sync_class, name).__doc__, name
