"""Watch over HTTP: server-sent events with the gRPC watch's guarantees (watch.py).

GET /api/v1/watch/{kind}?ids=a,b&until_settled=true&start_revision=R&heartbeat=S

- Without a resume point, every matching job's current state comes first
  (`event: state`, no id), then `event: synced` with id = the revision the state
  was read at, then every change (`event: change`, id = its revision, data = the
  job's documented JSON). With `Last-Event-ID: R` (or `start_revision=R`): exactly
  the changes after R, in order, none twice.
- An idle stream gets `event: heartbeat` with id = the current revision, so a
  client that resumes from its last id never falls behind the kept history.
- `until_settled`: the stream ends after the change in which every watched job is
  settled, with `event: settled`; a reconnect after that answers 204, which
  tells an EventSource to stop.
- A resume point older than the kept history answers 410 before the stream
  starts; a stream the server ends (a slow consumer, a shutdown) gets
  `event: error` with the resume revision, and the client reconnects.
- `envelope=true` (the dashboard's): each state and change event's data is
  `{"revision": R, "updateTime": T, "job": <documented JSON>}`, so a job's
  revision and last change are known from its state event too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from jobstatus_server.access.auth import READ, Authenticator
from jobstatus_server.access.credentials import bearer
from jobstatus_server.access.limits import HTTP, AdmittedStream, CallerLimits
from jobstatus_server.contract.errors import (
    FieldViolation,
    InvalidArgument,
    JobStatusError,
    refusals,
)
from jobstatus_server.contract.kinds import (
    CATALOG_IMPORT,
    DATASET,
    DELIVERY,
    KINDS,
    MAP_IMPORT,
    Kind,
)
from jobstatus_server.contract.validation import violations_of
from jobstatus_server.contract.watch_start import SSE_RESUME, check_watch_start
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import error_body
from jobstatus_server.http_api.rest import CATALOG_BODY, DATASET_RUN, DELIVERY_BODY, MAP_V2
from jobstatus_server.observability.metrics import HTTP_WATCH_STREAMS
from jobstatus_server.state.changes import Change
from jobstatus_server.state.renderings import Renderings, WatchForm
from jobstatus_server.state.watch import Hub

log = logging.getLogger(__name__)

PATH = "/api/v1/watch/{kind}"
MAX_IDS = 1000
RETRY_MS = 2000
EVENT_NAMES = {
    value.number: value.name.removeprefix("WATCH_EVENT_TYPE_").lower()
    for value in watch_pb2.WatchEventType.DESCRIPTOR.values
    if value.number
}
STATE, SYNCED, CHANGE, HEARTBEAT = (
    watch_pb2.WATCH_EVENT_TYPE_STATE,
    watch_pb2.WATCH_EVENT_TYPE_SYNCED,
    watch_pb2.WATCH_EVENT_TYPE_CHANGE,
    watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT,
)
SETTLED_EVENT = "settled"
ERROR_EVENT = "error"
DATASET_ID = ds.Dataset.DESCRIPTOR.fields_by_name["dataset_id"].name


def _dataset(job: Message) -> dict[str, Any]:
    """A dataset's event data: its id (the documented run body has none) and its latest run."""
    assert isinstance(job, ds.Dataset)
    run = DATASET_RUN.render(job.latest_run) if job.HasField("latest_run") else {}
    return {DATASET_ID: job.dataset_id, **run}


class SseFraming:
    """One kind's watch events as server-sent events of its documented JSON (with or
    without the envelope): the hub keeps each job event in the change's renderings
    (Renderings.watch_frame), so N streams cost one frame per change, not N."""

    def __init__(self, kind: Kind[Any], render: Callable[[Message], Any], envelope: bool) -> None:
        self.kind, self.render, self.envelope = kind, render, envelope
        self.form = WatchForm.SSE_ENVELOPE if envelope else WatchForm.SSE

    def job_event(self, event_type: int, revision: int, renderings: Renderings) -> bytes:
        job = renderings.message(self.kind)
        data = self.render(job)
        if self.envelope:
            data = enveloped(job, data)
        return _frame(EVENT_NAMES[event_type], data, None if event_type == STATE else revision)

    def marker(self, event_type: int, revision: int) -> bytes:
        return _frame(EVENT_NAMES[event_type], {"revision": revision}, revision)


