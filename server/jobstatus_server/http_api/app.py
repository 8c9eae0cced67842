"""The HTTP listener: the same process and event loop as gRPC, through the same core.

It serves /metrics, /healthz, the documented REST paths (rest.py, their GETs
through the fast path, fast_path.py), the SSE watch (sse.py) and /openapi.json
(openapi.py), on uvicorn with a bound on each request's line and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence

import httptools
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobstatus_server.access.limits import HTTP, refuse
from jobstatus_server.http_api import wrong_port
from jobstatus_server.http_api.error_body import limit_refusal
from jobstatus_server.http_api.fast_path import DocumentedGets, flush_request_counts
from jobstatus_server.http_api.rest import Path
from jobstatus_server.observability.metrics import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    flush_tallies,
    refresh_scraped,
)

_CONVERTER = re.compile(r":\w+}")  # `{id:path}` is labelled `{id}`


async def metrics(request: Request) -> Response:
    flush_request_counts()
    flush_tallies()
    await refresh_scraped()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts every request by method, route template and status code, and observes
    the time until its response starts (for a stream: until it opens)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        def route() -> str:
            matched = scope.get("route")
            return _CONVERTER.sub("}", str(getattr(matched, "path", "unmatched")))

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                HTTP_SECONDS.labels(scope["method"], route()).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            HTTP_REQUESTS.labels(scope["method"], route(), str(status[0])).inc()


def make_app(
    routes: list[BaseRoute], healthy: Callable[[], bool], documented: Sequence[Path] = ()
) -> ASGIApp:
    """The Starlette app of every route, behind `DocumentedGets` when given the
    documented paths."""

    async def healthz(request: Request) -> Response:
        ok = healthy()
        return JSONResponse({"status": "SERVING" if ok else "NOT_SERVING"}, 200 if ok else 503)

    app = Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes],
        middleware=[Middleware(RequestMetrics)],
    )
    return DocumentedGets(documented, app) if documented else app


class HttpServer(uvicorn.Server):
    """uvicorn in our event loop; the jobstatus server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(
    app: ASGIApp,
    address: str,
    *,
    tls_cert: str = "",
    tls_key: str = "",
    tls_client_ca: str = "",
) -> HttpServer:
    """uvicorn on `address`; HTTPS when given a certificate, and then with client
    certificates required when given the CA that signs them."""
    host, port = address.rsplit(":", 1)
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=int(port),
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
        ssl_certfile=tls_cert or None,
        ssl_keyfile=tls_key or None,
        ssl_ca_certs=tls_client_ca or None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
    )
    return HttpServer(config)


def listen(address: str) -> list[socket.socket]:
    """The listening sockets of `address` (`host:port`), bound as asyncio's
    create_server binds them (each address the host resolves to, SO_REUSEADDR, IPv6
    sockets IPv6 only), for uvicorn to serve on. Bound before the server opens its
    database, so that a taken port refuses the start with nothing to close; OSError
    when one cannot be bound."""
    host, port = address.rsplit(":", 1)
    infos = socket.getaddrinfo(
        host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, where in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(where)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request line and headers: beyond
    `max_header_bytes` the request is answered 429 and the connection closed, before
    more of it is kept in memory."""

    max_header_bytes = 64 * 1024
    grpc_hint = wrong_port.hint("the port of --grpc-addr")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first bytes are looked at once, for a gRPC client's HTTP/2 preface. (The
        # event loop, uvloop, binds data_received before this runs: it cannot be swapped.)
        self._relay: Callable[[bytes], None] | None = self._first_data

    def data_received(self, data: bytes) -> None:
        if self._relay is None:
            HttpToolsProtocol.data_received(self, data)
        else:
            self._relay(data)

    def _first_data(self, data: bytes) -> None:
        self._relay = None
        if wrong_port.is_http2(data):
            self._relay = wrong_port.GrpcOnHttpPort(self.transport, self.grpc_hint).feed
        self.data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_too_large = False

    def _too_large(self) -> None:
        self._head_too_large = True
        raise httptools.HttpParserError("request head too large")

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._too_large()
        # uvicorn's own on_url, called by its class: zero-argument super() costs ~0.3 us
        # a request more here (timeit: 450-610 ns against 150-220 ns for this call).
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_header_bytes:
            self._too_large()
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if not getattr(self, "_head_too_large", False):
            super().send_400_response(msg)
            return
        error = refuse(
            HTTP,
            "header_bytes",
            f"a request line and headers are at most {self.max_header_bytes} bytes",
        )
        _, headers, body = limit_refusal(error)
        head = [b"HTTP/1.1 429 Too Many Requests\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int, grpc_address: str = "") -> type[LimitedHttpTools]:
    """LimitedHttpTools bounded at `max_header_bytes`, for uvicorn's `http` setting; a gRPC
    client that reaches it is told to use `grpc_address`."""
    named = {"grpc_hint": wrong_port.hint(grpc_address)} if grpc_address else {}
    return type(
        "LimitedHttpTools",
        (LimitedHttpTools,),
        {"max_header_bytes": max_header_bytes, **named},
    )
