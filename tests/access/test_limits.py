"""Bounded cost per caller: each limit holds, its refusal is the documented one
(RESOURCE_EXHAUSTED with reason LIMIT_EXCEEDED, or 429 with the JSON error body),
it is counted in /metrics, and callers under their limits are not affected. And a
flood of bad requests cannot flood the log.

On SQLite and on PostgreSQL (conftest's `databases`): a read waiting for a revision,
the keys and the log are the storage's as well as the limits'."""

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
from tests.conftest import Databases, Stubs
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
def keyed(databases: Databases) -> Iterator[Keyed]:
    with keyed_server(databases.new("limits"), KEYS, *LIMITS) as made:
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


def refused(result: Any, limit: str, what: str) -> None:
    """`result` is the documented gRPC refusal of `limit`; `what` names the guarantee."""
    assert isinstance(result, Failure), f"{what}: not refused, it went through"
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: {result}"
    reason = result.info.reason if result.info is not None else None
    assert reason == "LIMIT_EXCEEDED", (
        f"a refusal's ErrorInfo reason is {reason!r}, not LIMIT_EXCEEDED"
    )
    assert result.metadata.get("limit") == limit, f"{what}: refused as {result.metadata}"
    delay = result.retry.retry_delay.ToTimedelta().total_seconds() if result.retry else None
    assert delay == 1.0, f"a gRPC limit refusal carries RetryInfo of 1 s, not {delay}"


def http_refused(response: httpx.Response, limit: str, what: str) -> None:
    """`response` is the documented 429 of `limit`: Retry-After, the JSON error body."""
    assert response.status_code == 429, f"{what}: answered {response.status_code}"
    assert response.headers.get("retry-after") == "1", (
        f"a limit's 429 says Retry-After: 1, not {response.headers.get('retry-after')!r}"
    )
    error = response.json()["error"]
    assert (error["code"], error["reason"]) == ("RESOURCE_EXHAUSTED", "LIMIT_EXCEEDED"), (
        f"a limit's 429 body names RESOURCE_EXHAUSTED and LIMIT_EXCEEDED, not {error}"
    )
    assert error["metadata"]["limit"] == limit, f"{what}: refused as {error['metadata']}"


def counted(keyed: Keyed, transport: str, limit: str) -> float:
    text = httpx.get(keyed.server.http_url + "/metrics", timeout=10).text
    pattern = rf'jobstatus_limit_refusals_total{{limit="{limit}",transport="{transport}"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def eventually(attempt: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Retry until `attempt` holds (the server frees a slot after the client leaves, a
    call in progress takes a moment to arrive); fail naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while not attempt():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {within:.0f} s")
        time.sleep(0.05)


def test_watch_streams_per_key_and_per_connection(keyed: Keyed) -> None:
    a, b = keyed.keys["a"], keyed.keys["b"]
    first, second = channel(keyed), channel(keyed)
    mine = [watch(first, a), watch(first, a)]
    for made in mine:
        assert not isinstance(made, Failure), f"a key's first 2 watch streams are served: {made}"
    per_key = "a key has at most --max-streams-per-key (2) watch streams open"
    refused(watch(second, a), "streams_per_key", per_key)
    with keyed.http() as client:
        answer = client.get("/api/v1/watch/map_import", headers={"x-api-key": a})
        http_refused(answer, "streams_per_key", per_key + " (SSE)")
    assert counted(keyed, "grpc", "streams_per_key") >= 1
    assert counted(keyed, "http", "streams_per_key") >= 1
    # Another key is not affected, up to this connection's limit of 3 streams.
    theirs = watch(first, b)
    assert not isinstance(theirs, Failure), theirs
    refused(
        watch(first, b),
        "streams_per_connection",
        "a connection has at most --max-streams-per-connection (3) watch streams open",
    )
    assert counted(keyed, "grpc", "streams_per_connection") >= 1
    elsewhere = watch(second, b)
    assert not isinstance(elsewhere, Failure), elsewhere
    # A stream that ends frees its key's slot.
    mine.pop().cancel()

    def reopened() -> bool:
        result = watch(second, a)
        if isinstance(result, Failure):
            refused(result, "streams_per_key", "a key's refused stream is refused by its limit")
            return False
        mine.append(result)
        return True

    eventually(reopened, "a watch stream that ends frees its key's slot")
    for stubs in (first, second):
        stubs.channel.close()


