"""Retention (--retention-age): a job settled with no change for longer than the age is
deleted with its history, as a DELETED event watchers see (gRPC and SSE); from then on
every path answers as for an id that never existed.

The server here deletes after AGE seconds and looks every half second. Deletions are
awaited as watch events, bounded by the call's deadline; each is checked against the
job's last change: never earlier than AGE after it.

One concept past 400 lines: the retention policy, end to end (the four kinds' paths
described once in KINDS, a second replica, the plans of its statements, its flag).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as ci
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2, watch_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.composition import config
from jobstatus_server.state.migrations import upgrade
from jobstatus_server.state.readers import SETTLED_BEFORE
from jobstatus_server.state.sql import Statements
from tests.conftest import Databases, Stubs
from tests.http_api.test_sse import Events
from tests.pg import PgCluster
from tests.rpcerrors import failure_of
from tests.serverproc import ServerProcess

AGE = 2.0  # seconds a settled job is kept
WAIT = AGE + 15  # a watch's deadline: the age, the look interval, a loaded machine
BEAT = 0.5  # the shortest heartbeat the server allows, in seconds
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
DELETED = watch_pb2.WATCH_EVENT_TYPE_DELETED
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    # no dataset rate limit: the documented dataset path is asked twice at once
    args = [
        "--retention-age",
        str(AGE),
        "--compact-interval",
        "0.5",
        "--dataset-rate-interval",
        "0",
    ]
    proc = ServerProcess(database_url, extra_args=args).start()
    yield proc
    proc.stop()


@dataclass(frozen=True)
class KindUnderTest:
    """One kind as these tests use it: a settled job made, and its paths."""

    name: str
    id_field: str
    settle: Callable[[Stubs, str], Message]  # creates and settles a job; the settled job
    new_id: Callable[[], str]
    watch: Callable[[Stubs, str, int], Any]  # (ids, start revision) -> the stream
    get: Callable[[Stubs, str], Message]
    history: Callable[[Stubs, str], Any]
    rest: str  # the documented path, {id} for the job's id
    not_found: str  # the reason of gRPC's NOT_FOUND


def _settled_map(stubs: Stubs, job_id: str) -> Message:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    )
    request = mi.UpdateMapImportRequest(
        map_import=mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_CANCEL)
    )
    return stubs.maps.UpdateMapImport(request).map_import


def _settled_delivery(stubs: Stubs, job_id: str) -> Message:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=job_id))
    )
    request = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=dl.PreparedDelivery(
            catalog_id=job_id,
            status=dl.PREPARED_DELIVERY_STATUS_ERROR,
            error=errors_pb2.Error(error_code=errors_pb2.ERROR_CODE_DELIVERY_NOT_EXIST),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["status", "error"]),
    )
    return stubs.deliveries.UpdatePreparedDelivery(request).prepared_delivery


def _settled_dataset(stubs: Stubs, job_id: str) -> Message:
    stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset(dataset_id=job_id)))
    stubs.datasets.StartDatasetImport(ds.StartDatasetImportRequest(dataset_id=job_id))
    request = ds.UpdateDatasetImportRequest(
        dataset_id=job_id,
        step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
        step_status=ds.DATASET_IMPORT_STATUS_FAILED,
    )
    return stubs.datasets.UpdateDatasetImport(request).dataset


def _settled_catalog(stubs: Stubs, job_id: str) -> Message:
    created = stubs.catalog.CreateImport(
        ci.CreateImportRequest(
            catalog_import=ci.CatalogImport(id=job_id, type=ci.CATALOG_IMPORT_TYPE_ADS)
        )
    ).catalog_import
    request = ci.UpdateImportRequest(
        catalog_import=ci.CatalogImport(
            id=created.id, type=created.type, status=ci.CATALOG_IMPORT_STATUS_ABORTED
        )
    )
    return stubs.catalog.UpdateImport(request).catalog_import


KINDS = {
    "map_import": KindUnderTest(
        "map_import",
        "import_request_id",
        _settled_map,
        lambda: f"ret-{uuid.uuid4().hex[:12]}",
        lambda s, i, r: s.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(
                import_request_ids=[i], start_revision=r, heartbeat_interval=_beat()
            ),
            timeout=WAIT,
        ),
        lambda s, i: (
            s.maps.GetMapImportStatus(mi.GetMapImportStatusRequest(import_request_id=i)).map_import
        ),
        lambda s, i: s.maps.GetMapImportHistory(mi.GetMapImportHistoryRequest(import_request_id=i)),
        "/api/v1/map/import/status/{id}",
        "MAP.notFound",
    ),
    "prepared_delivery": KindUnderTest(
        "prepared_delivery",
        "catalog_id",
        _settled_delivery,
        lambda: f"ret-{uuid.uuid4().hex[:12]}",
        lambda s, i, r: s.deliveries.WatchPreparedDeliveryStatus(
            dl.WatchPreparedDeliveryStatusRequest(
                catalog_ids=[i], start_revision=r, heartbeat_interval=_beat()
            ),
            timeout=WAIT,
        ),
        lambda s, i: (
            s.deliveries.GetPreparedDeliveryStatus(
                dl.GetPreparedDeliveryStatusRequest(catalog_id=i)
            ).prepared_delivery
        ),
        lambda s, i: s.deliveries.GetPreparedDeliveryHistory(
            dl.GetPreparedDeliveryHistoryRequest(catalog_id=i)
        ),
        "/api/v1/delivery/preparedDelivery/{id}?source=remote",
        "DELIVERY.notFound",
    ),
    "dataset": KindUnderTest(
        "dataset",
        "dataset_id",
        _settled_dataset,
        lambda: str(uuid.uuid4()),
        lambda s, i, r: s.datasets.WatchDatasetStatus(
            ds.WatchDatasetStatusRequest(
                dataset_ids=[i], start_revision=r, heartbeat_interval=_beat()
            ),
            timeout=WAIT,
        ),
        lambda s, i: s.datasets.GetDatasetStatus(ds.GetDatasetStatusRequest(dataset_id=i)).dataset,
        lambda s, i: s.datasets.GetDatasetHistory(ds.GetDatasetHistoryRequest(dataset_id=i)),
        "/datasets/{id}/status",
        "DATASET_NOT_FOUND",
    ),
    "catalog_import": KindUnderTest(
        "catalog_import",
        "id",
        _settled_catalog,
        lambda: str(uuid.uuid4().int % 10**18 + 10**18),
        lambda s, i, r: s.catalog.WatchImportStatus(
            ci.WatchImportStatusRequest(ids=[i], start_revision=r, heartbeat_interval=_beat()),
            timeout=WAIT,
        ),
        lambda s, i: s.catalog.GetImportStatus(ci.GetImportStatusRequest(id=i)).catalog_import,
        lambda s, i: s.catalog.GetImportHistory(ci.GetImportHistoryRequest(id=i)),
        "/api/v2/import/status/{id}",
        "IMPORT_NOT_FOUND",
    ),
}


def _beat() -> duration_pb2.Duration:
    return duration_pb2.Duration(nanos=int(BEAT * 1e9))


def _seconds(stamp: Any) -> float:
    return float(stamp.ToDatetime(UTC).timestamp())


def _next_event(stream: Any, what: str) -> Any:
    """The next event other than a heartbeat; the call's deadline bounds the wait."""
    seen: list[str] = []
    try:
        for event in stream:
            if event.type != HEARTBEAT:
                return event
            seen.append("HEARTBEAT")
    except grpc.RpcError as error:
        raise AssertionError(f"{what}: the watch ended with {error.code()}; saw {seen}") from error
    raise AssertionError(f"{what}: the watch ended with OK; saw {seen}")


