"""Shared fixtures: a real server process on a free port, and typed stubs to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from jobstatus.v1 import (
    catalog_import_pb2_grpc,
    dataset_pb2_grpc,
    delivery_pb2_grpc,
    map_import_pb2_grpc,
)
from tests.serverproc import ServerProcess


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, on its own SQLite file."""
    proc = ServerProcess(sqlite_url(tmp_path_factory.mktemp("db"))).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    connected = Stubs.connect(server.address)
    yield connected
    connected.channel.close()


@pytest.fixture
def uid() -> str:
    """A unique job id for one test, so tests sharing a server never collide."""
    return f"t-{uuid.uuid4().hex[:12]}"
