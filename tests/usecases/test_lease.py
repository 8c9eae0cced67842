"""The lease: a job whose runner stops reporting fails by itself, as an event watchers see.

A write's lease_duration gives the job a lease (lease_expire_time = now + duration);
a job not settled by then moves once to its kind's failed status with the reason
"lease expired: no report from the runner within <duration>", checked on the
server's own clock: never before the deadline, no later than one timer tick plus
slack. Renewing keeps a job alive; settling clears its lease. Where a test must know
that the timer has passed a deadline without acting, a witness job whose lease runs
out later is watched until it fails: no sleeps stand in for assertions.

One concept past 400 lines: the lease of the four kinds, each kind's way to a leased
job and its failed status described once (KINDS) and shared by every test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as ci
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2, watch_pb2
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.rpcerrors import failure_of
from tests.serverproc import ServerProcess
from tests.streams import take_changes, take_heartbeats

LEASE = 2  # seconds
TIMER = 1.0  # seconds between the server's looks for due jobs (Settings.timer_interval)
# The most a move may lag the deadline on the server's clock: a tick, plus slack for a
# loaded machine (the tick is a sleep after each run, not a fixed rate).
LATE = timedelta(seconds=TIMER + 2.0)
WAIT = LEASE + LATE.total_seconds() + 10  # a watch's deadline
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
BEAT = duration_pb2.Duration(nanos=500_000_000)  # the shortest heartbeat the server allows
REASON = f"lease expired: no report from the runner within {LEASE}s"


def _lease(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _on_time(moved: Message, leased: Message, what: str, late: timedelta) -> None:
    """The move's update_time against the lease's deadline, both the server's: not
    before it, and no more than `late` after it."""
    at = getattr(moved, "update_time").ToDatetime(UTC)  # noqa: B009
    deadline = getattr(leased, "lease_expire_time").ToDatetime(UTC)  # noqa: B009
    assert at >= deadline, f"{what} failed at {at}, before its lease ran out at {deadline}"
    assert at - deadline <= late, (
        f"{what} failed at {at}, {(at - deadline).total_seconds():.2f} s after its lease ran "
        f"out at {deadline}: the timer looks every {TIMER} s"
    )


@dataclass(frozen=True)
class KindUnderTest:
    """What the tests need of one kind: a leased job made, watched, read and checked."""

    name: str
    id_field: str
    make: Callable[[Stubs, str, duration_pb2.Duration | None], Message]  # -> the leased job
    watch: Callable[[Stubs, str, int], grpc.CallIterator[Any]]
    job_of: Callable[[Any], Message]  # the job of a watch event
    history: Callable[[Stubs, str], list[Message]]
    failed: Callable[[Message], None]  # asserts the job is in the kind's failed status


def _make_map(stubs: Stubs, job_id: str, lease: duration_pb2.Duration | None) -> mi.MapImport:
    request = mi.CreateMapImportRequest(
        map_import=mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_START),
        lease_duration=lease,
    )
    return stubs.maps.CreateMapImport(request).map_import


def _map_failed(job: Message) -> None:
    assert isinstance(job, mi.MapImport)
    assert job.status == mi.MAP_IMPORT_STATUS_ERROR, job
    assert job.error == errors_pb2.Error(
        error_code=errors_pb2.ERROR_CODE_MAP_UNKNOWN, message=REASON
    )


def _make_delivery(stubs: Stubs, job_id: str, lease: duration_pb2.Duration | None) -> Message:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=job_id))
    )
    # the lease comes with the runner's first report, as an update
    request = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=dl.PreparedDelivery(
            catalog_id=job_id, status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS, progress=10
        ),
        lease_duration=lease,
    )
    return stubs.deliveries.UpdatePreparedDelivery(request).prepared_delivery


def _delivery_failed(job: Message) -> None:
    assert isinstance(job, dl.PreparedDelivery)
    assert job.status == dl.PREPARED_DELIVERY_STATUS_ERROR, job
    assert job.error == errors_pb2.Error(
        error_code=errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN, message=REASON
    )
    assert job.progress == 10


def _make_catalog(stubs: Stubs, job_id: str, lease: duration_pb2.Duration | None) -> Message:
    request = ci.CreateImportRequest(
        catalog_import=ci.CatalogImport(id=job_id, type=ci.CATALOG_IMPORT_TYPE_SYNONYMS),
        lease_duration=lease,
    )
    return stubs.catalog.CreateImport(request).catalog_import


def _catalog_failed(job: Message) -> None:
    assert isinstance(job, ci.CatalogImport)
    assert job.status == ci.CATALOG_IMPORT_STATUS_FAILURE, job
    assert job.message == REASON


def _make_dataset(stubs: Stubs, job_id: str, lease: duration_pb2.Duration | None) -> ds.Dataset:
    stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset(dataset_id=job_id, name="leased"))
    )
    request = ds.StartDatasetImportRequest(dataset_id=job_id, lease_duration=lease)
    return stubs.datasets.StartDatasetImport(request).dataset


def _dataset_failed(job: Message) -> None:
    assert isinstance(job, ds.Dataset)
    run = job.latest_run
    assert run.status == ds.DATASET_IMPORT_STATUS_FAILED, job
    (step,) = run.steps
    assert step.name == ds.DATASET_IMPORT_STEP_NAME_FETCH
    assert step.status == ds.DATASET_IMPORT_STATUS_FAILED
    assert step.end == job.update_time
    (entry,) = step.entries
    assert (entry.detail, entry.level) == (REASON, ds.DATASET_LOG_LEVEL_ERROR)
    assert entry.created_at == job.update_time


KINDS = {
    "map_import": KindUnderTest(
        "map_import",
        "import_request_id",
        _make_map,
        lambda s, i, r: s.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(
                import_request_ids=[i], start_revision=r, heartbeat_interval=BEAT
            ),
            timeout=WAIT,
        ),
        lambda e: e.map_import,
        lambda s, i: [
            c.map_import
            for c in s.maps.GetMapImportHistory(
                mi.GetMapImportHistoryRequest(import_request_id=i, page_size=1000)
            ).changes
        ],
        _map_failed,
    ),
    "prepared_delivery": KindUnderTest(
        "prepared_delivery",
        "catalog_id",
        _make_delivery,
        lambda s, i, r: s.deliveries.WatchPreparedDeliveryStatus(
            dl.WatchPreparedDeliveryStatusRequest(
                catalog_ids=[i], start_revision=r, heartbeat_interval=BEAT
            ),
            timeout=WAIT,
        ),
        lambda e: e.prepared_delivery,
        lambda s, i: [
            c.prepared_delivery
            for c in s.deliveries.GetPreparedDeliveryHistory(
                dl.GetPreparedDeliveryHistoryRequest(catalog_id=i, page_size=1000)
            ).changes
        ],
        _delivery_failed,
    ),
    "catalog_import": KindUnderTest(
        "catalog_import",
        "id",
        _make_catalog,
        lambda s, i, r: s.catalog.WatchImportStatus(
            ci.WatchImportStatusRequest(ids=[i], start_revision=r, heartbeat_interval=BEAT),
            timeout=WAIT,
        ),
        lambda e: e.catalog_import,
        lambda s, i: [
            c.catalog_import
            for c in s.catalog.GetImportHistory(
                ci.GetImportHistoryRequest(id=i, page_size=1000)
            ).changes
        ],
        _catalog_failed,
    ),
    "dataset": KindUnderTest(
        "dataset",
        "dataset_id",
        _make_dataset,
        lambda s, i, r: s.datasets.WatchDatasetStatus(
            ds.WatchDatasetStatusRequest(
                dataset_ids=[i], start_revision=r, heartbeat_interval=BEAT
            ),
            timeout=WAIT,
        ),
        lambda e: e.dataset,
        lambda s, i: [
            c.dataset
            for c in s.datasets.GetDatasetHistory(
                ds.GetDatasetHistoryRequest(dataset_id=i, page_size=1000)
            ).changes
        ],
        _dataset_failed,
    ),
}
# The ids of the jobs the module fixture leases at once, so that their waits overlap.
IDS = {
    "map_import": "lease-map",
    "prepared_delivery": "lease-delivery",
    "catalog_import": "4242000001",
    "dataset": "3f1c2b9e-4d5a-4e6f-8a7b-0c1d2e3f4a5b",
}


@pytest.fixture(scope="module")
def leased(stubs: Stubs) -> dict[str, Message]:
    """One leased job of each kind, made at once at the start of the module."""
    return {name: KINDS[name].make(stubs, IDS[name], _lease(LEASE)) for name in KINDS}


def _fails_once(
    stubs: Stubs, kind: KindUnderTest, leased: Message, late: timedelta = LATE
) -> Message:
    """Watch `leased` fail by its lease, once, no more than `late` after its deadline;
    return the failed job."""
    job_id = str(getattr(leased, kind.id_field))
    watch = kind.watch(stubs, job_id, int(getattr(leased, "revision")))  # noqa: B009
    try:
        (event,) = take_changes(watch, 1, f"a leased {kind.name} never failed by its lease")
        failed = kind.job_of(event)
        kind.failed(failed)
        assert event.revision == getattr(failed, "revision") > getattr(leased, "revision")  # noqa: B009
        _on_time(failed, leased, f"a leased {kind.name}", late)
        take_heartbeats(watch, 3, f"a {kind.name} failed by its lease changed again")
    finally:
        watch.cancel()  # type: ignore[no-untyped-call]
    assert not failed.HasField("lease_expire_time") and not failed.HasField("lease_duration")
    assert kind.history(stubs, job_id)[-2:] == [leased, failed]
    return failed


@pytest.mark.parametrize("name", list(KINDS))
def test_a_job_whose_lease_runs_out_fails_once_as_an_event(
    stubs: Stubs, leased: dict[str, Message], name: str
) -> None:
    job: Any = leased[name]
    deadline = job.lease_expire_time.ToDatetime(UTC)
    assert deadline - job.update_time.ToDatetime(UTC) == timedelta(seconds=LEASE)
    assert job.lease_duration == _lease(LEASE)
    _fails_once(stubs, KINDS[name], job)


def test_renewing_keeps_a_job_alive_and_an_update_without_lease_keeps_it(
    stubs: Stubs, uid: str
) -> None:
    kind = KINDS["map_import"]
    job = _make_map(stubs, uid, _lease(LEASE))
    first_deadline = job.lease_expire_time.ToDatetime(UTC)
    # A witness leased after it: once the witness fails, the timer has run past the
    # deadline the renewals moved away from.
    witness = _make_map(stubs, f"{uid}-witness", _lease(LEASE))
    renewal = mi.UpdateMapImportRequest(
        map_import=mi.MapImport(import_request_id=uid), lease_duration=_lease(LEASE)
    )
    watch = kind.watch(stubs, witness.import_request_id, witness.revision)
    renewed = job
    try:
        for event in watch:  # renew on each heartbeat (every 0.5 s) until the witness fails
            if event.type == CHANGE:
                _map_failed(event.map_import)
                break
            renewed = stubs.maps.UpdateMapImport(renewal).map_import  # no fields: a renewal
    finally:
        watch.cancel()  # type: ignore[no-untyped-call]
    assert renewed.status == mi.MAP_IMPORT_STATUS_START
    assert renewed.lease_expire_time.ToDatetime(UTC) > first_deadline
    assert renewed.lease_expire_time.ToDatetime(UTC) - renewed.update_time.ToDatetime(
        UTC
    ) == timedelta(seconds=LEASE)
    current = stubs.maps.GetMapImportStatus(
        mi.GetMapImportStatusRequest(import_request_id=uid)
    ).map_import
    assert current == renewed, "a renewed job was moved by its first lease"
    # A report without lease_duration keeps the lease as it is.
    progressed = stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=uid,
                status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                meta_data=mi.MapImportMetaData(progress=40),
            )
        )
    ).map_import
    assert progressed.lease_expire_time == renewed.lease_expire_time
    assert progressed.lease_duration == renewed.lease_duration
    # Then the runner goes silent: the lease it last set runs out.
    _fails_once(stubs, kind, progressed)


@pytest.mark.parametrize(
    ("name", "settle"),
    [
        (
            "map_import",
            lambda s, i: (
                s.maps.UpdateMapImport(
                    mi.UpdateMapImportRequest(
                        map_import=mi.MapImport(
                            import_request_id=i, status=mi.MAP_IMPORT_STATUS_CANCEL
                        ),
                        lease_duration=_lease(LEASE),  # asked while settling: no lease
                    )
                ).map_import
            ),
        ),
        (
            "dataset",
            lambda s, i: (
                s.datasets.UpdateDatasetImport(
                    ds.UpdateDatasetImportRequest(
                        dataset_id=i,
                        step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
                        step_status=ds.DATASET_IMPORT_STATUS_FAILED,
                    )
                ).dataset
            ),
        ),
    ],
    ids=["map_import", "dataset"],
)
def test_settling_clears_the_lease(
    stubs: Stubs, uid: str, name: str, settle: Callable[[Stubs, str], Message]
) -> None:
    kind = KINDS[name]
    job_id = _uuid(uid) if name == "dataset" else uid
    job = kind.make(stubs, job_id, _lease(LEASE))
    assert job.HasField("lease_expire_time")
    settled = settle(stubs, job_id)
    assert not settled.HasField("lease_expire_time") and not settled.HasField("lease_duration")
    witness = _make_map(stubs, f"{uid}-witness", _lease(LEASE))  # its lease runs out later
    _fails_once(stubs, KINDS["map_import"], witness)
    assert kind.history(stubs, job_id)[-2:] == [job, settled], (
        f"a settled {name} was moved by the lease it held before it settled"
    )


def _uuid(uid: str) -> str:
    digits = uid.removeprefix("t-")
    return f"{digits[:8]}-{digits[8:12]}-4000-8000-000000000000"


def test_a_lease_that_runs_out_while_the_server_is_down_fails_the_job_once_after_restart(
    databases: Databases,
) -> None:
    server = ServerProcess(databases.new("lease-restart")).start()
    stubs = Stubs.connect(server.address)
    try:
        job = _make_map(stubs, "lease-restart", _lease(LEASE))
        stubs.channel.close()
        server.stop()
        # Down until the lease has run out (a sleep, not an assertion on time).
        deadline = job.lease_expire_time.ToDatetime(UTC)
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)
        began = datetime.now(UTC)
        server.start()
        stubs = Stubs.connect(server.address)
        # Not before its deadline; at the latest one tick after the server is back.
        late = datetime.now(UTC) - deadline + LATE
        assert began >= deadline
        _fails_once(stubs, KINDS["map_import"], job, late)
    finally:
        stubs.channel.close()
        server.stop()


BAD = {
    "negative": duration_pb2.Duration(seconds=-5),
    "under a second": duration_pb2.Duration(nanos=500_000_000),
    "over 7 days": duration_pb2.Duration(seconds=7 * 86400 + 1),
    "absurd": duration_pb2.Duration(seconds=315576000000),
    "mixed signs": duration_pb2.Duration(seconds=5, nanos=-1),
}


@pytest.mark.parametrize("bad", list(BAD))
def test_a_bad_lease_duration_is_refused_and_changes_nothing(
    stubs: Stubs, uid: str, bad: str
) -> None:
    lease = BAD[bad]
    writes: list[tuple[str, Callable[[], Any]]] = [
        (
            "CreateMapImport",
            lambda: stubs.maps.CreateMapImport(
                mi.CreateMapImportRequest(
                    map_import=mi.MapImport(import_request_id=uid), lease_duration=lease
                )
            ),
        ),
    ]
    job = _make_map(stubs, f"{uid}-kept", _lease(LEASE * 30))
    dataset = _make_dataset(stubs, _uuid(uid), None)
    writes += [
        (
            "UpdateMapImport",
            lambda: stubs.maps.UpdateMapImport(
                mi.UpdateMapImportRequest(
                    map_import=mi.MapImport(import_request_id=job.import_request_id),
                    lease_duration=lease,
                )
            ),
        ),
        (
            "UpdateDatasetImport",
            lambda: stubs.datasets.UpdateDatasetImport(
                ds.UpdateDatasetImportRequest(
                    dataset_id=dataset.dataset_id,
                    step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
                    lease_duration=lease,
                )
            ),
        ),
    ]
    for rpc, write in writes:
        with pytest.raises(grpc.RpcError) as caught:
            write()
        failure = failure_of(caught.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, (rpc, failure)
        assert failure.fields == ["lease_duration"], (rpc, failure)
    with pytest.raises(grpc.RpcError) as missing:
        stubs.maps.GetMapImportStatus(mi.GetMapImportStatusRequest(import_request_id=uid))
    assert failure_of(missing.value).code == grpc.StatusCode.NOT_FOUND
    assert KINDS["map_import"].history(stubs, job.import_request_id) == [job]
    assert KINDS["dataset"].history(stubs, _uuid(uid))[-1] == dataset


def test_a_renewal_of_a_dataset_run_needs_no_log_entry(stubs: Stubs, uid: str) -> None:
    job = _make_dataset(stubs, _uuid(uid), _lease(LEASE * 30))
    renewed = stubs.datasets.UpdateDatasetImport(
        ds.UpdateDatasetImportRequest(
            dataset_id=_uuid(uid),
            step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
            lease_duration=_lease(LEASE * 60),
        )
    ).dataset
    assert renewed.latest_run == job.latest_run
    assert renewed.lease_duration == _lease(LEASE * 60)
    assert renewed.lease_expire_time.ToDatetime(UTC) - renewed.update_time.ToDatetime(
        UTC
    ) == timedelta(seconds=LEASE * 60)


def test_the_documented_rest_body_has_no_lease(
    server: ServerProcess, uid: str, stubs: Stubs
) -> None:
    plain = _make_map(stubs, f"{uid}-plain", None)
    leased = _make_map(stubs, uid, _lease(LEASE * 30))
    assert leased.HasField("lease_expire_time") and not plain.HasField("lease_expire_time")
    bodies = [
        httpx.get(f"{server.http_url}/api/v2/map/import/status/{job_id}").json()
        for job_id in (f"{uid}-plain", uid)
    ]
    assert [sorted(body) for body in bodies] == [sorted(bodies[0])] * 2
    assert "lease" not in str(bodies[1]).lower()