def _deleted(stubs: Stubs, kind: KindUnderTest, job: Message, what: str) -> Any:
    """Watch `job` (from its revision) until its DELETED event; check it and return it."""
    job_id = str(getattr(job, kind.id_field))
    stream = kind.watch(stubs, job_id, int(getattr(job, "revision")))  # noqa: B009
    try:
        event = _next_event(stream, what)
        seen_at = time.time()
        assert event.type == DELETED, f"{what}: the next event was not DELETED: {event}"
        last_state = getattr(event, kind.name)  # the job field of each Watch*Response
        assert last_state == job, f"{what}: the DELETED event does not carry the last state"
        assert event.revision > int(getattr(job, "revision"))  # noqa: B009
        # not before the age had passed since the job's last change (one clock: one host)
        assert seen_at >= _seconds(getattr(job, "update_time")) + AGE, what  # noqa: B009
        # and once: the stream goes on with heartbeats only
        for _, beat in zip(range(2), stream, strict=False):
            assert beat.type == HEARTBEAT, f"{what}: after DELETED came {beat}"
    finally:
        stream.cancel()
    return event


def _answer(http: httpx.Client, path: str, job_id: str) -> tuple[int, str]:
    response = http.get(path.format(id=job_id))
    return response.status_code, response.text.replace(job_id, "{id}")


