"""SQLite's writer runs a group's statements on the event loop and its COMMIT in a thread:
another process holding the database's write lock holds up writes, never the loop; and
concurrent writes share commits (group commit), each acknowledged once.

SQLite only: the module is about SQLite's writer (its lock, its commit thread);
PostgreSQL's writer is held by test_pg_store.py and test_replicas.py."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc
from tests.conftest import sqlite_url
from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("writer") / "jobstatus.db"


@pytest.fixture(scope="module")
def proc(database: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(sqlite_url(database.parent)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def maps(proc: ServerProcess) -> Iterator[map_import_pb2_grpc.MapImportServiceStub]:
    channel = grpc.insecure_channel(proc.address)
    try:
        yield map_import_pb2_grpc.MapImportServiceStub(channel)
    finally:
        channel.close()


def _groups(proc: ServerProcess) -> tuple[float, float]:
    """The server's counts of write groups (transactions) run and of the writes in them."""
    text = httpx.get(f"{proc.http_url}/metrics", timeout=30).text
    counts = []
    for name in ("jobstatus_write_groups_total", "jobstatus_write_group_writes_total"):
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found is not None, f"/metrics has no {name}"
        counts.append(float(found.group(1)))
    return counts[0], counts[1]


def _create(maps: map_import_pb2_grpc.MapImportServiceStub, job_id: str) -> mi.MapImport:
    job = mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_START,
        meta_data=mi.MapImportMetaData(progress=0),
    )
    return maps.CreateMapImport(mi.CreateMapImportRequest(map_import=job)).map_import


def _progress(job_id: str, progress: int) -> mi.UpdateMapImportRequest:
    return mi.UpdateMapImportRequest(
        map_import=mi.MapImport(
            import_request_id=job_id,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=progress),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["status", "meta_data.progress"]),
    )


def test_another_process_holding_the_write_lock_holds_up_writes_not_reads(
    maps: map_import_pb2_grpc.MapImportServiceStub, database: Path
) -> None:
    written = _create(maps, "locked-a")
    other = _create(maps, "locked-b")
    intruder = sqlite3.connect(database, isolation_level=None)
    try:
        intruder.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, as `jobstatus keys` takes it
        pending = maps.UpdateMapImport.future(_progress("locked-a", 40), timeout=60)
        # The server still answers reads, of the job being written and of any other,
        # while the write waits for the lock (a write run on the loop would stall them).
        for _ in range(20):
            seen = maps.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id="locked-a"), timeout=10
            ).map_import
            assert seen.revision == written.revision
            assert (
                maps.GetMapImportStatus(
                    mi.GetMapImportStatusRequest(import_request_id="locked-b"), timeout=10
                ).map_import
                == other
            )
        assert not pending.done()
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()
    updated = pending.result(timeout=60).map_import
    assert updated.revision > other.revision
    assert updated.meta_data.progress == 40
    # Later writes go on as before, each with a greater revision.
    again = maps.UpdateMapImport(_progress("locked-b", 5), timeout=30).map_import
    assert again.revision == updated.revision + 1


def test_concurrent_writes_share_commits_and_each_is_acknowledged_once(
    maps: map_import_pb2_grpc.MapImportServiceStub, proc: ServerProcess
) -> None:
    ids = [f"group-{n}" for n in range(16)]
    for job_id in ids:
        _create(maps, job_id)
    groups, writes = _groups(proc)
    revisions: list[int] = []
    for step in range(1, 6):  # each round: one write to every job at once
        futures = [
            maps.UpdateMapImport.future(_progress(job_id, step), timeout=60) for job_id in ids
        ]
        answered = [future.result().map_import for future in futures]
        assert [job.meta_data.progress for job in answered] == [step] * len(ids)
        revisions += [job.revision for job in answered]
    assert len(set(revisions)) == len(revisions), "two writes were told the same revision"
    # Shared commits: 16 writes at once, five times, went out in far fewer transactions.
    groups_after, writes_after = _groups(proc)
    assert writes_after - writes == len(revisions), (writes, writes_after)
    committed = groups_after - groups
    assert committed <= len(revisions) / 2, (
        f"{len(revisions)} concurrent writes took {committed:.0f} commits: "
        "concurrent writes do not share commits (no group commit)"
    )
    for job_id in ids:
        job = maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=job_id)
        ).map_import
        assert job.meta_data.progress == 5


def _field(job_id: str, name: str, value: int) -> mi.UpdateMapImportRequest:
    meta = mi.MapImportMetaData()
    setattr(meta, name, value)
    return mi.UpdateMapImportRequest(
        map_import=mi.MapImport(
            import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS, meta_data=meta
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["status", f"meta_data.{name}"]),
    )


def test_writes_to_one_job_in_one_commit_each_see_the_one_before(
    maps: map_import_pb2_grpc.MapImportServiceStub, proc: ServerProcess
) -> None:
    """Nine writes to one job at once, three to each of three fields, share commits;
    each is made from the job as the one before it left it, so no field is lost."""
    groups, writes = _groups(proc)
    for round in range(1, 25):  # enough rounds that groups hold several writes of one job
        job_id = f"same-{round}"
        _create(maps, job_id)
        values = {"progress": round, "size": 1000 + round, "zoom_level": 2 + round}
        futures = [
            maps.UpdateMapImport.future(_field(job_id, name, value), timeout=60)
            for _ in range(3)
            for name, value in values.items()
        ]
        answered = sorted(future.result().map_import.revision for future in futures)
        job = maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=job_id), timeout=30
        ).map_import
        assert job.revision == answered[-1]
        shown = {name: getattr(job.meta_data, name) for name in values}
        assert shown == values, (
            f"concurrent writes to {job_id} lost a change: {shown}, wanted {values} "
            "(a write in a group was made from the job's state before the group)"
        )
    groups_after, writes_after = _groups(proc)
    assert groups_after - groups < writes_after - writes, (
        "the concurrent writes never shared a commit: the test proves nothing"
    )
