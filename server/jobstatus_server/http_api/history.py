"""GET /api/v1/history/{kind}/{id}: a job's history (usecases/history.py) as JSON.

GET /api/v1/history/{kind}/{id}?page_size=N&page_token=T answers

    {"kind": "map_import", "id": "...", "oldestRevision": 1, "truncated": false,
     "changes": [{"revision": 3, "time": "2026-...Z", "job": {...}}],
     "nextPageToken": ""}

with each job in its kind's documented JSON (as the SSE watch renders it), and
jobstatus's own error body (error_body.py) otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus_server.access.auth import READ, Authenticator
from jobstatus_server.access.credentials import bearer
from jobstatus_server.contract.errors import JobStatusError, invalid, refusals
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import error_body
from jobstatus_server.http_api.sse import FRAMINGS
from jobstatus_server.state.store import Store
from jobstatus_server.usecases.history import MAX_PAGE_SIZE, history

PATH = "/api/v1/history/{kind}/{id:any}"
_DIGITS = re.compile(r"[0-9]+")  # as long as params.py lets a value be


def _rfc3339(seconds: float) -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1e6))
    return str(stamp.ToJsonString())


def _page_size(text: str | None) -> int:
    if text is None or text == "":
        return 0
    if _DIGITS.fullmatch(text) is None:
        raise invalid("page_size", "must be a whole number from 0 (a size past the most is capped)")
    return min(int(text), MAX_PAGE_SIZE)


# What the route reads of a request, parsed before it runs (params.py).
PARAMS = (
    params.Param("kind", params.PATH, params.kind),
    params.Param("page_size", params.QUERY, _page_size, default=0),
    params.Param("page_token", params.QUERY, default=""),
    params.Param("x-api-key", params.HEADER),
    params.Param("authorization", params.HEADER),
)


@dataclass
class HistoryRoute:
    """GET /api/v1/history/{kind}/{id}: the history as JSON, with the READ scope."""

    store: Store
    auth: Authenticator

    async def endpoint(self, request: Request) -> Response:
        try:
            asked = params.parse(request.scope, PARAMS, request.path_params)
            caller = await self.auth.authenticate(
                asked["x-api-key"], bearer(asked["authorization"])
            )
            self.auth.authorize(caller, READ)
            kind = asked["kind"]
            token = asked["page_token"]
            if len(token) > 512:
                raise invalid("page_token", "is not a page token of a history")
            job_id = request.path_params["id"]  # any text: an id no job has is NOT_FOUND
            page = await history(self.store, kind, caller.tenant, job_id, asked["page_size"], token)
        except JobStatusError as error:
            refusals.refused(f"GET {PATH}", error)
            return JSONResponse(error_body(error), error.http_status)
        render = FRAMINGS[kind.name, False].render
        return JSONResponse(
            {
                "kind": kind.name,
                "id": job_id,
                "oldestRevision": page.oldest_revision,
                "truncated": page.truncated,
                "changes": [
                    {"revision": c.revision, "time": _rfc3339(c.time), "job": render(c.job)}
                    for c in page.changes
                ],
                "nextPageToken": page.next_page_token,
            }
        )

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.endpoint, methods=["GET"])]
