"""The HTTP listener: the same process and event loop as gRPC, through the same core.

It serves /metrics, /healthz, the documented REST paths (rest.py), the SSE
watch (sse.py) and /openapi.json (openapi.py).
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_server.access.limits import CallerLimits
from jobstatus_server.http_api.rest import Json, Path, Ready, start_message
from jobstatus_server.observability.metrics import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    VIEW_HITS,
    Tally,
    flush_tallies,
)

_CONVERTER = re.compile(r":\w+}")  # `{id:path}` is labelled `{id}`


async def metrics(request: Request) -> Response:
    for lean in list(_LEANS):
        lean.flush()
    flush_tallies()
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
    routes: list[BaseRoute], healthy: Callable[[], bool], lean: Sequence[Path] = ()
) -> ASGIApp:
    async def healthz(request: Request) -> Response:
        ok = healthy()
        return JSONResponse({"status": "SERVING" if ok else "NOT_SERVING"}, 200 if ok else 503)

    app = Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes],
        middleware=[Middleware(RequestMetrics)],
    )
    return Lean(lean, app) if lean else app


class Asked:
    """What a documented path's handler reads of a GET request, straight from the scope."""

    __slots__ = ("client", "headers", "path_params", "scope")

    def __init__(self, scope: Scope, param: str, value: str) -> None:
        self.scope = scope
        self.path_params = {param: value}
        self.headers = _Headers(scope["headers"])
        self.client = _Client(scope["client"][0]) if scope.get("client") else None

    @property
    def query_params(self) -> dict[str, str]:
        # As Starlette's QueryParams: latin-1 query string, blanks kept, the last value wins.
        query: bytes = self.scope["query_string"]
        return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}


class _Headers:
    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (lower case), as Starlette's Headers.get."""
        wanted = name.encode("latin-1")
        for key, value in self.raw:
            if key == wanted:
                return value.decode("latin-1")
        return default


class _Client:
    __slots__ = ("host",)

    def __init__(self, host: str) -> None:
        self.host = host


class Lean:
    """The documented REST paths without Starlette's middleware and router per request:
    a GET whose path is one of them goes straight to its handler, its metrics recorded
    once here; every other request goes to the Starlette app."""

    def __init__(self, paths: Sequence[Path], app: ASGIApp) -> None:
        self.paths = tuple(paths)
        self.app = app
        self._seconds = {p.template: HTTP_SECONDS.labels("GET", p.template) for p in paths}
        self._counts: dict[tuple[str, int], Any] = {}
        # Requests answered since the last scrape, by route and status: added to
        # HTTP_REQUESTS by `flush` (/metrics), not one Counter.inc per request.
        self._pending: dict[tuple[str, int], int] = {}
        # The ready answers (`ready`), per path: observed in HTTP_SECONDS and counted in
        # HTTP_REQUESTS (200) and VIEW_HITS at each scrape.
        self._tallies = {
            p.template: Tally(
                self._seconds[p.template],
                HTTP_REQUESTS.labels("GET", p.template, "200"),
                VIEW_HITS,
            )
            for p in paths
            if p.ready is not None and not p.suffix
        }
        # Per path in order: its prefix, and its ready answer and tally (None: the handler
        # answers every GET of it).
        self._ready = tuple(
            (p.prefix, p.ready if not p.suffix else None, self._tallies.get(p.template))
            for p in paths
        )
        _LEANS.add(self)

    def ready(self, scope: Scope, limits: CallerLimits) -> Ready | None:
        """The ready answer of a GET of a documented path that the view answers with
        nothing to wait for (Rest.ready_getapp), recorded here; None: no such GET, the
        handler answers it."""
        path: str = scope["path"]
        for prefix, ready, tally in self._ready:
            if not path.startswith(prefix):
                continue
            if ready is None or tally is None:
                return None
            started = perf_counter()
            answer = ready(scope, path[len(prefix) :], limits)
            if answer is not None:
                tally.observe(perf_counter() - started)
            return answer
        return None

    def find(self, path: str) -> tuple[Path, str] | None:
        """The documented path `path` is, and its id; None when it is none of them."""
        for candidate in self.paths:
            value = candidate.match(path)
            if value is not None:
                return candidate, value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            found = self.find(scope["path"])
            if found is not None:
                await self._answer(found[0], found[1], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self, path: Path, value: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        status = 500
        try:
            response = await path.handler(Asked(scope, path.param, value))
            status = response.status_code
            self._seconds[path.template].observe(time.perf_counter() - started)
            await response(scope, receive, send)
        finally:
            self._count(path.template, status)

    async def answer_counted(
        self,
        path: Path,
        value: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        end_call: Callable[[str], None],
        owner: str,
    ) -> None:
        """As `_answer`, called by the limits Guard straight from uvicorn (no other ASGI
        layer between them): `end_call(owner)` when the response starts, and a ready
        body sent with a shared start message (uvicorn does not change it)."""
        started = time.perf_counter()
        status = 500
        counted = True
        try:
            response = await path.handler(Asked(scope, path.param, value))
            status = response.status_code
            self._seconds[path.template].observe(time.perf_counter() - started)
            counted = False
            end_call(owner)
            if type(response) is Json:
                body = response.body
                await send(start_message(status, len(body)))
                await send({"type": "http.response.body", "body": body})
            else:
                await response(scope, receive, send)
        finally:
            if counted:
                end_call(owner)
            self._count(path.template, status)

    def _count(self, template: str, status: int) -> None:
        key = (template, status)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        """Add the requests counted since the last flush to HTTP_REQUESTS (the ready
        answers' are Tallies: `flush_tallies`)."""
        pending, self._pending = self._pending, {}
        for (template, status), count in pending.items():
            counter = self._counts.get((template, status))
            if counter is None:
                counter = HTTP_REQUESTS.labels("GET", template, str(status))
                self._counts[(template, status)] = counter
            counter.inc(count)


_LEANS: weakref.WeakSet[Lean] = weakref.WeakSet()


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