# Each kind's event data (the documented JSON of its status path), framed plain and
# in the envelope.
_RENDERS: dict[str, Callable[[Message], Any]] = {
    MAP_IMPORT.name: MAP_V2.render,
    DELIVERY.name: DELIVERY_BODY.render,
    DATASET.name: _dataset,
    CATALOG_IMPORT.name: CATALOG_BODY.render,
}
FRAMINGS: dict[tuple[str, bool], SseFraming] = {
    (name, envelope): SseFraming(KINDS[name], render, envelope)
    for name, render in _RENDERS.items()
    for envelope in (False, True)
}


# The gRPC watch request of each kind, and its ids field: the SSE watch's ids are
# checked by the same rules (validation.py) as the gRPC Watch's.
WATCH_REQUESTS: dict[str, tuple[type[Message], str]] = {
    MAP_IMPORT.name: (mi.WatchMapImportStatusRequest, "import_request_ids"),
    DELIVERY.name: (dl.WatchPreparedDeliveryStatusRequest, "catalog_ids"),
    DATASET.name: (ds.WatchDatasetStatusRequest, "dataset_ids"),
    CATALOG_IMPORT.name: (cat.WatchImportStatusRequest, "ids"),
}


def _check_ids(kind: Kind[Any], ids: list[str]) -> None:
    request_type, field = WATCH_REQUESTS[kind.name]
    violations = [
        FieldViolation("ids" + v.field.removeprefix(field), v.description, v.reason)
        for v in violations_of(request_type(**{field: ids}))
    ]
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise InvalidArgument(
            f"invalid request: {summary}", reason="INVALID_ARGUMENT", violations=violations
        )


PARAMS = (
    params.Param("kind", params.PATH, params.kind),
    params.Param("ids", params.QUERY, params.comma_list, many=True, max_len=65_536),
    params.Param("until_settled", params.QUERY, params.flag, default=False),
    params.Param("envelope", params.QUERY, params.flag, default=False),
    params.Param("start_revision", params.QUERY, params.revision, default=0, blank=True),
    params.Param("heartbeat", params.QUERY, params.seconds(0, 3600), blank=True),
    params.Param("api_key", params.QUERY),
    params.Param("last-event-id", params.HEADER, params.revision, blank=True),
    params.Param("x-api-key", params.HEADER),
    params.Param("authorization", params.HEADER),
)


def _frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event}\ndata: {payload}\n\n".encode()


