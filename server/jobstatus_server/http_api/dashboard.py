"""The dashboard: a live page of jobs, served at / on the HTTP listener.

Static files shipped in the package (dashboard/), no build step and nothing from
another host. What the page loads grows with what a person looks at, never with the
store: the counts per status come from the server and are pushed when they change
(counts.py, GET /api/v1/counts/watch); the table is one page of one kind's jobs,
filtered and paged on the server (GET /api/v1/dashboard/jobs, below); the rows on
screen follow an SSE watch of just their ids (sse.py, `envelope=true`, from the
revision the page was read at); a job's history comes from history.py. The page
sends the API key the user typed (kept in the tab's sessionStorage) as X-Api-Key.
/dashboard/kinds.json says how each kind's statuses are spelled and which outcome
each one means.

GET /api/v1/dashboard/jobs?kind=K&status=S1,S2&active=true&prefix=P&since=T&until=T
&page_size=N&page_token=X answers

    {"kind": K, "revision": R, "jobs": [{"revision", "updateTime", "job"}, ...],
     "nextPageToken": "..."}

newest first (by id when a prefix is given): `status` in documented spelling (or
the enum value name), `active` (the default: true) only jobs not settled, `since`
and `until` bound the creation time (RFC 3339); each job in the SSE watch's
envelope, so the page treats a listed row and a watched change alike. The READ
scope, and jobstatus's own error body (error_body.py) otherwise.

Every answer carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only and no inline script, so a job field that holds
markup can never run (the page renders every field with textContent anyway).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus.live import SUCCEEDED
from jobstatus.spelling import spelling
from jobstatus_server.access.auth import READ, Authenticator
from jobstatus_server.access.credentials import bearer
from jobstatus_server.contract.errors import JobStatusError, refusals
from jobstatus_server.contract.kinds import KINDS, Kind
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import error_body
from jobstatus_server.http_api.sse import FRAMINGS, enveloped
from jobstatus_server.state.store import Store
from jobstatus_server.usecases.counts import counted_statuses, status_label
from jobstatus_server.usecases.job_pages import MAX_PAGE_SIZE, PageRequest, jobs_page

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
    "/dashboard/icon.svg": ("icon.svg", "image/svg+xml"),
}
NEVER_STORED = {"NOT_FOUND"}  # the catalog import path's answer for an unknown id
# The documented JSON key of each kind's id (the SSE event data, rest.py's Shapes).
ID_KEYS = {
    "map_import": "importRequestId",
    "prepared_delivery": "catalogId",
    "dataset": "dataset_id",
    "catalog_import": "id",
}
TITLES = {
    "map_import": "Map imports",
    "prepared_delivery": "Prepared deliveries",
    "dataset": "Dataset imports",
    "catalog_import": "Catalog imports",
}


def kinds() -> list[dict[str, Any]]:
    """Each kind: its name, title, id key, statuses in documented spelling and their outcome."""
    out = []
    for name, kind in KINDS.items():
        statuses = []
        for value in kind.status_enum.values:
            spelled = spelling(value)
            if value.number == 0 or spelled in NEVER_STORED:
                continue
            if value.number not in kind.settled:
                outcome = "running"
            elif spelled in SUCCEEDED[name]:
                outcome = "succeeded"
            else:
                outcome = "failed"
            statuses.append({"status": spelled, "outcome": outcome})
        out.append(
            {"kind": name, "title": TITLES[name], "idKey": ID_KEYS[name], "statuses": statuses}
        )
    return out


JOBS_PATH = "/api/v1/dashboard/jobs"
MAX_PREFIX = 128  # as long as a job id may be


def _kind(value: str) -> Kind[Any]:
    found = KINDS.get(value)
    if found is None:
        raise params.Invalid(f"must be one of: {', '.join(KINDS)}")
    return found


def _time(value: str) -> float:
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(value.strip())
    except ValueError:
        raise params.Invalid("must be an RFC 3339 time, e.g. 2026-12-07T10:00:00Z") from None
    return float(stamp.seconds) + stamp.nanos / 1e9


def _page_size(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise params.Invalid(f"must be a whole number (a size past {MAX_PAGE_SIZE} is capped)")
    return int(value)


JOBS_PARAMS = (
    params.Param("kind", params.QUERY, _kind),
    params.Param("status", params.QUERY, params.comma_list, many=True),
    params.Param("active", params.QUERY, params.flag, default=True),
    params.Param("prefix", params.QUERY, default="", max_len=MAX_PREFIX),
    params.Param("since", params.QUERY, _time, blank=True),
    params.Param("until", params.QUERY, _time, blank=True),
    params.Param("page_size", params.QUERY, _page_size, default=0, blank=True),
    params.Param("page_token", params.QUERY, default="", max_len=1024),
    params.Param("x-api-key", params.HEADER),
    params.Param("authorization", params.HEADER),
)


def _status_numbers(kind: Kind[Any], names: list[str]) -> tuple[int, ...]:
    """The statuses named by documented spelling, label or enum value name."""
    known: dict[str, int] = {}
    for status in counted_statuses(kind):
        known[kind.status_enum.values_by_number[status].name] = status
        known[status_label(kind, status)] = status
    unknown = [name for name in names if name not in known]
    if unknown:
        raise params.invalid(
            "status",
            f"{unknown[0]!r} is not a status of {kind.name}; one of: "
            + ", ".join(status_label(kind, s) for s in counted_statuses(kind)),
        )
    return tuple(dict.fromkeys(known[name] for name in names))


def _row(kind: Kind[Any], job: Message) -> dict[str, Any]:
    """A listed job in the SSE watch's envelope (sse.py, envelope=true)."""
    return enveloped(job, FRAMINGS[kind.name, False].render(job))


