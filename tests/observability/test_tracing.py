"""OpenTelemetry tracing, switched on by OTEL_TRACES_EXPORTER: a real server exports its
spans over OTLP/HTTP to a receiver in the test (tests/otlp.py), and the test checks
that they continue the caller's trace and that the store's work hangs under them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.observability import tracing
from tests.conftest import Stubs
from tests.otlp import Receiver, receiver
from tests.serverproc import ServerProcess

MAPS = "/jobstatus.v1.MapImportService"  # the instrumentation names spans by gRPC path


@pytest.fixture(scope="module")
def spans() -> Iterator[Receiver]:
    with receiver() as got:
        yield got


@pytest.fixture(scope="module")
def traced(database_url: str, spans: Receiver) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, extra_env=spans.env()).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def traced_stubs(traced: ServerProcess) -> Iterator[Stubs]:
    connected = Stubs.connect(traced.address)
    yield connected
    connected.channel.close()


class Caller:
    """A caller's own span: the trace context it sends as `traceparent`."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    def metadata(self) -> tuple[tuple[str, str]]:
        return (("traceparent", self.traceparent),)


def wait_for_span(spans: Receiver, match: Callable[[Span], bool], what: str) -> Span:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for span in spans.received():
            if match(span):
                return span
        time.sleep(0.05)
    names = sorted({s.name for s in spans.received()})
    raise AssertionError(f"no span {what} arrived; got {names}")


def in_trace(caller: Caller, name: str) -> Callable[[Span], bool]:
    return lambda s: s.trace_id.hex() == caller.trace_id and s.name == name


def children(spans: Receiver, parent: Span) -> list[Span]:
    return [
        s
        for s in spans.received()
        if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id
    ]


def test_an_rpc_continues_the_callers_trace_with_the_store_below(
    traced_stubs: Stubs, spans: Receiver, uid: str
) -> None:
    caller = Caller()
    traced_stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid)),
        metadata=caller.metadata(),
    )
    rpc = wait_for_span(spans, in_trace(caller, f"{MAPS}/CreateMapImport"), "for the Create")
    assert rpc.parent_span_id.hex() == caller.span_id  # the caller's span is its parent
    assert rpc.kind == Span.SPAN_KIND_SERVER
    attributes = {a.key: a.value.string_value for a in rpc.attributes}
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.method"] == "CreateMapImport"
    wait_for_span(
        spans,
        lambda s: s.parent_span_id == rpc.span_id and s.name.startswith("store."),
        "of the store under the Create",
    )
    store = children(spans, rpc)
    assert store and all(s.name.startswith("store.") for s in store)
    assert all(s.kind == Span.SPAN_KIND_INTERNAL for s in store)


def test_a_refused_rpc_is_traced_with_its_code(
    traced_stubs: Stubs, spans: Receiver, uid: str
) -> None:
    caller = Caller()
    with pytest.raises(grpc.RpcError) as refused:
        traced_stubs.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=uid), metadata=caller.metadata()
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    rpc = wait_for_span(spans, in_trace(caller, f"{MAPS}/GetMapImportStatus"), "for the Get")
    assert rpc.parent_span_id.hex() == caller.span_id
    codes = {a.key: a.value.int_value for a in rpc.attributes}
    assert codes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_rest_request_continues_the_callers_trace(
    traced: ServerProcess, traced_stubs: Stubs, spans: Receiver, uid: str
) -> None:
    traced_stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    caller = Caller()
    answer = httpx.get(
        f"{traced.http_url}/api/v1/map/import/status/{uid}",
        headers={"traceparent": caller.traceparent},
    )
    assert answer.status_code == 200
    request = wait_for_span(
        spans,
        lambda s: s.trace_id.hex() == caller.trace_id and s.kind == Span.SPAN_KIND_SERVER,
        "for the REST request",
    )
    assert request.parent_span_id.hex() == caller.span_id
    assert request.name.startswith("GET")
    # Under it, only the store's work (if the answer came from the store at all).
    assert all(s.name.startswith("store.") for s in children(spans, request))


def test_a_call_without_a_trace_context_starts_a_trace(
    traced_stubs: Stubs, spans: Receiver, uid: str
) -> None:
    created = traced_stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    assert created.map_import.import_request_id == uid

    def root_create(span: Span) -> bool:
        return span.name == f"{MAPS}/CreateMapImport" and not span.parent_span_id

    rpc = wait_for_span(spans, root_create, "starting a trace")
    assert rpc.trace_id


def test_every_store_span_belongs_to_a_request(
    traced_stubs: Stubs, spans: Receiver, uid: str
) -> None:
    """Background work (compaction, timers, health) makes no traces of its own."""
    caller = Caller()
    traced_stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid)),
        metadata=caller.metadata(),
    )
    wait_for_span(spans, in_trace(caller, f"{MAPS}/CreateMapImport"), "for the Create")
    received = spans.received()
    ids = {s.span_id for s in received}
    store = [s for s in received if s.name.startswith("store.")]
    assert store and all(s.parent_span_id in ids for s in store)


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing.setup({}) is None
    assert tracing.enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "console, otlp"}) == [
        "console",
        "otlp",
    ]


def test_an_unknown_exporter_refuses_to_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    # SQLite only: the server refuses this setting before it opens any database.
    url = f"sqlite:///{tmp_path_factory.mktemp('otel') / 'jobstatus.db'}"
    proc = ServerProcess(url, extra_env={"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(RuntimeError, match="server did not start") as failed:
        proc.start()
    assert "OTEL_TRACES_EXPORTER 'zipkin' is not an installed exporter" in str(failed.value)
    assert "Traceback" not in str(failed.value)
