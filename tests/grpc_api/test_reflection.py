"""`grpcurl describe` finds every service, method, message, field, enum and enum value of
the contract (and of health), with the real grpcurl against a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from grpc_health.v1 import health_pb2

from jobstatus.v1 import (
    catalog_import_pb2,
    dataset_pb2,
    delivery_pb2,
    errors_pb2,
    map_import_pb2,
    watch_pb2,
)
from tests.serverproc import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"
FILES: list[FileDescriptor] = [
    module.DESCRIPTOR
    for module in (
        map_import_pb2,
        delivery_pb2,
        dataset_pb2,
        catalog_import_pb2,
        errors_pb2,
        watch_pb2,
        health_pb2,
    )
]


def _enum(enum: EnumDescriptor) -> Iterator[tuple[str, str]]:
    yield enum.full_name, "is an enum"


def _message(message: Descriptor) -> Iterator[tuple[str, str]]:
    yield message.full_name, "is a message"
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            yield from _message(nested)
    for enum in message.enum_types:
        yield from _enum(enum)


def symbols() -> list[tuple[str, str]]:
    """Every service, method, message and enum; of each file, a field and an enum value."""
    found: list[tuple[str, str]] = []
    for file in FILES:
        for service in file.services_by_name.values():
            found.append((service.full_name, "is a service"))
            found.extend((method.full_name, "is a method") for method in service.methods)
        messages = list(file.message_types_by_name.values())
        enums = list(file.enum_types_by_name.values())
        for message in messages:
            found.extend(_message(message))
        for enum in enums:
            found.extend(_enum(enum))
        if messages and messages[0].fields:
            found.append((messages[0].fields[0].full_name, "is a field"))
        if enums:
            value = enums[0].values[-1]  # scoped beside its enum, as in C++, and within it
            found.append((f"{enums[0].full_name}.{value.name}", "is an enum value"))
    return found


@pytest.fixture(scope="module")
def reflected(database_url: str) -> Iterator[ServerProcess]:
    """On SQLite and on PostgreSQL (conftest's `database_url`)."""
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


def describe(server: ServerProcess, symbol: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", server.address, "describe", symbol],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_describe_finds_every_symbol(reflected: ServerProcess) -> None:
    everything = symbols()
    assert ("jobstatus.v1.MapImportService.WatchMapImportStatus", "is a method") in everything
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda pair: describe(reflected, pair[0]), everything))
    missed = [
        f"{symbol}: {result.stdout[:80]!r} {result.stderr.strip()[:200]}"
        for (symbol, what), result in zip(everything, results, strict=True)
        if result.returncode != 0 or f"{symbol} {what}" not in result.stdout
    ]
    assert not missed, "\n".join(missed)


def test_describe_the_watch_method_shows_its_stream(reflected: ServerProcess) -> None:
    result = describe(reflected, "jobstatus.v1.MapImportService.WatchMapImportStatus")
    assert result.returncode == 0, result.stderr
    assert (
        "rpc WatchMapImportStatus ( .jobstatus.v1.WatchMapImportStatusRequest ) "
        "returns ( stream .jobstatus.v1.WatchMapImportStatusResponse );"
    ) in result.stdout


def test_describe_of_an_unknown_symbol_fails_cleanly(reflected: ServerProcess) -> None:
    for symbol in ("jobstatus.v1.NoSuchThing", "jobstatus.v1.MapImportService.NoSuchMethod"):
        result = describe(reflected, symbol)
        assert result.returncode != 0
        assert "Symbol not found" in result.stderr
    assert "Traceback" not in reflected.log()
