"""An OTLP/HTTP trace receiver on loopback, for tests and benchmarks: a server with
OTEL_TRACES_EXPORTER=otlp sends its spans here (POST /v1/traces, protobuf), as it
would to a collector, and the test reads them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, keep: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keep = keep  # False: count the spans, keep none (benchmarks)
        self.spans: list[Span] = []
        self.count = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The value of OTEL_EXPORTER_OTLP_TRACES_ENDPOINT that sends spans here."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def env(self) -> dict[str, str]:
        """The environment that switches a server's tracing on, exporting here at once."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def received(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest.FromString(body)
        spans = [
            span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.server.lock:
            self.server.count += len(spans)
            if self.server.keep:
                self.server.spans.extend(spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def receiver(keep: bool = True) -> Iterator[Receiver]:
    server = Receiver(keep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
