"""Shared fixtures: a real server process on a free port, and typed stubs to it.

Every test module that uses `server` (or `database_url` / `databases`) runs
twice, once on SQLite and once on PostgreSQL (a throwaway cluster on loopback,
one per session, a fresh database per module; see tests/pg.py).
JOBSTATUS_TEST_DATABASES=sqlite runs only the SQLite half (not allowed in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2_grpc

from jobstatus.v1 import (
    catalog_import_pb2_grpc,
    dataset_pb2_grpc,
    delivery_pb2_grpc,
    map_import_pb2_grpc,
)
from tests.pg import PgCluster, PostgresNotFound
from tests.serverproc import ServerProcess
from tests.tasks import Unretrieved

BACKENDS = ("sqlite", "postgresql")


def _backends() -> list[str]:
    chosen = [
        name.strip()
        for name in os.environ.get("JOBSTATUS_TEST_DATABASES", ",".join(BACKENDS)).split(",")
        if name.strip()
    ]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"JOBSTATUS_TEST_DATABASES: unknown {sorted(unknown)}")
    if os.environ.get("CI") == "true" and "postgresql" not in chosen:
        raise pytest.UsageError("in CI the PostgreSQL half of the suite must run")
    return chosen


@dataclass
class Stubs:
    channel: grpc.Channel
    maps: map_import_pb2_grpc.MapImportServiceStub
    deliveries: delivery_pb2_grpc.DeliveryServiceStub
    datasets: dataset_pb2_grpc.DatasetServiceStub
    catalog: catalog_import_pb2_grpc.CatalogImportServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def connect(cls, address: str) -> Stubs:
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=30)
        return cls(
            channel=channel,
            maps=map_import_pb2_grpc.MapImportServiceStub(channel),
            deliveries=delivery_pb2_grpc.DeliveryServiceStub(channel),
            datasets=dataset_pb2_grpc.DatasetServiceStub(channel),
            catalog=catalog_import_pb2_grpc.CatalogImportServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
        )


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'jobstatus.db'}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the session (started on first use)."""
    try:
        cluster = PgCluster.create()
    except PostgresNotFound as missing:
        pytest.fail(str(missing), pytrace=False)
    yield cluster
    cluster.destroy()


@dataclass
class Databases:
    """Fresh, empty databases of one backend: `new()` returns a SQLAlchemy URL."""

    backend: str
    tmp: pytest.TempPathFactory
    cluster: PgCluster | None = None
    urls: list[str] = field(default_factory=list)

    def new(self, name: str = "db") -> str:
        if self.cluster is not None:
            url = self.cluster.database(name)
        else:
            url = sqlite_url(self.tmp.mktemp(name))
        self.urls.append(url)
        return url


@pytest.fixture(scope="module", autouse=True)
def no_task_left_unretrieved(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module's tests leave no asyncio task with an exception nobody retrieved: one
    freed later can break another module's import (tests/tasks.py says how)."""
    with Unretrieved(request.node.nodeid):
        yield


@pytest.fixture(scope="module", params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this module's run: sqlite or postgresql."""
    return str(request.param)


@pytest.fixture(scope="module")
def databases(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Databases:
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    return Databases(backend, tmp_path_factory, cluster)


@pytest.fixture(scope="module")
def database_url(databases: Databases) -> str:
    """A fresh database for this module, on each backend in turn."""
    return databases.new()


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """One server per test module (and backend), on its own database."""
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client to the module's server (REST, SSE, the dashboard's routes)."""
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    connected = Stubs.connect(server.address)
    yield connected
    connected.channel.close()


@pytest.fixture
def uid() -> str:
    """A unique job id for one test, so tests sharing a server never collide."""
    return f"t-{uuid.uuid4().hex[:12]}"