@pytest.fixture(scope="module")
def settled(stubs: Stubs) -> dict[str, Message]:
    """A settled job of each kind, made at once at the start of the module."""
    return {name: kind.settle(stubs, kind.new_id()) for name, kind in KINDS.items()}


@pytest.mark.parametrize("name", list(KINDS))
def test_a_job_settled_longer_than_the_age_is_deleted_and_then_unknown(
    stubs: Stubs, http: httpx.Client, settled: dict[str, Message], name: str
) -> None:
    kind, job = KINDS[name], settled[name]
    job_id = str(getattr(job, kind.id_field))
    _deleted(stubs, kind, job, f"a settled {name}")

    never = kind.new_id()  # an id that never existed: the answers must be the same
    for call in (kind.get, kind.history):
        for asked in (job_id, never):
            with pytest.raises(grpc.RpcError) as caught:
                call(stubs, asked)
            failure = failure_of(caught.value)
            assert failure.code == grpc.StatusCode.NOT_FOUND, (name, asked, failure)
            assert failure.info is not None and failure.info.reason == kind.not_found
    assert _answer(http, kind.rest, job_id) == _answer(http, kind.rest, never), (
        f"the documented path of a deleted {name} does not answer as for an unknown id"
    )


def test_the_sse_watch_sends_a_deleted_event_with_the_last_state(
    stubs: Stubs, http: httpx.Client
) -> None:
    kind = KINDS["map_import"]
    job = kind.settle(stubs, kind.new_id())
    assert isinstance(job, mi.MapImport)
    query = f"ids={job.import_request_id}"
    headers = {"last-event-id": str(job.revision)}
    with http.stream(
        "GET", f"/api/v1/watch/map_import?{query}", headers=headers, timeout=WAIT
    ) as response:
        assert response.status_code == 200
        events = Events(response)
        event = events.next("a settled map import is deleted", "event: deleted")
        while event["event"] == "heartbeat":
            event = events.next("a settled map import is deleted", "event: deleted")
    assert event["event"] == "deleted", events.saw()
    assert int(event["id"]) > job.revision
    assert event["data"]["importRequestId"] == job.import_request_id
    assert event["data"]["status"] == "Cancel"


def test_a_change_while_settled_restarts_the_age_and_a_running_job_is_kept(
    stubs: Stubs,
) -> None:
    kind = KINDS["map_import"]
    running = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=kind.new_id()))
    ).map_import
    first = kind.settle(stubs, kind.new_id())
    assert isinstance(first, mi.MapImport)
    time.sleep(AGE / 2)  # spaces the two changes; what is checked is each job's own age
    changed = stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=first.import_request_id,
                error=errors_pb2.Error(message="cancelled by the operator"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["error"]),
        )
    ).map_import
    assert changed.status == mi.MAP_IMPORT_STATUS_CANCEL and changed.revision > first.revision
    _deleted(stubs, kind, changed, "a settled map import changed while settled")
    # The running job, older than the age, is not settled: kept.
    assert kind.get(stubs, running.import_request_id) == running


def test_a_new_job_of_a_deleted_id_has_a_history_of_its_own(stubs: Stubs) -> None:
    kind = KINDS["map_import"]
    job = kind.settle(stubs, kind.new_id())
    assert isinstance(job, mi.MapImport)
    _deleted(stubs, kind, job, "a settled map import")
    again = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job.import_request_id))
    ).map_import
    assert again.status == mi.MAP_IMPORT_STATUS_START and again.revision > job.revision
    history = kind.history(stubs, job.import_request_id)
    assert [c.map_import for c in history.changes] == [again]
    assert not history.truncated
    # The initial state of a watch of every job shows the new job, not the deleted one.
    stream = stubs.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(import_request_ids=[job.import_request_id]), timeout=WAIT
    )
    try:
        state = next(iter(stream))
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]
    assert state.type == watch_pb2.WATCH_EVENT_TYPE_STATE and state.map_import == again


