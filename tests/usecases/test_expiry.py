"""Time-driven transitions: a done delivery becomes delete, a Done map import Expired, by itself.

Each is a stored change with its own revision, the event watchers see, not a view
computed when the job is read. The server's timer looks for due jobs every second
(Settings.timer_interval); a transition is checked against the server's own
timestamps: never before its expire_time, and no later than one tick plus slack.
The waits are live watches, bounded by their call deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from tests.conftest import Databases, Stubs
from tests.serverproc import ServerProcess
from tests.streams import take_changes, take_heartbeats

LIFETIME = 2  # seconds a done delivery stays in the cache
TIMER = 1.0  # seconds between the server's looks for due jobs (Settings.timer_interval)
# The most a transition may lag its expire_time, on the server's clock: one timer tick,
# plus slack for a loaded machine (the tick is a sleep after each run, not a fixed rate).
LATE = timedelta(seconds=TIMER + 2.0)
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
BEAT = duration_pb2.Duration(nanos=500_000_000)  # the shortest heartbeat the server allows
E = TypeVar("E", bound=Message)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, ["--delivery-cache-lifetime", str(LIFETIME)]).start()
    yield proc
    proc.stop()


def _on_time(update: Message, expire: Message, what: str) -> None:
    """The transition's update_time against the expire_time, both the server's."""
    moved = getattr(update, "ToDatetime")(UTC)  # noqa: B009
    due = getattr(expire, "ToDatetime")(UTC)  # noqa: B009
    assert moved >= due, f"{what} moved at {moved}, before its expire_time {due}"
    assert moved - due <= LATE, (
        f"{what} moved at {moved}, {(moved - due).total_seconds():.2f} s after its expire_time "
        f"{due}: the timer looks every {TIMER} s"
    )


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


def _map_history(stubs: Stubs, job_id: str) -> list[mi.MapImport]:
    request = mi.GetMapImportHistoryRequest(import_request_id=job_id, page_size=1000)
    return [c.map_import for c in stubs.maps.GetMapImportHistory(request).changes]


def _revision_now(stubs: Stubs, uid: str) -> int:
    """The store's revision now: that of a fresh write."""
    request = mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    return stubs.maps.CreateMapImport(request).map_import.revision


def _done_map(
    stubs: Stubs, job_id: str, status: mi.MapImportStatus.ValueType, expiry: datetime
) -> mi.MapImport:
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
    return stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job)).map_import


def _close(stream: grpc.CallIterator[E]) -> None:
    stream.cancel()  # type: ignore[no-untyped-call]


def _watch_map(
    stubs: Stubs, job_id: str, after: int, wait: float
) -> grpc.CallIterator[mi.WatchMapImportStatusResponse]:
    request = mi.WatchMapImportStatusRequest(
        import_request_ids=[job_id], start_revision=after, heartbeat_interval=BEAT
    )
    return stubs.maps.WatchMapImportStatus(request, timeout=wait)


@dataclass(frozen=True)
class Scheduled:
    """Jobs set up at once at the start of the module, so their waits overlap."""

    delivery: dl.PreparedDelivery  # done, with the server's expire_time
    maps: dict[str, mi.MapImport]  # by role: expiring, lasting, running


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
    maps = {}
    for role, expiry, status in (
        ("expiring", now + timedelta(seconds=2), mi.MAP_IMPORT_STATUS_DONE),
        ("lasting", now + timedelta(days=30), mi.MAP_IMPORT_STATUS_DONE),
        # only Done expires: a job still running whose date has passed stays as it is
        ("running", now - timedelta(seconds=5), mi.MAP_IMPORT_STATUS_IN_PROGRESS),
    ):
        maps[role] = _done_map(stubs, f"expiry-{role}", status, expiry)
    return Scheduled(delivery=done, maps=maps)


def test_done_delivery_becomes_delete_by_itself(
    stubs: Stubs, scheduled: Scheduled, uid: str
) -> None:
    done = scheduled.delivery
    catalog_id = done.catalog_id
    assert done.status == dl.PREPARED_DELIVERY_STATUS_DONE
    lifetime = done.expire_time.ToDatetime(UTC) - done.update_time.ToDatetime(UTC)
    assert abs(lifetime - timedelta(seconds=LIFETIME)) < timedelta(milliseconds=10), (
        f"a done delivery's expire_time is {lifetime} after it became done, not {LIFETIME} s"
    )

    # A watcher resumed from the done revision sees the time-driven change as an event.
    watch = stubs.deliveries.WatchPreparedDeliveryStatus(
        dl.WatchPreparedDeliveryStatusRequest(
            catalog_ids=[catalog_id], start_revision=done.revision, heartbeat_interval=BEAT
        ),
        timeout=LIFETIME + LATE.total_seconds() + 10,
    )
    try:
        (event,) = take_changes(
            watch, 1, "a done delivery past its expire_time never became delete"
        )
        deleted = event.prepared_delivery
        assert deleted.status == dl.PREPARED_DELIVERY_STATUS_DELETE, (
            f"the change after done was not the time-driven delete: {deleted}"
        )
        assert event.revision == deleted.revision > done.revision
        _on_time(deleted.update_time, done.expire_time, "a done delivery")
        # Exactly once: the timer ticks on, and nothing more happens to the job.
        take_heartbeats(watch, 3, "a deleted delivery changed again")
    finally:
        _close(watch)

    assert not deleted.HasField("expire_time")
    assert _delivery(stubs, catalog_id) == deleted
    # stored: the status filter of the list (a query on the stored status) finds it
    listed = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(
            statuses=[dl.PREPARED_DELIVERY_STATUS_DELETE], page_size=1000
        )
    )
    assert list(listed.prepared_deliveries) == [deleted]
    history = stubs.deliveries.GetPreparedDeliveryHistory(
        dl.GetPreparedDeliveryHistoryRequest(catalog_id=catalog_id)
    )
    assert [c.prepared_delivery for c in history.changes][-2:] == [done, deleted]
    # an event in the store's order: a later write gets a later revision
    assert _revision_now(stubs, uid) > deleted.revision


