"""The HTTP listener: the same process and event loop as gRPC, through the same core.

It serves /metrics, /healthz, the documented REST paths (rest.py), the SSE
watch (sse.py) and /openapi.json (openapi.py).
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_server.metrics import HTTP_REQUESTS, HTTP_SECONDS

_CONVERTER = re.compile(r":\w+}")  # `{id:path}` is labelled `{id}`


async def metrics(request: Request) -> Response:
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


def make_app(routes: list[BaseRoute], healthy: Callable[[], bool]) -> Starlette:
    async def healthz(request: Request) -> Response:
        ok = healthy()
        return JSONResponse({"status": "SERVING" if ok else "NOT_SERVING"}, 200 if ok else 503)

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes],
        middleware=[Middleware(RequestMetrics)],
    )


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
