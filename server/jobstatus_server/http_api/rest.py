"""The documented REST paths, served by the same core in the same event loop as gRPC.

Each path answers as its document (../shared/seeds) says: its keys, spellings,
status codes and error bodies, and the way it takes an API key. The bodies are
rendered from the descriptors by the Shapes below (render.py); /openapi.json is
built from the same Shapes (openapi.py).

One concept past 400 lines: the four documented paths side by side, each path's
shape, its errors in its own document's form, and its handler; a reader comparing
this file with the documents finds every answer of a path in one place.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from jobstatus.spelling import by_spelling
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.access.auth import READ, Authenticator, Caller, cluster_of
from jobstatus_server.access.credentials import (
    API_KEY,
    RAW_API_KEY,
    STANDARD_KEY_HEADERS,
    X_API_KEY,
    standard_keys,
)
from jobstatus_server.contract.errors import (
    InvalidArgument,
    JobStatusError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from jobstatus_server.contract.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT, Kind, M
from jobstatus_server.contract.render import Key, Shape
from jobstatus_server.contract.validation import violations_of
from jobstatus_server.http_api import params
from jobstatus_server.state.renderings import Form, Renderings
from jobstatus_server.state.view import Entry, View
from jobstatus_server.usecases.jobs import Core

log = logging.getLogger(__name__)


class AnyText(Convertor[str]):
    """A path parameter of any characters: Starlette's `path` stops at a newline."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any", AnyText())

# --- the documented bodies ----------------------------------------------------------------

ERROR = Shape(errors_pb2.Error.DESCRIPTOR, (Key("error_code"), Key("message")))
ERROR_FULL = Shape(
    errors_pb2.Error.DESCRIPTOR, (Key("error_code", always=True), Key("message", always=True))
)

MAP_META = Shape(
    mi.MapImportMetaData.DESCRIPTOR,
    (
        Key("job_id", always=True),
        Key("export_start"),
        Key("export_end"),
        Key("progress", always=True),
        Key("size", always=True),
        Key("area", always=True),
        Key("footprint"),
        Key("zoom_level", always=True),
        Key("package_url"),
        Key("file_name"),
        Key("imaging_start"),
        Key("imaging_end"),
    ),
)
# The v1 path reports the newest statuses as Start, for older clients (seeds/README.md).
V1_REPORTS = {
    mi.MAP_IMPORT_STATUS_DRAFT: mi.MAP_IMPORT_STATUS_START,
    mi.MAP_IMPORT_STATUS_DISCOVERED: mi.MAP_IMPORT_STATUS_START,
}


def _map_shape(never: frozenset[int]) -> Shape:
    return Shape(
        mi.MapImport.DESCRIPTOR,
        (
            Key("import_request_id", always=True),
            Key("status", always=True, never=never),
            Key("error", shape=ERROR, description="Present only when the import has an error."),
            Key("meta_data", always=True, shape=MAP_META),
        ),
    )


MAP_V1 = _map_shape(frozenset(V1_REPORTS))
MAP_V2 = _map_shape(frozenset())
# An unknown map answers 200 with only the error (seeds/README.md).
MAP_NOT_FOUND = Shape(mi.MapImport.DESCRIPTOR, (Key("error", always=True, shape=ERROR_FULL),))

ARTIFACT = Shape(
    dl.Artifact.DESCRIPTOR,
    (
        Key("catalog_id", always=True),
        Key("id", always=True),
        Key("item_key", always=True),
        Key("artifact_type"),
        Key("meta_data"),
        Key("url", always=True),
        Key("size", always=True),
        Key(
            "hash",
            shape=Shape(
                dl.ArtifactHash.DESCRIPTOR,
                (Key("algorithm", always=True), Key("hash", always=True)),
            ),
        ),
        Key("signature"),
        Key("is_executable"),
        Key("arguments"),
    ),
)
DELIVERY_BODY = Shape(
    dl.PreparedDelivery.DESCRIPTOR,
    (
        Key("catalog_id", always=True),
        Key("status", always=True),
        Key("progress", always=True),
        Key("size", always=True),
        Key(
            "url", description="Deprecated: the gpkg (or else the first) artifact's url, once done."
        ),
        Key("artifacts", always=True, shape=ARTIFACT),
        Key("error", shape=ERROR, description="Present only when the delivery has an error."),
    ),
)
DELIVERY_NOT_FOUND = Shape(
    dl.PreparedDelivery.DESCRIPTOR, (Key("error", always=True, shape=ERROR_FULL),)
)
SOURCES = by_spelling(dl.DeliverySource.DESCRIPTOR)

