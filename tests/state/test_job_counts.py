"""The job_count table (migration 0006) on SQLite and PostgreSQL: filled from the jobs
already stored when the migration runs, kept by the job table's triggers whatever
writes it (a bulk INSERT, a status UPDATE, a DELETE, straight in SQL), and exact on
PostgreSQL replicas that write at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from jobstatus.v1 import counts_pb2, counts_pb2_grpc
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus_server.state.migrations import upgrade
from tests.conftest import Databases
from tests.pg import PgCluster
from tests.serverproc import ServerProcess

START, DONE = mi.MAP_IMPORT_STATUS_START, mi.MAP_IMPORT_STATUS_DONE


@pytest.fixture
def engine(databases: Databases) -> Iterator[sa.Engine]:
    engine = sa.create_engine(databases.new("counts"), poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _insert_jobs(conn: sa.Connection, tenant: str, statuses: list[int]) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO job (tenant, kind, job_id, status, revision, create_revision, data)"
            " VALUES (:tenant, 'map_import', :job_id, :status, :n, :n, :data)"
        ),
        [
            {"tenant": tenant, "job_id": f"{tenant}-{n}", "status": s, "n": n, "data": b""}
            for n, s in enumerate(statuses, 1)
        ],
    )


def _table(conn: sa.Connection) -> dict[tuple[str, str, int], int]:
    rows = conn.execute(sa.text("SELECT tenant, kind, status, jobs FROM job_count"))
    return {(str(t), str(k), int(s)): int(j) for t, k, s, j in rows if j}


def _grouped(conn: sa.Connection) -> dict[tuple[str, str, int], int]:
    """The same counts, counted from the job table."""
    rows = conn.execute(
        sa.text("SELECT tenant, kind, status, count(*) FROM job GROUP BY tenant, kind, status")
    )
    return {(str(t), str(k), int(s)): int(j) for t, k, s, j in rows}


def test_the_migration_counts_the_jobs_already_stored(engine: sa.Engine) -> None:
    upgrade(_url(engine), "0005")
    with engine.begin() as conn:
        _insert_jobs(conn, "acme", [START, START, DONE])
        _insert_jobs(conn, "bolt", [DONE])
    upgrade(_url(engine))
    with engine.connect() as conn:
        assert _table(conn) == {
            ("acme", "map_import", START): 2,
            ("acme", "map_import", DONE): 1,
            ("bolt", "map_import", DONE): 1,
        }


def test_the_triggers_follow_every_write_to_the_job_table(engine: sa.Engine) -> None:
    upgrade(_url(engine))
    with engine.begin() as conn:
        _insert_jobs(conn, "acme", [START] * 5)
        conn.execute(
            sa.text("UPDATE job SET status = :s WHERE job_id IN ('acme-1', 'acme-2')"),
            {"s": DONE},
        )
        conn.execute(sa.text("UPDATE job SET data = :d WHERE job_id = 'acme-3'"), {"d": b"x"})
        conn.execute(sa.text("DELETE FROM job WHERE job_id IN ('acme-1', 'acme-4')"))
    with engine.begin() as conn:
        # A rolled back write leaves the counts as they were.
        _insert_jobs(conn, "rolled", [START])
        conn.rollback()
    with engine.connect() as conn:
        assert (
            _table(conn)
            == _grouped(conn)
            == {
                ("acme", "map_import", START): 2,
                ("acme", "map_import", DONE): 1,
            }
        )


def test_replicas_writing_at_once_keep_the_counts_exact(pg_cluster: PgCluster) -> None:
    """PostgreSQL only: replicas share one database, which SQLite does not serve."""
    url = pg_cluster.database("count_replicas")
    replicas = [ServerProcess(url).start() for _ in range(2)]
    try:

        def work(replica: ServerProcess, name: str) -> int:
            revision = 0
            with grpc.insecure_channel(replica.address) as channel:
                stub = mi_grpc.MapImportServiceStub(channel)
                for n in range(20):
                    job_id = f"{name}-{n}"
                    create = mi.CreateMapImportRequest(
                        map_import=mi.MapImport(import_request_id=job_id)
                    )
                    revision = stub.CreateMapImport(create).map_import.revision
                    if n % 2:
                        update = mi.UpdateMapImportRequest(
                            map_import=mi.MapImport(
                                import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS
                            ),
                            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
                        )
                        revision = stub.UpdateMapImport(update).map_import.revision
            return revision

        with ThreadPoolExecutor(4) as pool:
            last = max(
                pool.map(work, [replicas[n % 2] for n in range(4)], [f"w{n}" for n in range(4)])
            )
        for replica in replicas:
            with grpc.insecure_channel(replica.address) as channel:
                response = counts_pb2_grpc.JobCountServiceStub(channel).CountJobs(
                    counts_pb2.CountJobsRequest(kinds=["map_import"], min_revision=last)
                )
            tally = {c.status: c.count for c in response.counts}
            assert response.revision == last
            assert tally["MAP_IMPORT_STATUS_START"] == 40
            assert tally["MAP_IMPORT_STATUS_IN_PROGRESS"] == 40
    finally:
        for replica in replicas:
            replica.stop()
