"""GET /api/v1/counts: the caller's jobs per kind and status (usecases/counts.py).

GET /api/v1/counts[?kind=map_import[,dataset...]] answers

    {"revision": R, "counts": [{"kind": "map_import", "status": "MAP_IMPORT_STATUS_DONE",
      "label": "Done", "count": 12}, ...]}

every (kind, status) of the asked kinds (all when none), zeros included, as of
revision R; the `X-Min-Revision` header waits for a revision as on the documented
GET paths. The READ scope, and jobstatus's own error body (error_body.py) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus_server.access.auth import READ, Authenticator
from jobstatus_server.access.credentials import bearer
from jobstatus_server.contract.errors import InvalidArgument, JobStatusError, refusals
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import error_body
from jobstatus_server.state.store import Store
from jobstatus_server.state.view import View
from jobstatus_server.usecases.counts import Counts, count_jobs, kinds_named

PATH = "/api/v1/counts"

PARAMS = (
    params.Param("kind", params.QUERY, params.comma_list, many=True),
    params.Param(params.MIN_REVISION_HEADER, params.HEADER),
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


@dataclass
class CountsRoute:
    """GET /api/v1/counts, with the READ scope."""

    store: Store
    view: View
    auth: Authenticator

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
        return [Route(PATH, self.endpoint, methods=["GET"])]
