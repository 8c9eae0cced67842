"""The kind table's time-driven rules, in process: which jobs hold a lease, when it has
run out, when a job is next due (its lease or its timed status's expire_time, the
earlier), and how each kind fails a job whose lease ran out. tests/usecases/test_lease.py
holds the same rules end to end on a real server; these name the rule that broke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract import lease
from jobstatus_server.contract.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT, Kind

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


def leased(job: mi.MapImport, seconds: int = 30) -> mi.MapImport:
    lease.renew(job, duration_pb2.Duration(seconds=seconds), NOW)
    return job


def test_only_a_job_that_is_not_settled_holds_a_lease() -> None:
    assert MAP_IMPORT.holds_lease(mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS))
    assert MAP_IMPORT.holds_lease(mi.MapImport(status=mi.MAP_IMPORT_STATUS_START))
    assert not MAP_IMPORT.holds_lease(mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE))
    assert not MAP_IMPORT.holds_lease(mi.MapImport(status=mi.MAP_IMPORT_STATUS_ERROR))
    assert not MAP_IMPORT.holds_lease(mi.MapImport()), "status 0 (a dataset's no run) holds none"
    assert not DATASET.holds_lease(ds.Dataset(dataset_id="d")), "a dataset without a run"


def test_a_lease_runs_out_at_its_deadline_not_before() -> None:
    job = leased(mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS), 30)
    assert lease.deadline(job) == T + 30
    assert not MAP_IMPORT.lease_ran_out(job, T + 29.9)
    assert MAP_IMPORT.lease_ran_out(job, T + 30), "a lease has run out at its deadline"
    assert MAP_IMPORT.lease_ran_out(job, T + 31)
    assert not MAP_IMPORT.lease_ran_out(mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS), T)
    settled = leased(mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE), 30)
    assert not MAP_IMPORT.lease_ran_out(settled, T + 60), "a settled job's lease is no lease"


def test_a_job_is_due_at_the_earlier_of_its_lease_and_its_expiry() -> None:
    running = leased(mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS), 30)
    assert MAP_IMPORT.due(running) == T + 30
    # A running map import with an expire_time: only Done expires, so only the lease.
    running.expire_time.FromDatetime(NOW + timedelta(seconds=10))
    assert MAP_IMPORT.expires(running) is None
    assert MAP_IMPORT.due(running) == T + 30
    done = mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE)
    assert MAP_IMPORT.due(done) is None, "a Done map import without expire_time is never due"
    done.expire_time.FromDatetime(NOW + timedelta(seconds=10))
    assert MAP_IMPORT.expires(done) == T + 10
    assert MAP_IMPORT.due(done) == T + 10
    # Both (a delivery leased while it ran, then done): the earlier wins, either way.
    delivery = dl.PreparedDelivery(status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS)
    lease.renew(delivery, duration_pb2.Duration(seconds=30), NOW)
    delivery.expire_time.FromDatetime(NOW + timedelta(seconds=10))
    assert DELIVERY.due(delivery) == T + 30, "an in-progress delivery does not expire"
    for first, second in ((10, 30), (30, 10)):
        job = mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE)
        job.expire_time.FromDatetime(NOW + timedelta(seconds=first))
        lease.renew(job, duration_pb2.Duration(seconds=second), NOW)
        assert MAP_IMPORT.due(job) == T + first, "a settled job's lease does not count"


@pytest.mark.parametrize(
    ("kind", "job"),
    [
        (MAP_IMPORT, mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)),
        (DELIVERY, dl.PreparedDelivery(status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS)),
        (CATALOG_IMPORT, cat.CatalogImport(status=cat.CATALOG_IMPORT_STATUS_IN_PROGRESS)),
    ],
    ids=["map_import", "prepared_delivery", "catalog_import"],
)
def test_each_kind_fails_a_job_to_its_failed_status_with_the_reason(
    kind: Kind[Any], job: Message
) -> None:
    kind.fail(job, "lease expired: no report from the runner within 30s", NOW)
    if kind is MAP_IMPORT:
        assert isinstance(job, mi.MapImport)
        assert job.status == mi.MAP_IMPORT_STATUS_ERROR
        assert job.error.message == "lease expired: no report from the runner within 30s"
    elif kind is DELIVERY:
        assert isinstance(job, dl.PreparedDelivery)
        assert job.status == dl.PREPARED_DELIVERY_STATUS_ERROR
        assert job.error.error_code == errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN
        assert job.error.message == "lease expired: no report from the runner within 30s"
    else:
        assert isinstance(job, cat.CatalogImport)
        assert job.status == cat.CATALOG_IMPORT_STATUS_FAILURE
        assert job.message == "lease expired: no report from the runner within 30s"
    assert kind.is_settled(job), f"{kind.name}'s failed status is settled"


def test_a_map_import_failed_by_its_lease_loses_an_earlier_error() -> None:
    job = mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    job.error.message = "old"
    job.error.error_code = errors_pb2.ERROR_CODE_MAP_UNKNOWN
    MAP_IMPORT.fail(job, "lease expired", NOW)
    assert job.error.message == "lease expired"
    assert job.error.error_code == errors_pb2.ErrorCode.Value("ERROR_CODE_UNSPECIFIED")