class EventStream(Response):
    """A running watch, written to the client as server-sent events."""

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub,
        kind: Kind[Any],
        tenant: str,
        ids: Sequence[str],
        start: int,
        until_settled: bool,
        heartbeat: float,
        envelope: bool = False,
    ) -> None:
        # No Response.__init__: it would send content-length: 0 for the empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.hub, self.kind, self.tenant, self.ids = hub, kind, tenant, ids
        self.start, self.until_settled, self.heartbeat = start, until_settled, heartbeat
        self.framing = FRAMINGS[kind.name, envelope]
        self.limits: CallerLimits | None = None
        self.counted: AdmittedStream | None = None  # in the per-caller stream limits
        self.ended: JobStatusError | None = None  # ended from outside (its key was revoked)
        self._watch: asyncio.Task[int] | None = None

    def end(self, error: JobStatusError) -> None:
        """End the stream from outside: an error event, then the end of the response."""
        self.ended = error
        if self._watch is not None:
            self._watch.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._run(scope, receive, send)
        finally:
            if self.limits is not None and self.counted is not None:
                self.limits.close_stream(self.counted)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await write(f"retry: {RETRY_MS}\n: watching {self.kind.name}\n\n".encode())
        watch = self._watch = asyncio.create_task(
            self.hub.watch(
                self.kind,
                self.tenant,
                self.ids,
                self.start,
                self.until_settled,
                self.heartbeat,
                write,
                self.framing,
            )
        )
        if self.ended is not None:  # ended before it started
            watch.cancel()
        left = asyncio.create_task(_disconnected(receive))
        HTTP_WATCH_STREAMS.inc()
        try:
            await asyncio.wait({watch, left}, return_when=asyncio.FIRST_COMPLETED)
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                return
            left.cancel()
            if watch.cancelled() and self.ended is None:
                return
            error = self.ended if self.ended is not None else watch.exception()
            if self.ended is not None:
                refusals.refused(f"SSE watch of {self.kind.name} ended", self.ended)
            if error is None:
                await write(_frame(SETTLED_EVENT, {"revision": watch.result()}))
            elif isinstance(error, JobStatusError):
                await write(_frame(ERROR_EVENT, error_body(error)["error"]))
            else:
                log.error("SSE watch failed", exc_info=error)
                await write(_frame(ERROR_EVENT, {"code": "INTERNAL", "message": "internal error"}))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            HTTP_WATCH_STREAMS.dec()
            for task in (watch, left):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def enveloped(job: Message, data: Any) -> dict[str, Any]:
    """A job's data in the envelope of its revision and update time (`envelope=true`,
    and the dashboard's listed rows)."""
    return {
        "revision": int(getattr(job, "revision")),  # noqa: B009
        "updateTime": str(getattr(job, "update_time").ToJsonString()),  # noqa: B009
        "job": data,
    }


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Watch:
    hub: Hub
    auth: Authenticator
    limits: CallerLimits = dataclasses.field(default_factory=CallerLimits)

    async def _precheck(
        self, kind: Kind[Any], tenant: str, ids: list[str], start: int, until_settled: bool
    ) -> bool:
        """Fail now, before the stream starts, where the watch would fail at once; True
        when there is nothing left to send (every watched job settled at `start`)."""
        until_done = until_settled and bool(ids)
        store = self.hub.store
        jobs: dict[str, Change] = {}
        if until_done:  # the named jobs (at most MAX_IDS), read in one page
            page = await store.initial_state(kind.name, tenant, ids).first()
            at, jobs = page.at, {job.job_id: job for job in page.jobs}
        else:
            at = await store.position()
        check_watch_start(
            kind, ids, start, until_settled, at.revision, at.compacted, jobs, SSE_RESUME
        )
        return (
            until_done
            and start > 0
            and all(
                job_id in jobs
                and jobs[job_id].revision <= start
                and jobs[job_id].status in kind.settled
                for job_id in ids
            )
        )

    async def endpoint(self, request: Request) -> Response:
        try:
            return await self._open(request)
        except JobStatusError as error:
            refusals.refused(f"{request.method} {PATH}", error)
            retry = getattr(error, "retry_after", 0)
            headers = {"Retry-After": str(math.ceil(retry))} if retry else None
            return JSONResponse(error_body(error), error.http_status, headers)

    async def _open(self, request: Request) -> Response:
        asked = params.parse(request.scope, PARAMS, request.path_params)
        caller = await self.auth.authenticate(
            asked["x-api-key"], bearer(asked["authorization"]), asked["api_key"]
        )
        self.auth.authorize(caller, READ)
        kind: Kind[Any] = asked["kind"]
        ids = [job_id for job_id in dict.fromkeys(part for v in asked["ids"] for part in v)]
        if len(ids) > MAX_IDS:
            raise params.invalid("ids", f"at most {MAX_IDS} ids", "TOO_MANY")
        resume = asked["last-event-id"]
        start = resume if resume is not None else asked["start_revision"]
        until_settled = asked["until_settled"]
        _check_ids(kind, ids)
        heartbeat = asked["heartbeat"] or self.hub.settings.heartbeat
        envelope = asked["envelope"]
        if await self._precheck(kind, caller.tenant, ids, start, until_settled):
            return Response(status_code=204)
        if request.method == "HEAD":  # the stream's headers, without running a watch
            return Response(media_type="text/event-stream; charset=utf-8")
        stream = EventStream(
            self.hub, kind, caller.tenant, ids, start, until_settled, heartbeat, envelope
        )
        client = request.client
        address = client.host if client else ""
        stream.limits = self.limits
        stream.counted = self.limits.open_stream(
            HTTP, caller, READ, address, f"{address}:{client.port if client else 0}", stream.end
        )
        return stream

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.endpoint, methods=["GET"])]
