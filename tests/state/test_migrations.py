"""Alembic migrations on SQLite and PostgreSQL: the schema they make is the one the models
describe, a database made by the previous head upgrades with its data intact, and
replicas that upgrade at once on PostgreSQL take turns."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus_server.state import models  # noqa: F401  (registers the tables)
from jobstatus_server.state.migrations import config, upgrade
from tests.conftest import Databases
from tests.pg import PgCluster
from tests.serverproc import ROOT, ServerProcess


def _heads(url: str) -> tuple[str, str]:
    """The head revision and the one before it (the head itself while there is one)."""
    script = ScriptDirectory.from_config(config(url))
    head = script.get_current_head()
    assert head is not None
    revision = script.get_revision(head)
    assert revision is not None
    down = revision.down_revision
    assert down is None or isinstance(down, str), "teach this test about merge revisions"
    return head, down or head


def _current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@pytest.fixture
def engine(databases: Databases) -> Iterator[sa.Engine]:
    engine = sa.create_engine(databases.new("migrate"), poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def test_head_matches_the_models_with_the_right_types(engine: sa.Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    upgrade(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
        inspector = sa.inspect(conn)
        columns = {
            (table, column["name"]): column["type"]
            for table in ("job", "event", "counter")
            for column in inspector.get_columns(table)
        }
        unique = {index["name"]: index["unique"] for index in inspector.get_indexes("job")}
    for name in [("job", "revision"), ("job", "create_revision"), ("event", "revision")]:
        assert isinstance(columns[name], sa.BigInteger), (name, columns[name])
    assert isinstance(columns[("counter", "value")], sa.BigInteger)
    for table in ("job", "event"):
        assert isinstance(columns[(table, "data")], sa.LargeBinary)
        if engine.dialect.name == "postgresql":
            assert str(columns[(table, "data")]) == "BYTEA"
    assert unique["ix_job_request"]


def _job(job_id: str, revision: int) -> bytes:
    job = mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_START,
        revision=revision,
        meta_data=mi.MapImportMetaData(job_id=2**40 + revision, footprint="\u00e9\x00\xff"),
    )
    return job.SerializeToString()


def test_a_database_of_the_previous_head_upgrades_with_its_data(
    engine: sa.Engine, databases: Databases
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    head, previous = _heads(url)
    upgrade(url, previous)
    assert _current(engine) == previous
    # Rows as the store of that version wrote them, through the tables as they are then.
    # Two jobs without a request_id: the unique (tenant, kind, request_id) allows NULLs.
    big = 2**40
    jobs = [("prev-a", "req-a"), ("prev-b", None), ("prev-c", None)]
    meta = sa.MetaData()
    meta.reflect(engine, only=["job", "event", "counter"])
    job, event, counter = meta.tables["job"], meta.tables["event"], meta.tables["counter"]
    with engine.begin() as conn:
        for n, (job_id, request_id) in enumerate(jobs, start=1):
            row = dict(tenant="default", kind="map_import", job_id=job_id, status=3)
            data = _job(job_id, big + n)
            conn.execute(
                job.insert().values(
                    **row,
                    revision=big + n,
                    create_revision=big + n,
                    request_id=request_id,
                    due_at=None,
                    data=data,
                )
            )
            conn.execute(
                event.insert().values(**row, revision=big + n, created_at=time.time(), data=data)
            )
        conn.execute(counter.update().where(counter.c.name == "revision").values(value=big + 3))
        conn.execute(counter.update().where(counter.c.name == "compacted").values(value=big))
    with engine.connect() as conn:
        before = {
            name: sorted(tuple(row) for row in conn.execute(sa.select(meta.tables[name])))
            for name in ("job", "event", "counter")
        }

    upgrade(url)

    assert _current(engine) == head
    with engine.connect() as conn:
        after = {
            name: sorted(tuple(row) for row in conn.execute(sa.select(meta.tables[name])))
            for name in ("job", "event", "counter")
        }
    assert after == before
    # And the server of this version serves them: reads, watches, writes on top.
    server = ServerProcess(url).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = mi_grpc.MapImportServiceStub(channel)
            got = stub.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id="prev-b"), timeout=10
            ).map_import
            assert got.revision == big + 2
            assert got.meta_data.footprint == "\u00e9\x00\xff"
            again = stub.CreateMapImport(
                mi.CreateMapImportRequest(
                    request_id="req-a", map_import=mi.MapImport(import_request_id="prev-a")
                ),
                timeout=10,
            ).map_import
            assert again.revision == big + 1  # the request id still finds its job
            new = stub.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="new-d")),
                timeout=10,
            ).map_import
            assert new.revision == big + 4
            stream = stub.WatchMapImportStatus(
                mi.WatchMapImportStatusRequest(start_revision=big), timeout=10
            )
            changes = []
            for response in stream:
                changes.append(response.map_import.import_request_id)
                if response.revision == big + 4:
                    break
            assert changes == ["prev-a", "prev-b", "prev-c", "new-d"]
            stream.cancel()  # type: ignore[no-untyped-call]
    finally:
        server.stop()


def test_replicas_upgrading_at_once_on_postgresql_take_turns(pg_cluster: PgCluster) -> None:
    """Three processes upgrade a fresh database at the same moment (without the advisory
    lock, most such runs fail on a duplicate table)."""
    url = pg_cluster.database("concurrent")
    code = (
        "import sys, jobstatus_server.state.models; "
        "from jobstatus_server.state.migrations import upgrade; "
        "print('ready', flush=True); sys.stdin.readline(); upgrade(sys.argv[1])"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:  # every one has imported everything: start together
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        assert _current(engine) == _heads(url)[0]
    finally:
        engine.dispose()