DATASET_RUN = Shape(
    ds.DatasetImportRun.DESCRIPTOR,
    (
        Key("id", always=True),
        Key(
            "steps",
            always=True,
            shape=Shape(
                ds.DatasetImportStep.DESCRIPTOR,
                (
                    Key("name", always=True),
                    Key("start", always=True),
                    Key("end", always=True, description="null while the step runs."),
                    Key(
                        "entries",
                        always=True,
                        shape=Shape(
                            ds.DatasetLogEntry.DESCRIPTOR,
                            (
                                Key("created_at", always=True),
                                Key("detail", always=True),
                                Key("level", always=True),
                            ),
                        ),
                    ),
                    Key("status", always=True),
                ),
            ),
        ),
        Key("status", always=True),
    ),
)

CATALOG_BODY = Shape(
    cat.CatalogImport.DESCRIPTOR,
    (
        Key("id", always=True),
        Key("status", always=True),
        Key("type", description="Absent for status NOT_FOUND."),
        Key("message", description="Present when the import failed with a message."),
    ),
)

# The documented texts of the dataset path's errors.
NO_CREDENTIALS = "Unable to locate credentials."
NOT_MATCHING = "Credentials found, but not matching."
OUT_OF_QUOTA = "Out of free quota."
RATE_LIMITED = "Rate limit reached"
DATASET_NOT_FOUND = "Dataset was not found"
NO_RUN = "Dataset has no import run yet"
# ... and of the catalog import path's.
KEY_NOT_VALID = "Api-Key could not be validated."
CLUSTER_NOT_FOUND = "Cluster not found."


# --- error bodies, one style per document ---------------------------------------------------


def getapp_error(status: int, message: str) -> JSONResponse:
    """GetApp (NestJS): `{"statusCode": 401, "message": "..."}`."""
    return JSONResponse({"statusCode": status, "message": message}, status)


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Woosmap 401, 402, 403: `{"detail": "..."}`."""
    return JSONResponse({"detail": message}, status, headers)


def details(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Woosmap 404 and 429: `{"details": "..."}` (the document uses both spellings)."""
    return JSONResponse({"details": message}, status, headers)


def elevate_error(status: int, message: str) -> JSONResponse:
    """Voyado Elevate: `{"message": "..."}`."""
    return JSONResponse({"message": message}, status)


ErrorStyle = Callable[[int, str], Response]