def test_request_and_header_size(keyed: Keyed) -> None:
    stubs = channel(keyed)
    get = stubs.channel.unary_unary("/jobstatus.v1.MapImportService/GetMapImportStatus", None, None)
    key = metadata(keyed.keys["a"])
    # Field 1 (the id) as a length-delimited string: tag 0x0a, a 2-byte varint length.
    exact = b"\x0a\xcd\x0f" + b"a" * 1997  # 2,000 bytes: --max-request-bytes exactly
    beyond = b"\x0a\xce\x0f" + b"a" * 1998  # 2,001 bytes: one beyond
    assert (len(exact), len(beyond)) == (2000, 2001)
    limit = "a gRPC request of at most --max-request-bytes (2000) is served, one byte more is not"
    for big in (beyond, b"\x0a\xc4\x13" + b"a" * 2500):
        try:
            get(big, metadata=key, timeout=30)
            raise AssertionError(f"{limit}: {len(big)} bytes were served")
        except grpc.RpcError as error:
            refused(failure_of(error), "request_bytes", limit)
    assert counted(keyed, "grpc", "request_bytes") >= 1
    for small in (b"\x0a\x03abc", exact):
        try:
            get(small, metadata=key, timeout=30)
        except grpc.RpcError as error:
            code = failure_of(error).code  # served, under the limit: the id is not there
            assert code != grpc.StatusCode.RESOURCE_EXHAUSTED, f"{limit}: {len(small)} refused"
    with keyed.http() as client:
        body = "an HTTP body of at most --max-request-bytes (2000) is let through"
        http_refused(client.post("/healthz", content=b"x" * 3000), "request_bytes", body)
        http_refused(client.post("/healthz", content=b"x" * 2001), "request_bytes", body)
        at_limit = client.post("/healthz", content=b"x" * 2000)
        assert at_limit.status_code != 429, f"{body}: 2,000 bytes answered 429"
        head = "an HTTP request line and headers are at most --max-header-bytes (4096)"
        http_refused(client.get("/healthz", headers={"x-junk": "y" * 5000}), "header_bytes", head)
        assert client.get("/healthz", headers={"x-junk": "y" * 3000}).status_code == 200, head
        # The request line counts: a query of 5,000 bytes is beyond the limit.
        long_query = client.get("/healthz", params={"q": "y" * 5000})
        http_refused(long_query, "header_bytes", head + " (the request line counts)")
        # Counted together: three headers of 2,000 bytes each are beyond the limit.
        many = [(f"x-junk-{n}", "y" * 2000) for n in range(3)]
        http_refused(client.get("/healthz", headers=many), "header_bytes", head + " together")
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
    # A job the view holds: its REST read is answered as the request arrives.
    _write(stubs, keyed, "c-ready")
    ready = "/api/v2/map/import/status/c-ready"
    with keyed.http() as client:
        assert client.get(ready, headers={"x-api-key": a}).status_code == 200
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
                refused(failure, "concurrent_calls", "a caller's calls beyond its limit")
                return True
        return False

    eventually(
        second_refused,
        "a caller has at most --max-concurrent-calls (1) calls in progress: "
        "key a's second call was served while its first waited",
    )
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
        calls = "a caller's concurrent calls are counted on both transports together"
        http_refused(client.get(path, headers={"x-api-key": a}), "concurrent_calls", calls)
        http_refused(
            client.get(ready, headers={"x-api-key": a}),
            "concurrent_calls",
            "a read the view answers at once counts against its caller's concurrent calls",
        )
        assert client.get(path, headers={"x-api-key": b}).status_code == 200, (
            "another caller's call is not refused by a's limit"
        )
        _write(stubs, keyed, "c-wait")  # the revision the read waits for
        assert waiting.result(timeout=60).map_import.import_request_id == "c-wait"
        eventually(
            lambda: client.get(path, headers={"x-api-key": a}).status_code == 200,
            "a call that ends frees its caller's slot",
        )
    assert counted(keyed, "http", "concurrent_calls") >= 1
    stubs.channel.close()


def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(databases: Databases) -> None:
    server = ServerProcess(databases.new("flood")).start()
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