def jobs_route(store: Store, auth: Authenticator) -> Route:
    """GET /api/v1/dashboard/jobs: one page of one kind's jobs, filtered on the server."""

    async def endpoint(request: Request) -> Response:
        try:
            asked = params.parse(request.scope, JOBS_PARAMS)
            caller = await auth.authenticate(asked["x-api-key"], bearer(asked["authorization"]))
            auth.authorize(caller, READ)
            kind = asked["kind"]
            if kind is None:
                raise params.invalid("kind", f"is required: one of {', '.join(KINDS)}")
            statuses = [name for names in asked["status"] for name in names]
            page = await jobs_page(
                store,
                PageRequest(
                    kind,
                    caller.tenant,
                    _status_numbers(kind, statuses),
                    asked["active"],
                    asked["prefix"],
                    asked["since"],
                    asked["until"],
                    asked["page_size"],
                    asked["page_token"],
                ),
            )
        except JobStatusError as error:
            refusals.refused(f"GET {JOBS_PATH}", error)
            return JSONResponse(error_body(error), error.http_status, headers=HEADERS)
        return JSONResponse(
            {
                "kind": kind.name,
                "revision": page.revision,
                "jobs": [_row(kind, job) for job in page.jobs],
                "nextPageToken": page.next_page_token,
            },
            headers=HEADERS,
        )

    return Route(JOBS_PATH, endpoint, methods=["GET"])


def _read(name: str) -> bytes:
    return resources.files("jobstatus_server.http_api").joinpath("dashboard", name).read_bytes()


def routes(auth: Authenticator, store: Store) -> list[BaseRoute]:
    bodies = {path: (_read(name), media) for path, (name, media) in FILES.items()}
    described = kinds()

    def static(path: str) -> Any:
        body, media = bodies[path]

        async def serve(request: Request) -> Response:
            return Response(body, media_type=media, headers=HEADERS)

        return serve

    async def config(request: Request) -> Response:
        return JSONResponse({"keys": not auth.open, "kinds": described}, headers=HEADERS)

    return [
        *(Route(path, static(path), methods=["GET"]) for path in FILES),
        Route("/dashboard/kinds.json", config, methods=["GET"]),
        jobs_route(store, auth),
    ]