class Json:
    """A ready JSON body (from the view): sent as JSONResponse would send it, without
    building one."""

    __slots__ = ("body", "status_code")

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.body = body
        self.status_code = status_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [
                    (b"content-length", str(len(self.body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


Answer = Response | Json


class IncomingRequest(Protocol):
    """What a handler reads of a request: Starlette's Request, or the fast path's
    GetRequest (fast_path.py)."""

    @property
    def scope(self) -> Scope: ...
    @property
    def headers(self) -> Any: ...  # .get(name) -> str | None
    @property
    def query_params(self) -> Any: ...  # .get(name) -> str | None
    @property
    def path_params(self) -> dict[str, Any]: ...
    @property
    def client(self) -> Any: ...  # .host, or None


Handler = Callable[[Any], Awaitable[Answer]]


def _guarded(style: ErrorStyle, handler: Handler) -> Handler:
    """Answer any failure the handler did not answer itself in the path's error style."""

    async def run(request: IncomingRequest) -> Answer:
        try:
            return await handler(request)
        except JobStatusError as error:
            return style(error.http_status, error.message)
        except Exception:  # nothing leaks a traceback
            log.exception("%s %s failed", request.scope["method"], request.scope["path"])
            return style(500, "internal error; the server log has the details")

    return run


def _dumps(content: Any) -> bytes:
    """The bytes JSONResponse would send for `content`."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


# --- the dataset path's rate limit and quota --------------------------------------------------


@dataclass
class Limits:
    """Per key: at most one request per `interval` seconds (0: no limit) and `quota`
    requests per UTC day (0: no quota). In memory, per process."""

    interval: float = 5.0
    quota: int = 0
    _next: dict[str, float] = field(default_factory=dict)
    _used: dict[str, tuple[str, int]] = field(default_factory=dict)

    def retry_after(self, who: str) -> float:
        """Seconds until `who` may call again (0: now); a call that may go is counted."""
        if self.interval <= 0:
            return 0.0
        now = time.monotonic()
        wait = self._next.get(who, 0.0) - now
        if wait > 0:
            return wait
        if len(self._next) > 10_000:  # forget the callers that may call again anyway
            self._next = {k: v for k, v in self._next.items() if v > now}
        self._next[who] = now + self.interval
        return 0.0

    def spend(self, who: str) -> bool:
        """Count one request against today's quota; False when it is used up."""
        if self.quota <= 0:
            return True
        today = datetime.now(UTC).date().isoformat()
        if len(self._used) > 10_000:  # forget the callers of earlier days
            self._used = {k: v for k, v in self._used.items() if v[0] == today}
        day, used = self._used.get(who, (today, 0))
        if day != today:
            used = 0
        if used >= self.quota:
            return False
        self._used[who] = (today, used + 1)
        return True


# --- the paths ------------------------------------------------------------------------------


def _render_map_v1(renderings: Renderings) -> bytes:
    job = renderings.message(MAP_IMPORT)
    if job.status in V1_REPORTS:
        shown = mi.MapImport()
        shown.CopyFrom(job)
        shown.status = V1_REPORTS[job.status]
        job = shown
    return _dumps(MAP_V1.render(job))


def _render_map_v2(renderings: Renderings) -> bytes:
    return _dumps(MAP_V2.render(renderings.message(MAP_IMPORT)))


def _render_delivery(renderings: Renderings) -> bytes:
    return _dumps(DELIVERY_BODY.render(renderings.message(DELIVERY)))


def _render_dataset(renderings: Renderings) -> bytes:
    job = renderings.message(DATASET)
    if not job.HasField("latest_run"):
        return b""  # answered 404 NO_RUN
    return _dumps(DATASET_RUN.render(job.latest_run))


def _render_catalog(renderings: Renderings) -> bytes:
    return _dumps(CATALOG_BODY.render(renderings.message(CATALOG_IMPORT)))


def _possible(kind: Kind[M], job_id: str) -> bool:
    """False for an id that no job can have (it is not looked up)."""
    try:
        probe = kind.message(**{kind.id_field: job_id})
        return next(violations_of(probe), None) is None
    except (ValueError, TypeError):
        return False


@dataclass
class Rest:
    core: Core
    auth: Authenticator
    limits: Limits = field(default_factory=Limits)
    view: View | None = None

    async def _get(
        self, kind: Kind[M], tenant: str, job_id: str, request: IncomingRequest
    ) -> Entry | None:
        """The job as the view has it (None: no such job); an id that no job can have is
        not looked up. Waits for the `X-Min-Revision` header's revision."""
        assert self.view is not None
        min_revision = params.min_revision(request.headers.get(params.MIN_REVISION_HEADER))
        if min_revision is None:
            raise InvalidArgument(params.MIN_REVISION_INVALID, reason="INVALID_ARGUMENT")
        return await self.view.get(
            kind, tenant, job_id, min_revision, None, lambda: _possible(kind, job_id)
        )

    async def _reader(self, *presented: str | None) -> Caller:
        caller = await self.auth.authenticate(*presented)
        self.auth.authorize(caller, READ)
        return caller

    async def _getapp_caller(self, request: IncomingRequest) -> Caller | Response:
        try:
            return await self._reader(*standard_keys(request.headers))
        except Unauthenticated as error:
            return getapp_error(401, error.message)
        except PermissionDenied as error:
            return getapp_error(403, error.message)

    async def map_v1(self, request: IncomingRequest) -> Answer:
        return await self._map(request, Form.MAP_V1, _render_map_v1)

    async def map_v2(self, request: IncomingRequest) -> Answer:
        return await self._map(request, Form.MAP_V2, _render_map_v2)

    async def _map(
        self, request: IncomingRequest, form: Form, render: Callable[[Renderings], bytes]
    ) -> Answer:
        caller = await self._getapp_caller(request)
        if isinstance(caller, Response):
            return caller
        job_id = request.path_params["importRequestId"]
        entry = await self._get(MAP_IMPORT, caller.tenant, job_id, request)
        if entry is None:
            error = MAP_IMPORT.not_found(job_id)
            return JSONResponse(MAP_NOT_FOUND.render(mi.MapImport(error=_error(error))))
        return Json(entry.renderings.documented_json(form, render))

    async def delivery(self, request: IncomingRequest) -> Answer:
        caller = await self._getapp_caller(request)
        if isinstance(caller, Response):
            return caller
        source = request.query_params.get("source")
        if source is not None and source not in SOURCES:
            allowed = ", ".join(SOURCES)
            return JSONResponse(
                {
                    "statusCode": 400,
                    "message": [f"source must be one of the following values: {allowed}"],
                    "error": "Bad Request",
                },
                400,
            )
        job_id = request.path_params["catalogId"]
        entry = await self._get(DELIVERY, caller.tenant, job_id, request)
        if entry is None:
            error = DELIVERY.not_found(job_id)
            body = DELIVERY_NOT_FOUND.render(dl.PreparedDelivery(error=_error(error)))
            return JSONResponse(body, 404)
        return Json(entry.renderings.documented_json(Form.DELIVERY, _render_delivery))

    async def dataset(self, request: IncomingRequest) -> Answer:
        try:
            caller = await self._reader(
                request.query_params.get("private_key"), request.headers.get(X_API_KEY)
            )
        except Unauthenticated as error:
            if error.reason == "API_KEY_MISSING":
                return detail(401, NO_CREDENTIALS)
            return detail(403, NOT_MATCHING)
        except PermissionDenied:
            return detail(403, NOT_MATCHING)
        who = caller.key_id or f"address:{request.client.host if request.client else ''}"
        wait = self.limits.retry_after(who)
        if wait > 0:
            return details(429, RATE_LIMITED, {"Retry-After": str(math.ceil(wait))})
        if not self.limits.spend(who):
            return detail(402, OUT_OF_QUOTA)
        raw = request.path_params["dataset_id"]
        try:
            dataset_id = str(uuid.UUID(raw))
        except ValueError:
            return JSONResponse(
                {
                    "detail": [
                        {
                            "type": "uuid_parsing",
                            "loc": ["path", "dataset_id"],
                            "msg": "Input should be a valid UUID",
                            "input": raw,
                        }
                    ]
                },
                422,
            )
        entry = await self._get(DATASET, caller.tenant, dataset_id, request)
        if entry is None:
            return details(404, DATASET_NOT_FOUND)
        body = entry.renderings.documented_json(Form.DATASET_RUN, _render_dataset)
        if not body:
            return details(404, NO_RUN)
        return Json(body)

    async def catalog(self, request: IncomingRequest) -> Answer:
        cluster = cluster_of(request.headers.get("host") or "")
        if cluster is not None and not self.auth.knows_tenant(cluster):
            return elevate_error(404, CLUSTER_NOT_FOUND)
        try:
            caller = await self._reader(request.headers.get(API_KEY))
        except (Unauthenticated, PermissionDenied):
            return elevate_error(403, KEY_NOT_VALID)
        if cluster is not None and cluster != caller.tenant:
            return elevate_error(403, KEY_NOT_VALID)
        job_id = request.path_params["id"]
        entry = await self._get(CATALOG_IMPORT, caller.tenant, job_id, request)
        if entry is None:
            job = cat.CatalogImport(id=job_id, status=cat.CATALOG_IMPORT_STATUS_NOT_FOUND)
            return JSONResponse(CATALOG_BODY.render(job))
        return Json(entry.renderings.documented_json(Form.CATALOG, _render_catalog))

    def _ready_read(
        self,
        kind: Kind[Any],
        form: Form,
        render: Callable[[Renderings], bytes],
        key_headers: frozenset[bytes] = STANDARD_KEY_HEADERS,
        reads_host: bool = False,
    ) -> ReadyRead:
        assert self.view is not None
        return ReadyRead(kind, form, render, key_headers, reads_host, self.auth, self.view)

    def paths(self) -> list[Path]:
        """The documented paths: (route template, how its id is cut from the path, handler)."""
        return [
            Path(
                "/api/v1/map/import/status/{importRequestId}",
                "/api/v1/map/import/status/",
                "",
                "importRequestId",
                _guarded(getapp_error, self.map_v1),
                self._ready_read(MAP_IMPORT, Form.MAP_V1, _render_map_v1),
            ),
            Path(
                "/api/v2/map/import/status/{importRequestId}",
                "/api/v2/map/import/status/",
                "",
                "importRequestId",
                _guarded(getapp_error, self.map_v2),
                self._ready_read(MAP_IMPORT, Form.MAP_V2, _render_map_v2),
            ),
            Path(
                "/api/v1/delivery/preparedDelivery/{catalogId}",
                "/api/v1/delivery/preparedDelivery/",
                "",
                "catalogId",
                _guarded(getapp_error, self.delivery),
                self._ready_read(DELIVERY, Form.DELIVERY, _render_delivery),
            ),
            Path(
                "/datasets/{dataset_id}/status",
                "/datasets/",
                "/status",
                "dataset_id",
                _guarded(detail, self.dataset),
            ),
            Path(
                "/api/v2/import/status/{id}",
                "/api/v2/import/status/",
                "",
                "id",
                _guarded(elevate_error, self.catalog),
                self._ready_read(
                    CATALOG_IMPORT,
                    Form.CATALOG,
                    _render_catalog,
                    frozenset((RAW_API_KEY,)),
                    True,
                ),
            ),
        ]

    def routes(self) -> list[BaseRoute]:
        # `:any` takes any id, even with a slash or a newline: every id gets the documented
        # answer. The fast path (fast_path.py) answers GET before these; they serve the rest
        # (HEAD, and paths only Starlette's matching takes, such as a trailing newline).
        return [
            Route(
                path.template.replace("}", ":any}"),
                path.handler,
                methods=["GET"],
            )
            for path in self.paths()
        ]


@dataclass(frozen=True)
class ReadyRead:
    """What the fast path needs to answer a GET of a documented path from the view at
    once, as its handler would: the kind, the body's form (renderings.py) and its
    rendering, the key headers the path reads (credentials.py), whether it reads its cluster
    from the Host header, and the authenticator and view the handler uses."""

    kind: Kind[Any]
    form: Form
    render: Callable[[Renderings], bytes]
    key_headers: frozenset[bytes]
    reads_host: bool
    auth: Authenticator
    view: View


@dataclass(frozen=True)
class Path:
    """One documented path: its template, and the prefix and suffix around its id."""

    template: str
    prefix: str
    suffix: str
    param: str
    handler: Handler
    # How the fast path (fast_path.py) answers a GET that needs only the view, or None:
    # the handler answers every GET of it.
    ready: ReadyRead | None = None

    def match(self, path: str) -> str | None:
        """The id in `path`, or None when `path` is not this one."""
        if not path.startswith(self.prefix):
            return None
        if not self.suffix:
            return path[len(self.prefix) :]
        if len(path) < len(self.prefix) + len(self.suffix) or not path.endswith(self.suffix):
            return None
        return path[len(self.prefix) : -len(self.suffix)]


_ERROR_CODES = by_spelling(errors_pb2.ErrorCode.DESCRIPTOR)


def _error(error: NotFound) -> errors_pb2.Error:
    """The documented error object of a not-found job: its code is the kind's reason."""
    code = errors_pb2.ErrorCode.ValueType(_ERROR_CODES.get(error.reason, 0))
    return errors_pb2.Error(error_code=code, message=error.message)