def test_done_map_import_becomes_expired_by_itself(
    stubs: Stubs, scheduled: Scheduled, uid: str
) -> None:
    before = scheduled.maps
    assert [job.status for job in before.values()] == [
        mi.MAP_IMPORT_STATUS_DONE,
        mi.MAP_IMPORT_STATUS_DONE,
        mi.MAP_IMPORT_STATUS_IN_PROGRESS,
    ]
    done = before["expiring"]
    expiring = done.import_request_id

    watch = _watch_map(stubs, expiring, done.revision, 2 + LATE.total_seconds() + 10)
    try:
        (event,) = take_changes(watch, 1, "a Done map import past its expire_time never expired")
        expired = event.map_import
        assert expired.status == mi.MAP_IMPORT_STATUS_EXPIRED, (
            f"the change after Done was not the time-driven Expired: {expired}"
        )
        assert event.revision == expired.revision > done.revision
        _on_time(expired.update_time, done.expire_time, "a Done map import")
        take_heartbeats(watch, 3, "an Expired map import changed again")
    finally:
        _close(watch)

    assert expired.meta_data.package_url == done.meta_data.package_url
    assert _map(stubs, expiring) == expired
    assert _map_history(stubs, expiring)[-2:] == [done, expired]
    listed = stubs.maps.ListMapImports(
        mi.ListMapImportsRequest(statuses=[mi.MAP_IMPORT_STATUS_EXPIRED], page_size=1000)
    )
    assert list(listed.map_imports) == [expired], (
        "a map import other than the due Done one became Expired"
    )
    assert _revision_now(stubs, uid) > expired.revision
    # the timer has run since the others' dates: they are untouched
    for role in ("lasting", "running"):
        assert _map(stubs, before[role].import_request_id) == before[role], (
            f"the {role} map import was moved by the timer"
        )
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


def test_a_job_due_while_the_server_is_down_moves_once_after_restart(
    databases: Databases,
) -> None:
    server = ServerProcess(databases.new("expiry-restart")).start()
    stubs = Stubs.connect(server.address)
    try:
        now = datetime.now(UTC)
        moved_before = _done_map(stubs, "restart-early", mi.MAP_IMPORT_STATUS_DONE, now)
        due = _done_map(stubs, "restart-due", mi.MAP_IMPORT_STATUS_DONE, now + timedelta(seconds=2))
        watch = _watch_map(stubs, "restart-early", moved_before.revision, LATE.total_seconds() + 10)
        try:
            (early,) = take_changes(watch, 1, "a Done map import already due never expired")
        finally:
            _close(watch)
        assert early.map_import.status == mi.MAP_IMPORT_STATUS_EXPIRED
        stubs.channel.close()
        server.stop()

        # Down until the second job is due (a sleep, not an assertion on time).
        time.sleep(max(0.0, (due.expire_time.ToDatetime(UTC) - datetime.now(UTC)).total_seconds()))
        time.sleep(0.5)
        server.start()
        stubs = Stubs.connect(server.address)
        watch = _watch_map(stubs, "restart-due", due.revision, LATE.total_seconds() + 10)
        try:
            (event,) = take_changes(
                watch, 1, "a map import due while the server was down never expired"
            )
            expired = event.map_import
            assert expired.status == mi.MAP_IMPORT_STATUS_EXPIRED
            assert event.revision == expired.revision > early.revision
            assert expired.update_time.ToDatetime(UTC) >= due.expire_time.ToDatetime(UTC)
            take_heartbeats(watch, 3, "a map import expired after a restart changed again")
        finally:
            _close(watch)
        # Exactly once each, before and after the restart.
        assert _map_history(stubs, "restart-due")[-2:] == [due, expired], (
            "a job due while the server was down did not move exactly once"
        )
        assert _map_history(stubs, "restart-early")[-2:] == [moved_before, early.map_import], (
            "a job that expired before the restart moved again after it"
        )
    finally:
        stubs.channel.close()
        server.stop()
