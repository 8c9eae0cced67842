"""grpc.health.v1: SERVING per service, NOT_SERVING while storage is unreachable or on shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy.engine import make_url

from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.serverproc import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = (
    "",
    "jobstatus.v1.MapImportService",
    "jobstatus.v1.DeliveryService",
    "jobstatus.v1.DatasetService",
    "jobstatus.v1.CatalogImportService",
)
DEADLINE = 15.0  # the server probes its storage every second


@pytest.fixture(scope="module")
def server(databases: Databases) -> Iterator[ServerProcess]:
    proc = ServerProcess(databases.new("health")).start()
    yield proc
    proc.stop()


@contextmanager
def _storage_away(databases: Databases, server: ServerProcess) -> Iterator[None]:
    """Make the database unreachable for the body: move SQLite's directory away, or stop
    the PostgreSQL cluster."""
    if databases.cluster is not None:
        with databases.cluster.down():
            yield
        return
    directory = Path(make_url(server.database_url).database or "").parent
    away = directory.with_name(directory.name + "-away")
    directory.rename(away)
    try:
        yield
    finally:
        away.rename(directory)


def _status(stubs: Stubs, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return int(stubs.health.Check(request, timeout=5).status)


def _wait_for(stubs: Stubs, status: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = {service: _status(stubs, service) for service in SERVICES}
        if all(value == status for value in seen.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"health did not become {status} within {DEADLINE} s: {seen}")
        time.sleep(0.2)


def test_every_service_is_serving(stubs: Stubs) -> None:
    for service in SERVICES:
        assert _status(stubs, service) == SERVING, service


def test_unknown_service_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _status(stubs, "jobstatus.v1.NoSuchService")
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_unreachable_storage_is_not_serving(
    stubs: Stubs, server: ServerProcess, databases: Databases
) -> None:
    before = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="before-outage"))
    ).map_import

    with _storage_away(databases, server):
        _wait_for(stubs, NOT_SERVING)
    _wait_for(stubs, SERVING)

    # and the store works again, with what it had
    created = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="after-outage")),
        timeout=30,
    ).map_import
    got = stubs.maps.GetMapImportStatus(
        mi.GetMapImportStatusRequest(import_request_id="before-outage")
    ).map_import
    assert got == before
    assert created.revision > before.revision


def test_sigterm_drains(stubs: Stubs, server: ServerProcess) -> None:
    """A health watcher sees NOT_SERVING before the server goes, and the process exits 0."""
    seen: list[int] = []
    serving = threading.Event()
    ended = threading.Event()

    def watch() -> None:
        stream = stubs.health.Watch(health_pb2.HealthCheckRequest(service=SERVICES[1]))
        try:
            for response in stream:
                seen.append(int(response.status))
                if response.status == SERVING:
                    serving.set()
        except grpc.RpcError:
            pass
        finally:
            ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert serving.wait(10), seen

    code = server.terminate(30)

    assert code == 0, server.log()
    assert ended.wait(10), "the watch stream did not end"
    assert seen[0] == SERVING
    assert NOT_SERVING in seen, seen
    assert seen[seen.index(NOT_SERVING) :] == [NOT_SERVING] * (len(seen) - seen.index(NOT_SERVING))
