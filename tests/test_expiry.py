"""Time-driven transitions: a done delivery becomes delete, a Done map import Expired, by itself.

Each is a stored change with its own revision (the event watchers will see), not
a view computed when the job is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs
from tests.serverproc import ServerProcess

LIFETIME = 2  # seconds a done delivery stays in the cache
DEADLINE = 20.0  # generous: the transition is due after ~2 s and the timer ticks every second


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, ["--delivery-cache-lifetime", str(LIFETIME)]).start()
    yield proc
    proc.stop()


def _wait_for(read: Callable[[], Message], done: Callable[[Message], bool]) -> Message:
    deadline = time.monotonic() + DEADLINE
    while True:
        current = read()
        if done(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE} s; last seen:\n{current}")
        time.sleep(0.2)


def _artifacts(catalog_id: str) -> list[dl.Artifact]:
    return [
        dl.Artifact(
            item_key="a.gpkg", artifact_type="gpkg", url=f"https://c.example/{catalog_id}", size=9
        )
    ]


def _delivery(stubs: Stubs, catalog_id: str) -> dl.PreparedDelivery:
    request = dl.GetPreparedDeliveryStatusRequest(catalog_id=catalog_id)
    return stubs.deliveries.GetPreparedDeliveryStatus(request).prepared_delivery


def _map(stubs: Stubs, job_id: str) -> mi.MapImport:
    request = mi.GetMapImportStatusRequest(import_request_id=job_id)
    return stubs.maps.GetMapImportStatus(request).map_import


def _revision_now(stubs: Stubs, uid: str) -> int:
    """The store's revision now: that of a fresh write."""
    request = mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    return stubs.maps.CreateMapImport(request).map_import.revision


@dataclass(frozen=True)
class Scheduled:
    """Jobs set up at once at the start of the module, so their waits overlap."""

    delivery: dl.PreparedDelivery  # done, with the server's expire_time
    maps: dict[str, mi.MapImport]  # by role: expiring, lasting, running
    soon: datetime


@pytest.fixture(scope="module")
def scheduled(stubs: Stubs) -> Scheduled:
    catalog_id = "expiry-delivery"
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=catalog_id)
        )
    )
    done = stubs.deliveries.UpdatePreparedDelivery(
        dl.UpdatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(
                catalog_id=catalog_id,
                status=dl.PREPARED_DELIVERY_STATUS_DONE,
                artifacts=_artifacts(catalog_id),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status", "artifacts"]),
        )
    ).prepared_delivery

    now = datetime.now(UTC)
    soon = now + timedelta(seconds=2)
    maps = {}
    for role, expiry, status in (
        ("expiring", soon, mi.MAP_IMPORT_STATUS_DONE),
        ("lasting", now + timedelta(days=30), mi.MAP_IMPORT_STATUS_DONE),
        # only Done expires: a job still running whose date has passed stays as it is
        ("running", now - timedelta(seconds=5), mi.MAP_IMPORT_STATUS_IN_PROGRESS),
    ):
        job_id = f"expiry-{role}"
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
        )
        job = mi.MapImport(
            import_request_id=job_id,
            status=status,
            meta_data=mi.MapImportMetaData(
                package_url=f"https://packages.example/{job_id}.gpkg",
                footprint="POLYGON((0 0,1 0,1 1,0 0))",
            ),
        )
        job.expire_time.FromDatetime(expiry)
        maps[role] = stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(map_import=job)
        ).map_import
    return Scheduled(delivery=done, maps=maps, soon=soon)


def test_done_delivery_becomes_delete_by_itself(
    stubs: Stubs, scheduled: Scheduled, uid: str
) -> None:
    done = scheduled.delivery
    catalog_id = done.catalog_id
    assert done.status == dl.PREPARED_DELIVERY_STATUS_DONE
    lifetime = done.expire_time.ToDatetime(UTC) - done.update_time.ToDatetime(UTC)
    assert abs(lifetime - timedelta(seconds=LIFETIME)) < timedelta(milliseconds=10)

    deleted = _wait_for(
        lambda: _delivery(stubs, catalog_id),
        lambda d: getattr(d, "status") == dl.PREPARED_DELIVERY_STATUS_DELETE,  # noqa: B009
    )
    assert isinstance(deleted, dl.PreparedDelivery)

    assert deleted.revision > done.revision
    assert deleted.update_time.ToDatetime(UTC) >= done.expire_time.ToDatetime(UTC)
    assert not deleted.HasField("expire_time")
    # stored: the status filter of the list (a query on the stored status) finds it
    listed = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(
            statuses=[dl.PREPARED_DELIVERY_STATUS_DELETE], page_size=1000
        )
    )
    assert list(listed.prepared_deliveries) == [deleted]
    # an event in the store's order: a later write gets a later revision
    assert _revision_now(stubs, uid) > deleted.revision
    # and reading again does not move it on
    assert _delivery(stubs, catalog_id) == deleted


def test_done_map_import_becomes_expired_by_itself(
    stubs: Stubs, scheduled: Scheduled, uid: str
) -> None:
    before = scheduled.maps
    assert [job.status for job in before.values()] == [
        mi.MAP_IMPORT_STATUS_DONE,
        mi.MAP_IMPORT_STATUS_DONE,
        mi.MAP_IMPORT_STATUS_IN_PROGRESS,
    ]
    expiring = before["expiring"].import_request_id

    expired = _wait_for(
        lambda: _map(stubs, expiring),
        lambda m: getattr(m, "status") == mi.MAP_IMPORT_STATUS_EXPIRED,  # noqa: B009
    )
    assert isinstance(expired, mi.MapImport)

    assert expired.revision > before["expiring"].revision
    assert expired.update_time.ToDatetime(UTC) >= scheduled.soon - timedelta(milliseconds=1)
    assert expired.meta_data.package_url == before["expiring"].meta_data.package_url
    listed = stubs.maps.ListMapImports(
        mi.ListMapImportsRequest(statuses=[mi.MAP_IMPORT_STATUS_EXPIRED], page_size=1000)
    )
    assert list(listed.map_imports) == [expired]
    assert _revision_now(stubs, uid) > expired.revision
    # the timer has run since the others' dates: they are untouched
    assert _map(stubs, before["lasting"].import_request_id) == before["lasting"]
    assert _map(stubs, before["running"].import_request_id) == before["running"]
    # Expired is a status like any other: Archived follows
    archived = stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=expiring, status=mi.MAP_IMPORT_STATUS_ARCHIVED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
    ).map_import
    assert archived.status == mi.MAP_IMPORT_STATUS_ARCHIVED