def test_another_replica_sends_the_deletion_and_forgets_the_job(pg_cluster: PgCluster) -> None:
    """PostgreSQL only: replicas share one database, which SQLite cannot. The policy
    runs on one replica; the other learns of the deletion from the event log."""
    url = pg_cluster.database("retention-replicas")
    deleting = ServerProcess(url, ["--retention-age", str(AGE), "--compact-interval", "0.5"])
    other = ServerProcess(url)  # no retention of its own
    deleting.start()
    other.start()
    writer, reader = Stubs.connect(deleting.address), Stubs.connect(other.address)
    try:
        kind = KINDS["map_import"]
        stream = reader.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(heartbeat_interval=_beat()), timeout=WAIT
        )
        try:
            assert (
                _next_event(stream, "the initial state").type == watch_pb2.WATCH_EVENT_TYPE_SYNCED
            )
            job = kind.settle(writer, kind.new_id())
            assert isinstance(job, mi.MapImport)
            events = [_next_event(stream, "the other replica sends the writes") for _ in range(2)]
            assert [(e.type, e.map_import) for e in events][-1] == (CHANGE, job)
            event = _next_event(stream, "the other replica sends the deletion")
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]
        assert event.type == DELETED and event.map_import == job, event
        with pytest.raises(grpc.RpcError) as caught:
            kind.get(reader, job.import_request_id)
        assert failure_of(caught.value).code == grpc.StatusCode.NOT_FOUND
    finally:
        writer.channel.close()
        reader.channel.close()
        deleting.stop()
        other.stop()


# --- the plans of the policy's statements -------------------------------------------------

FILL = 20_000  # jobs: enough that either planner prefers an index to a scan


def _plan(conn: sa.Connection, statement: str, params: Any) -> str:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        return "\n".join(str(row[-1]) for row in rows)
    rows = conn.exec_driver_sql(f"EXPLAIN {statement}", params)
    return "\n".join(str(row[0]) for row in rows)


def test_the_policy_reads_and_deletes_through_indexes(databases: Databases) -> None:
    url = databases.new("retention-plans")
    upgrade(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(engine, only=["job", "event"])
        job, event = meta.tables["job"], meta.tables["event"]
        now = time.time()
        with engine.begin() as conn:
            rows = [
                dict(
                    tenant="default",
                    kind="map_import",
                    job_id=f"job-{n}",
                    status=6 if n % 10 == 0 else 4,  # a tenth settled (Cancel)
                    revision=n,
                    create_revision=n,
                    settled_at=now - FILL + n if n % 10 == 0 else None,
                    data=b"x",
                )
                for n in range(1, FILL + 1)
            ]
            conn.execute(job.insert(), rows)
            conn.execute(
                event.insert(),
                [
                    dict(
                        revision=r["revision"],
                        tenant="default",
                        kind="map_import",
                        job_id=r["job_id"],
                        status=r["status"],
                        created_at=now,
                        data=b"x",
                    )
                    for r in rows
                ],
            )
            conn.exec_driver_sql("ANALYZE")
        sql = Statements.for_dialect(engine.dialect)
        with engine.connect() as conn:
            compiled = SETTLED_BEFORE.compile(dialect=engine.dialect)
            params = compiled.construct_params({"cutoff": now - FILL / 2, "limit": 100})
            positional = compiled.positiontup
            read = _plan(
                conn,
                str(compiled),
                tuple(params[p] for p in positional) if positional is not None else params,
            )
            key = dict(tenant="default", kind="map_import", job_id="job-10")
            delete = _plan(conn, sql.delete_job.text, sql.delete_job.row(**key))
            erase = _plan(
                conn,
                sql.erase_events.text,
                sql.erase_events.row(**{f"w_{k}": v for k, v in key.items()}),
            )
    finally:
        engine.dispose()
    plans = {"settled_before": read, "delete_job": delete, "erase_events": erase}
    for name, plan in plans.items():
        assert "SCAN job" not in plan and "SCAN event" not in plan, (name, plan)  # SQLite
        assert "Seq Scan" not in plan, (name, plan)  # PostgreSQL
    assert "ix_job_settled" in read, read


# --- the flag --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("0", 0.0), ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("12h", 43200.0), ("30d", 2592000.0)],
)
def test_the_retention_age_takes_seconds_or_a_unit(given: str, seconds: float) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    assert config.from_arguments(parser.parse_args(["--retention-age", given])).retention_age == (
        seconds
    )


def test_retention_is_off_by_default_and_refuses_a_bad_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSTATUS_RETENTION_AGE", raising=False)
    parser = argparse.ArgumentParser(exit_on_error=False)
    config.add_arguments(parser)
    assert config.from_arguments(parser.parse_args([])).retention_age == 0
    for bad in ("-1", "30x", "d", "soon"):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(["--retention-age", bad])
