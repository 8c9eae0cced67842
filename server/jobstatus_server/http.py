"""The HTTP listener: the same process and event loop as gRPC, through the same core.

It serves /metrics and /healthz now; the documented REST paths mount here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def make_app(routes: list[BaseRoute], healthy: Callable[[], bool]) -> Starlette:
    async def healthz(request: Request) -> Response:
        ok = healthy()
        return JSONResponse({"status": "SERVING" if ok else "NOT_SERVING"}, 200 if ok else 503)

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes],
    )


class HttpServer(uvicorn.Server):
    """uvicorn in our event loop; the jobstatus server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: Starlette, address: str) -> HttpServer:
    host, port = address.rsplit(":", 1)
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=int(port),
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
    )
    return HttpServer(config)
