"""GET /api/v1/counts: the caller's jobs per kind and status (usecases/counts.py).

GET /api/v1/counts[?kind=map_import[,dataset...]] answers

    {"revision": R, "counts": [{"kind": "map_import", "status": "MAP_IMPORT_STATUS_DONE",
      "label": "Done", "count": 12}, ...]}

every (kind, status) of the asked kinds (all when none), zeros included, as of
revision R; the `X-Min-Revision` header waits for a revision as on the documented
GET paths. The READ scope, and jobstatus's own error body (error_body.py) otherwise.

GET /api/v1/counts/watch[?kind=...&heartbeat=S] pushes the same body as server-sent
events (`event: counts`, id = its revision): at once, then whenever the store has
moved on (at most every PUSH_INTERVAL seconds), and `event: heartbeat` when nothing
changed for S seconds. It reads the counts (a few rows) once per push, woken by the
feed this process's view follows, not by a poll; it counts as one of the caller's
watch streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from jobstatus_server.access.auth import READ, Authenticator
from jobstatus_server.access.credentials import bearer
from jobstatus_server.access.limits import HTTP, AdmittedStream, CallerLimits
from jobstatus_server.contract.errors import (
    InvalidArgument,
    JobStatusError,
    Unavailable,
    refusals,
)
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import error_body
from jobstatus_server.state.store import Store
from jobstatus_server.state.view import DeadlineExceeded, View
from jobstatus_server.usecases.counts import Counts, count_jobs, kinds_named

PATH = "/api/v1/counts"
WATCH_PATH = "/api/v1/counts/watch"
PUSH_INTERVAL = 0.25  # seconds: changes closer together are pushed as one
DEFAULT_HEARTBEAT = 15.0

PARAMS = (
    params.Param("kind", params.QUERY, params.comma_list, many=True),
    params.Param(params.MIN_REVISION_HEADER, params.HEADER),
    params.Param("x-api-key", params.HEADER),
    params.Param("authorization", params.HEADER),
)
WATCH_PARAMS = (
    params.Param("kind", params.QUERY, params.comma_list, many=True),
    params.Param("heartbeat", params.QUERY, params.seconds(0, 3600), blank=True),
    params.Param("x-api-key", params.HEADER),
    params.Param("authorization", params.HEADER),
)


def counts_json(counts: Counts) -> dict[str, Any]:
    return {
        "revision": counts.revision,
        "counts": [
            {"kind": c.kind.name, "status": c.status_name, "label": c.label, "count": c.count}
            for c in counts.counts
        ],
    }


def _event(name: str, data: Any, revision: int) -> bytes:
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {revision}\nevent: {name}\ndata: {payload}\n\n".encode()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass(eq=False)  # each stream is itself: hashed by identity, kept in a set
class CountStream(Response):
    """A running push of a tenant's counts, as server-sent events."""

    store: Store
    view: View
    tenant: str
    kinds: list[Kind[Any]]
    heartbeat: float
    limits: CallerLimits
    open_streams: set[CountStream]
    counted: AdmittedStream | None = None
    ended: JobStatusError | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def end(self, error: JobStatusError) -> None:
        """End the stream from outside (its key was revoked)."""
        self.ended = error
        if self._task is not None:
            self._task.cancel()

    async def _push(self, write: Any) -> None:
        seen = -1
        while True:
            counts = await count_jobs(self.store, self.view, self.tenant, self.kinds)
            if counts.revision != seen:
                seen = counts.revision
                await write(_event("counts", counts_json(counts), seen))
            await asyncio.sleep(PUSH_INTERVAL)
            try:
                await self.view.reach(seen + 1, self.heartbeat)
            except DeadlineExceeded:
                await write(_event("heartbeat", {"revision": seen}, seen))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        push = self._task = asyncio.create_task(self._push(write))
        self.open_streams.add(self)
        if self.ended is not None:  # ended before it started
            push.cancel()
        left = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait({push, left}, return_when=asyncio.FIRST_COMPLETED)
            if not left.done():
                error = self.ended if push.cancelled() else push.exception()
                if isinstance(error, JobStatusError):
                    await write(_event("error", error_body(error)["error"], 0))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            for task in (push, left):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.open_streams.discard(self)
            if self.counted is not None:
                self.limits.close_stream(self.counted)


@dataclass
class CountsRoute:
    """GET /api/v1/counts and its push, with the READ scope."""

    store: Store
    view: View
    auth: Authenticator
    limits: CallerLimits = field(default_factory=CallerLimits)
    streams: set[CountStream] = field(default_factory=set)

    def close(self) -> None:
        """End every open push (the server stops): the page reconnects elsewhere."""
        for stream in list(self.streams):
            stream.end(Unavailable("the server is shutting down", reason="SHUTTING_DOWN"))

    async def watch(self, request: Request) -> Response:
        try:
            asked = params.parse(request.scope, WATCH_PARAMS)
            caller = await self.auth.authenticate(
                asked["x-api-key"], bearer(asked["authorization"])
            )
            self.auth.authorize(caller, READ)
            kinds = kinds_named([name for names in asked["kind"] for name in names], "kind")
            stream = CountStream(
                self.store,
                self.view,
                caller.tenant,
                kinds,
                asked["heartbeat"] or DEFAULT_HEARTBEAT,
                self.limits,
                self.streams,
            )
            client = request.client
            address = client.host if client else ""
            stream.counted = self.limits.open_stream(
                HTTP, caller, READ, address, f"{address}:{client.port if client else 0}", stream.end
            )
        except JobStatusError as error:
            refusals.refused(f"GET {WATCH_PATH}", error)
            return JSONResponse(error_body(error), error.http_status)
        return stream

    async def endpoint(self, request: Request) -> Response:
        try:
            asked = params.parse(request.scope, PARAMS)
            caller = await self.auth.authenticate(
                asked["x-api-key"], bearer(asked["authorization"])
            )
            self.auth.authorize(caller, READ)
            min_revision = params.min_revision(asked[params.MIN_REVISION_HEADER])
            if min_revision is None:
                raise InvalidArgument(params.MIN_REVISION_INVALID, reason="INVALID_ARGUMENT")
            kinds = kinds_named([name for names in asked["kind"] for name in names], "kind")
            counts = await count_jobs(self.store, self.view, caller.tenant, kinds, min_revision)
        except JobStatusError as error:
            refusals.refused(f"GET {PATH}", error)
            return JSONResponse(error_body(error), error.http_status)
        return JSONResponse(counts_json(counts))

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PATH, self.endpoint, methods=["GET"]),
            Route(WATCH_PATH, self.watch, methods=["GET"]),
        ]
