"""Acknowledged writes survive SIGKILL: after a restart every one is there, with its revision."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc, watch_pb2
from tests.conftest import Stubs
from tests.serverproc import ServerProcess

THREADS = 4
JOBS_PER_THREAD = 5
ACKED_BEFORE_KILL = 100  # acknowledged writes before the SIGKILL; the writers keep going


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """This module's own server (SQLite in its default FULL synchronous mode), to kill."""
    proc = ServerProcess(database_url).start()
    yield proc
    proc.kill()


@dataclass
class Ledger:
    """What one writer thread was told: the last acknowledged state of each of its jobs,
    and the write it had in flight when the server died (it may or may not have committed)."""

    acked: dict[str, mi.MapImport] = field(default_factory=dict)
    history: list[mi.MapImport] = field(default_factory=list)  # every acknowledged write
    in_flight: dict[str, int] = field(default_factory=dict)  # job -> the progress it was sending
    count: int = 0
    error: BaseException | None = None


def _writer(
    address: str, prefix: str, ledger: Ledger, total: list[int], lock: threading.Lock
) -> None:
    channel = grpc.insecure_channel(address)
    maps = map_import_pb2_grpc.MapImportServiceStub(channel)
    try:
        ids = [f"{prefix}-{n}" for n in range(JOBS_PER_THREAD)]
        step = 0
        while True:
            job_id = ids[step % len(ids)]
            progress = min(step // len(ids), 100)
            ledger.in_flight = {job_id: progress}
            if job_id not in ledger.acked:
                job = maps.CreateMapImport(
                    mi.CreateMapImportRequest(
                        request_id=f"create-{job_id}",
                        map_import=mi.MapImport(
                            import_request_id=job_id,
                            meta_data=mi.MapImportMetaData(progress=progress),
                        ),
                    ),
                    timeout=30,
                ).map_import
            else:
                job = maps.UpdateMapImport(
                    mi.UpdateMapImportRequest(
                        map_import=mi.MapImport(
                            import_request_id=job_id,
                            meta_data=mi.MapImportMetaData(progress=progress),
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["meta_data.progress"]),
                        expected_revision=ledger.acked[job_id].revision,
                    ),
                    timeout=30,
                ).map_import
            ledger.acked[job_id] = job
            ledger.history.append(job)
            ledger.in_flight = {}
            ledger.count += 1
            with lock:
                total[0] += 1
            step += 1
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            ledger.error = error
    except BaseException as error:  # the test thread reports it
        ledger.error = error
    finally:
        channel.close()


def _get(stubs: Stubs, job_id: str) -> mi.MapImport:
    request = mi.GetMapImportStatusRequest(import_request_id=job_id)
    return stubs.maps.GetMapImportStatus(request, timeout=10).map_import


def _changes(stubs: Stubs, after: int, upto: int) -> dict[int, mi.MapImport]:
    """The map import changes in the event log with revisions in (after, upto]."""
    found: dict[int, mi.MapImport] = {}
    request = mi.WatchMapImportStatusRequest(
        start_revision=after, heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    stream = stubs.maps.WatchMapImportStatus(request, timeout=60)
    try:
        for event in stream:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_CHANGE:
                found[event.revision] = event.map_import
            if event.revision >= upto:
                return found
    finally:
        cast("grpc.Future[object]", stream).cancel()
    raise AssertionError(f"the watch ended before revision {upto}")


def _start_writers(address: str) -> tuple[list[Ledger], list[threading.Thread], list[int]]:
    ledgers = [Ledger() for _ in range(THREADS)]
    total = [0]
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=_writer, args=(address, f"w{n}", ledgers[n], total, lock), daemon=True
        )
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    return ledgers, threads, total


def test_acknowledged_writes_survive_sigkill(server: ServerProcess) -> None:
    # a first write, so the writers' changes are "the changes after" a revision above 0
    with grpc.insecure_channel(server.address) as channel:
        first = map_import_pb2_grpc.MapImportServiceStub(channel).CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="first")),
            timeout=30,
        )
    ledgers, threads, total = _start_writers(server.address)
    deadline = time.monotonic() + 60
    while total[0] < ACKED_BEFORE_KILL:
        assert time.monotonic() < deadline, f"only {total[0]} writes in 60 s"
        assert all(t.is_alive() for t in threads), [str(ledger.error) for ledger in ledgers]
        time.sleep(0.005)

    server.kill()  # mid-flight: the writers are still writing

    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    for ledger in ledgers:
        assert ledger.error is None, ledger.error
    history = [job for ledger in ledgers for job in ledger.history]
    assert len(history) >= ACKED_BEFORE_KILL
    server.start()
    stubs = Stubs.connect(server.address)
    try:
        stored_max = 0
        for ledger in ledgers:
            for job_id, last in ledger.acked.items():
                stored = _get(stubs, job_id)
                stored_max = max(stored_max, stored.revision)
                if stored.revision == last.revision:
                    assert stored == last
                    continue
                # only the one write in flight at the kill may have committed after it
                assert job_id in ledger.in_flight, (job_id, last, stored)
                assert stored.revision > last.revision
                assert stored.meta_data.progress == ledger.in_flight[job_id]
            # a create in flight may have committed: then it is there whole, or not at all
            for job_id, progress in ledger.in_flight.items():
                if job_id not in ledger.acked:
                    try:
                        stored = _get(stubs, job_id)
                    except grpc.RpcError as error:
                        assert isinstance(error, grpc.Call)
                        assert error.code() == grpc.StatusCode.NOT_FOUND
                    else:
                        assert stored.meta_data.progress == progress
                        stored_max = max(stored_max, stored.revision)

        # every acknowledged write, not only each job's last, is in the event log
        revisions = sorted(job.revision for job in history)
        assert len(set(revisions)) == len(revisions), "two writes were told the same revision"
        assert revisions[0] > first.map_import.revision
        logged = _changes(stubs, first.map_import.revision, max(stored_max, revisions[-1]))
        for job in history:
            assert job.revision in logged, job
            assert logged[job.revision] == job

        # revisions go on from where they were, strictly increasing, for every kind
        after = stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="after-restart"))
        ).map_import
        assert after.revision > max(stored_max, revisions[-1])
        assert max(logged) < after.revision
        dataset = stubs.datasets.CreateDataset(
            ds.CreateDatasetRequest(dataset=ds.Dataset())
        ).dataset
        assert dataset.revision > after.revision
        # the idempotent create still knows its request ids after the restart
        first_id = next(iter(ledgers[0].acked))
        again = stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(
                request_id=f"create-{first_id}",
                map_import=mi.MapImport(import_request_id=first_id),
            )
        ).map_import
        assert again == _get(stubs, first_id)
    finally:
        stubs.channel.close()
