"""Bounded cost per caller: each limit holds, its refusal is the documented one
(RESOURCE_EXHAUSTED with reason LIMIT_EXCEEDED, or 429 with the JSON error body),
it is counted in /metrics, and callers under their limits are not affected. And a
flood of bad requests cannot flood the log.

The limits do not depend on the database: these servers run on SQLite."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2_grpc

from jobstatus.v1 import (
    catalog_import_pb2_grpc,
    dataset_pb2_grpc,
    delivery_pb2_grpc,
    map_import_pb2_grpc,
    watch_pb2,
)
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs, sqlite_url
from tests.restkit import Keyed, keyed_server, metadata
from tests.rpcerrors import Failure, failure_of
from tests.serverproc import ServerProcess

KEYS = {
    "a": ("acme", ["read"]),
    "b": ("acme", ["read"]),
    "writer": ("acme", ["read", "write"]),
}
LIMITS = [
    "--max-streams-per-key", "2",
    "--max-streams-per-connection", "3",
    "--max-concurrent-calls", "1",
    "--max-request-bytes", "2000",
    "--max-header-bytes", "4096",
    "--view-wait", "120",
]  # fmt: skip


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    url = sqlite_url(tmp_path_factory.mktemp("limits"))
    with keyed_server(url, KEYS, *LIMITS) as made:
        yield made


def channel(keyed: Keyed) -> Stubs:
    """Stubs on a connection of their own (no subchannel shared with other channels)."""
    own = grpc.insecure_channel(keyed.server.address, [("grpc.use_local_subchannel_pool", 1)])
    grpc.channel_ready_future(own).result(timeout=30)
    return Stubs(
        own,
        map_import_pb2_grpc.MapImportServiceStub(own),
        delivery_pb2_grpc.DeliveryServiceStub(own),
        dataset_pb2_grpc.DatasetServiceStub(own),
        catalog_import_pb2_grpc.CatalogImportServiceStub(own),
        health_pb2_grpc.HealthStub(own),
    )


def watch(stubs: Stubs, key: str) -> Any:
    """A watch with `key`, read up to its synced marker; or the Failure it ends with."""
    call = stubs.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(), metadata=metadata(key), timeout=120
    )
    try:
        for event in call:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
                return call
    except grpc.RpcError as error:
        return failure_of(error)
    raise AssertionError("the watch ended before its synced marker")


def refused(result: Any, limit: str) -> None:
    assert isinstance(result, Failure), result
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED, result
    assert result.info is not None and result.info.reason == "LIMIT_EXCEEDED"
    assert result.metadata["limit"] == limit


def http_refused(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert (error["code"], error["reason"]) == ("RESOURCE_EXHAUSTED", "LIMIT_EXCEEDED")
    assert error["metadata"]["limit"] == limit


def counted(keyed: Keyed, transport: str, limit: str) -> float:
    text = httpx.get(keyed.server.http_url + "/metrics", timeout=10).text
    pattern = rf'jobstatus_limit_refusals_total{{limit="{limit}",transport="{transport}"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def eventually(attempt: Callable[[], bool]) -> None:
    """Retry until `attempt` holds: the server frees a slot after the client leaves."""
    for _ in range(400):
        if attempt():
            return
        time.sleep(0.05)
    raise AssertionError("never held")


def test_watch_streams_per_key_and_per_connection(keyed: Keyed) -> None:
    a, b = keyed.keys["a"], keyed.keys["b"]
    first, second = channel(keyed), channel(keyed)
    mine = [watch(first, a), watch(first, a)]
    refused(watch(second, a), "streams_per_key")
    with keyed.http() as client:
        answer = client.get("/api/v1/watch/map_import", headers={"x-api-key": a})
        http_refused(answer, "streams_per_key")
    assert counted(keyed, "grpc", "streams_per_key") >= 1
    assert counted(keyed, "http", "streams_per_key") >= 1
    # Another key is not affected, up to this connection's limit of 3 streams.
    theirs = watch(first, b)
    assert not isinstance(theirs, Failure), theirs
    refused(watch(first, b), "streams_per_connection")
    assert counted(keyed, "grpc", "streams_per_connection") >= 1
    elsewhere = watch(second, b)
    assert not isinstance(elsewhere, Failure), elsewhere
    # A stream that ends frees its key's slot.
    mine.pop().cancel()

    def reopened() -> bool:
        result = watch(second, a)
        if isinstance(result, Failure):
            refused(result, "streams_per_key")
            return False
        mine.append(result)
        return True

    eventually(reopened)
    for stubs in (first, second):
        stubs.channel.close()


def test_request_and_header_size(keyed: Keyed) -> None:
    stubs = channel(keyed)
    get = stubs.channel.unary_unary("/jobstatus.v1.MapImportService/GetMapImportStatus", None, None)
    key = metadata(keyed.keys["a"])
    big = b"\x0a\xc4\x13" + b"a" * 2500  # field 1, 2,500 bytes: beyond --max-request-bytes
    try:
        get(big, metadata=key, timeout=30)
        raise AssertionError("a request beyond the limit was served")
    except grpc.RpcError as error:
        refused(failure_of(error), "request_bytes")
    assert counted(keyed, "grpc", "request_bytes") >= 1
    try:
        get(b"\x0a\x03abc", metadata=key, timeout=30)
    except grpc.RpcError as error:
        assert failure_of(error).code == grpc.StatusCode.NOT_FOUND  # served, under the limit
    with keyed.http() as client:
        http_refused(client.post("/healthz", content=b"x" * 3000), "request_bytes")
        http_refused(client.get("/healthz", headers={"x-junk": "y" * 5000}), "header_bytes")
        assert client.get("/healthz", headers={"x-junk": "y" * 3000}).status_code == 200
    assert counted(keyed, "http", "request_bytes") >= 1
    assert counted(keyed, "http", "header_bytes") >= 1
    stubs.channel.close()


def _current(stubs: Stubs, key: str) -> int:
    call = stubs.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(), metadata=metadata(key), timeout=30
    )
    for event in call:
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            call.cancel()  # type: ignore[no-untyped-call]
            return int(event.revision)
    raise AssertionError("no synced marker")


def _write(stubs: Stubs, keyed: Keyed, job_id: str) -> None:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(
            map_import=mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_START)
        ),
        metadata=metadata(keyed.keys["writer"]),
        timeout=30,
    )


def test_concurrent_calls(keyed: Keyed) -> None:
    """Key a's one call in progress (a read waiting for a revision to come) is its limit."""
    a, b = keyed.keys["a"], keyed.keys["b"]
    stubs = channel(keyed)
    ahead = _current(stubs, b) + 1
    waiting = stubs.maps.GetMapImportStatus.future(
        mi.GetMapImportStatusRequest(import_request_id="c-wait", min_revision=ahead),
        metadata=metadata(a),
        timeout=120,
    )

    def second_refused() -> bool:
        try:
            stubs.maps.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id="c-other"),
                metadata=metadata(a),
                timeout=30,
            )
        except grpc.RpcError as error:
            failure = failure_of(error)
            if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused(failure, "concurrent_calls")
                return True
        return False

    eventually(second_refused)
    assert counted(keyed, "grpc", "concurrent_calls") >= 1
    # Another key is not affected.
    try:
        stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id="c-other"),
            metadata=metadata(b),
            timeout=30,
        )
    except grpc.RpcError as error:
        assert failure_of(error).code == grpc.StatusCode.NOT_FOUND
    # The limit is the caller's, on both transports: while its gRPC read is in progress,
    # a's REST read is refused too, and b's is served.
    with keyed.http() as client:
        path = "/api/v2/map/import/status/c-wait"
        http_refused(client.get(path, headers={"x-api-key": a}), "concurrent_calls")
        assert client.get(path, headers={"x-api-key": b}).status_code == 200
        _write(stubs, keyed, "c-wait")  # the revision the read waits for
        assert waiting.result(timeout=60).map_import.import_request_id == "c-wait"
        eventually(lambda: client.get(path, headers={"x-api-key": a}).status_code == 200)
    assert counted(keyed, "http", "concurrent_calls") >= 1
    stubs.channel.close()


def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = ServerProcess(sqlite_url(tmp_path_factory.mktemp("flood"))).start()
    try:
        started = time.monotonic()
        channel = grpc.insecure_channel(server.address)
        get = channel.unary_unary("/jobstatus.v1.MapImportService/GetMapImportStatus", None, None)
        for _ in range(16):
            calls = [get.future(b"\x0a\x05ab", timeout=60) for _ in range(500)]
            for call in calls:
                assert call.exception() is not None
                assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()
        with httpx.Client(base_url=server.http_url, timeout=30) as client:
            for _ in range(2000):
                answer = client.get("/api/v1/watch/map_import", params={"start_revision": "x"})
                assert answer.status_code == 400
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    lines = [line for line in server.log().splitlines() if " jobstatus_server.refused: " in line]
    # At most 20 lines per 10 s window, and one line counting what a window left out.
    windows = elapsed / 10 + 2
    assert 0 < len(lines) <= windows * 21, (len(lines), elapsed)
    assert all(" INFO " in line for line in lines)
    assert "Traceback" not in server.log()
    assert not any(level in server.log() for level in (" ERROR ", " WARNING "))
    if elapsed > 10:
        assert any("more refused requests were not logged" in line for line in lines)
