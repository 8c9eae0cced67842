"""GET /openapi.json: the HTTP paths as they really answer.

Body schemas come from the same Shapes that render the answers (rest.py), enum
values from the descriptors; the error bodies are those each path really sends.
Security is declared only while the server requires API keys.

One concept past 400 lines: the document is one JSON value, and most of its lines
are the paths' declarations (parameters, answers, examples), each read from the
code that serves the path, so that the document cannot drift from the server.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus_server.access.auth import Authenticator
from jobstatus_server.contract.kinds import KINDS
from jobstatus_server.http_api import counts, dashboard, params, rest, sse
from jobstatus_server.http_api import history as history_route
from jobstatus_server.usecases import history, job_pages
from jobstatus_server.usecases.counts import counted_statuses

PATH = "/openapi.json"
REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _text(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"}},
        "required": [name],
        "additionalProperties": False,
    }


def _status_names() -> list[str]:
    """Every counted status of every kind, by its enum value name."""
    return [
        kind.status_enum.values_by_number[status].name
        for kind in KINDS.values()
        for status in counted_statuses(kind)
    ]


def _schemas() -> dict[str, Any]:
    return {
        "MapImportV1": rest.MAP_V1.schema(),
        "MapImportV2": rest.MAP_V2.schema(),
        "MapImportNotFound": rest.MAP_NOT_FOUND.schema(),
        "PreparedDelivery": rest.DELIVERY_BODY.schema(),
        "PreparedDeliveryNotFound": rest.DELIVERY_NOT_FOUND.schema(),
        "DatasetImportRun": rest.DATASET_RUN.schema(),
        "CatalogImport": rest.CATALOG_BODY.schema(),
        "GetAppError": {
            "type": "object",
            "properties": {"statusCode": {"type": "integer"}, "message": {"type": "string"}},
            "required": ["statusCode", "message"],
            "additionalProperties": False,
        },
        "GetAppBadRequest": {
            "type": "object",
            "properties": {
                "statusCode": {"type": "integer"},
                "message": {"type": "array", "items": {"type": "string"}},
                "error": {"type": "string"},
            },
            "required": ["statusCode", "message", "error"],
            "additionalProperties": False,
        },
        "Detail": _text("detail"),
        "Details": _text("details"),
        "ValidationError": {
            "type": "object",
            "properties": {
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                            "input": {},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                }
            },
            "required": ["detail"],
            "additionalProperties": False,
        },
        "ElevateError": _text("message"),
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    "required": ["code", "reason", "message", "metadata"],
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
        "History": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": list(KINDS)},
                "id": {"type": "string"},
                "oldestRevision": {
                    "type": "integer",
                    "description": "The oldest revision the event log still keeps.",
                },
                "truncated": {
                    "type": "boolean",
                    "description": "The job's earliest changes were compacted away.",
                },
                "changes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "revision": {"type": "integer"},
                            "time": {"type": "string", "format": "date-time"},
                            "job": {
                                "type": "object",
                                "description": "The job as of this change, in its kind's "
                                "documented JSON (as the watch's event data).",
                            },
                        },
                        "required": ["revision", "time", "job"],
                        "additionalProperties": False,
                    },
                },
                "nextPageToken": {"type": "string"},
            },
            "required": ["kind", "id", "oldestRevision", "truncated", "changes", "nextPageToken"],
            "additionalProperties": False,
        },
        "Counts": {
            "type": "object",
            "properties": {
                "revision": {
                    "type": "integer",
                    "description": "The store revision the counts are as of.",
                },
                "counts": {
                    "type": "array",
                    "description": "Every (kind, status) of the asked kinds, zeros included.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string", "enum": list(KINDS)},
                            "status": {
                                "type": "string",
                                "description": "The status's enum value name.",
                                "enum": _status_names(),
                            },
                            "label": {
                                "type": "string",
                                "description": "The status in its kind's documented spelling.",
                            },
                            "count": {"type": "integer", "minimum": 0},
                        },
                        "required": ["kind", "status", "label", "count"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["revision", "counts"],
            "additionalProperties": False,
        },
        "DashboardJobs": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": list(KINDS)},
                "revision": {
                    "type": "integer",
                    "description": "The store revision the page was read at: watch its "
                    "jobs from there.",
                },
                "jobs": {
                    "type": "array",
                    "description": "In the SSE watch's envelope (envelope=true).",
                    "items": {
                        "type": "object",
                        "properties": {
                            "revision": {"type": "integer"},
                            "updateTime": {"type": "string", "format": "date-time"},
                            "job": {
                                "type": "object",
                                "description": "The job in its kind's documented JSON "
                                "(as the watch's event data).",
                            },
                        },
                        "required": ["revision", "updateTime", "job"],
                        "additionalProperties": False,
                    },
                },
                "nextPageToken": {
                    "type": "string",
                    "description": "Empty on the last page.",
                },
            },
            "required": ["kind", "revision", "jobs", "nextPageToken"],
            "additionalProperties": False,
        },
        "DashboardKinds": {
            "type": "object",
            "properties": {
                "keys": {
                    "type": "boolean",
                    "description": "The server requires an API key.",
                },
                "kinds": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string", "enum": list(KINDS)},
                            "title": {"type": "string"},
                            "idKey": {"type": "string"},
                            "statuses": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string"},
                                        "outcome": {
                                            "type": "string",
                                            "enum": ["running", "succeeded", "failed"],
                                        },
                                    },
                                    "required": ["status", "outcome"],
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "required": ["kind", "title", "idKey", "statuses"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["keys", "kinds"],
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}},
            "required": ["status"],
            "additionalProperties": False,
        },
    }


SECURITY_SCHEMES = {
    "XApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
    "PrivateKey": {"type": "apiKey", "in": "query", "name": "private_key"},
    "ApiKey": {"type": "apiKey", "in": "header", "name": "Api-Key"},
    "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
}


def _takes_empty(param: params.Param) -> bool:
    """Whether the server takes `param` sent with an empty value."""
    if param.blank:
        return True
    try:
        param.parse("")
    except params.Invalid:
        return False
    return True


def _path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _getapp(description: str) -> dict[str, Any]:
    return _json(description, _ref("GetAppError"))


# Every documented status path takes it (view.py: the read waits for the revision). It is
# described in each path's text, not declared as a parameter or responses: the documents'
# paths keep their declared parameters and answers, and a generated request with a
# revision no write made would (rightly) wait and answer 504.
MIN_REVISION = (
    " An optional header X-Min-Revision: R answers only once this server has applied "
    "revision R (the one a write returned, on any replica): the job as of that write or "
    "later; not reached within --view-wait seconds: 504; not a non-negative integer: 400."
)


def _operations(secured: bool) -> dict[str, Any]:
    def security(*schemes: str) -> dict[str, Any]:
        return {"security": [{s: []} for s in schemes]} if secured else {}

    unavailable_getapp = {"503": _getapp("The database did not answer.")}
    paths: dict[str, Any] = {}
    for version, schema in (("v1", "MapImportV1"), ("v2", "MapImportV2")):
        reports = (
            "Draft and Discovered are reported as Start, for older clients."
            if version == "v1"
            else "Every status is reported as it is."
        )
        paths[f"/api/{version}/map/import/status/{{importRequestId}}"] = {
            "get": {
                "operationId": f"getMapImportStatus{version.upper()}",
                "summary": "Get Import Status (GetApp map import)",
                "description": reports + MIN_REVISION,
                "parameters": [_path_param("importRequestId", "The map's catalog id.")],
                **security("Bearer", "XApiKey"),
                "responses": {
                    "200": _json(
                        "The import, or for an unknown id only the error MAP.notFound.",
                        {"oneOf": [_ref(schema), _ref("MapImportNotFound")]},
                    ),
                    "401": _getapp("No API key, or one that is not valid."),
                    "403": _getapp("The API key does not have the read scope."),
                    **unavailable_getapp,
                },
            }
        }
    paths["/api/v1/delivery/preparedDelivery/{catalogId}"] = {
        "get": {
            "operationId": "getPreparedDeliveryStatus",
            "summary": "Get Prepared Delivery Status (GetApp delivery)",
            "description": MIN_REVISION.strip(),
            "parameters": [
                _path_param("catalogId", "The catalog id of the delivered item."),
                {
                    "name": "source",
                    "in": "query",
                    "required": False,
                    "description": "Delivery source: 'remote' for direct download from "
                    "artifact, 'cache' for download from delivery server cache.",
                    "schema": {"type": "string", "enum": list(rest.SOURCES)},
                },
            ],
            **security("Bearer", "XApiKey"),
            "responses": {
                "200": _json("The prepared delivery.", _ref("PreparedDelivery")),
                "400": _json("source is not remote or cache.", _ref("GetAppBadRequest")),
                "401": _getapp("No API key, or one that is not valid."),
                "403": _getapp("The API key does not have the read scope."),
                "404": _json(
                    "No delivery with this catalog id: error code DELIVERY.notFound.",
                    _ref("PreparedDeliveryNotFound"),
                ),
                **unavailable_getapp,
            },
        }
    }
    limited = {
        "Retry-After": {
            "description": "Seconds until the key may call again.",
            "schema": {"type": "integer"},
        }
    }
    paths["/datasets/{dataset_id}/status"] = {
        "get": {
            "operationId": "getDatasetStatus",
            "summary": "Get Dataset Status (Woosmap)",
            "description": "The latest import run of the dataset. Rate limit: 1/5s per key "
            "(configurable)." + MIN_REVISION,
            "parameters": [_path_param("dataset_id", "The dataset's id.", format="uuid")],
            **security("PrivateKey", "XApiKey"),
            "responses": {
                "200": _json("Successful Response", _ref("DatasetImportRun")),
                "401": _json(rest.NO_CREDENTIALS, _ref("Detail")),
                "402": _json(rest.OUT_OF_QUOTA, _ref("Detail")),
                "403": _json(rest.NOT_MATCHING, _ref("Detail")),
                "404": _json(
                    f"{rest.DATASET_NOT_FOUND}, or it has no import run yet.", _ref("Details")
                ),
                "422": _json("Validation Error", _ref("ValidationError")),
                "429": _json(rest.RATE_LIMITED, _ref("Details"), headers=limited),
                "503": _json("The database did not answer.", _ref("Detail")),
            },
        }
    }
    paths["/api/v2/import/status/{id}"] = {
        "get": {
            "operationId": "getImportStatus",
            "summary": "Import Status (Voyado Elevate)",
            "description": "The host's first label names the cluster (the tenant); an IP "
            "address or a single-label host means the API key's own cluster." + MIN_REVISION,
            "parameters": [_path_param("id", "The id of the import.")],
            **security("ApiKey"),
            "responses": {
                "200": _json(
                    "Import information; status NOT_FOUND for an unknown id.",
                    _ref("CatalogImport"),
                ),
                "403": _json(rest.KEY_NOT_VALID, _ref("ElevateError")),
                "404": _json(rest.CLUSTER_NOT_FOUND, _ref("ElevateError")),
                "503": _json("The database did not answer.", _ref("ElevateError")),
            },
        }
    }
    error = _ref("Error")
    paths[sse.PATH] = {
        "get": {
            "operationId": "watch",
            "summary": "Watch jobs of one kind as server-sent events",
            "description": (sse.__doc__ or "").split("\n\n", 1)[-1].strip()
            + "\n\nEvent data: the job's documented JSON (map imports as on the v2 path; "
            "a dataset as its latest run's body plus dataset_id).",
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(KINDS)},
                },
                {
                    "name": "ids",
                    "in": "query",
                    "required": False,
                    "description": "The jobs to watch; every job of the kind when absent.",
                    "style": "form",
                    "explode": False,
                    "schema": {"type": "array", "items": {"type": "string"}},
                },
                {"name": "until_settled", "in": "query", "schema": {"type": "boolean"}},
                {
                    "name": "envelope",
                    "in": "query",
                    "description": "State and change data as {revision, updateTime, job} "
                    "(the dashboard's).",
                    "schema": {"type": "boolean"},
                },
                {
                    "name": "start_revision",
                    "in": "query",
                    "description": "Resume after this revision (Last-Event-ID wins).",
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "heartbeat",
                    "in": "query",
                    "description": "Seconds between heartbeats on an idle stream.",
                    "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "Resume exactly after this revision.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            **security("Bearer", "XApiKey", "ApiKeyQuery"),
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "204": {"description": "Every watched job is settled: nothing more to send."},
                "400": _json("A parameter is not valid.", error),
                "401": _json("No API key, or one that is not valid.", error),
                "403": _json("The API key does not have the read scope.", error),
                "404": _json(
                    "No such kind, or until_settled names a job that does not exist.", error
                ),
                "410": _json("The resume revision is outside the kept history.", error),
                "503": _json("The server is shutting down or the database is away.", error),
            },
        }
    }
    paths["/api/v1/history/{kind}/{id}"] = {
        "get": {
            "operationId": "history",
            "summary": "One job's kept changes, oldest first",
            "description": (history.__doc__ or "").split("\n\n", 2)[1].strip(),
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(KINDS)},
                },
                _path_param("id", "The job's id."),
                {
                    "name": "page_size",
                    "in": "query",
                    "description": f"Changes per page: {history.DEFAULT_PAGE_SIZE} when 0 or "
                    f"absent, at most {history.MAX_PAGE_SIZE} (a larger size is capped).",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                },
                {
                    "name": "page_token",
                    "in": "query",
                    "description": "The nextPageToken of the previous page of the same job.",
                    "schema": {"type": "string", "maxLength": 512, "pattern": "^[A-Za-z0-9_-]*$"},
                },
            ],
            **security("Bearer", "XApiKey"),
            "responses": {
                "200": _json("A page of the job's history.", _ref("History")),
                "400": _json("A parameter is not valid.", error),
                "401": _json("No API key, or one that is not valid.", error),
                "403": _json("The API key does not have the read scope.", error),
                "404": _json("No such kind, or no such job in the caller's tenant.", error),
                "410": _json("The history behind the page token was compacted meanwhile.", error),
                "503": _json("The database did not answer.", error),
            },
        }
    }
    kinds_param = {
        "name": "kind",
        "in": "query",
        "required": False,
        "description": "The kinds to count, comma-separated or repeated (empty parts are "
        "ignored); every kind when absent.",
        "style": "form",
        "explode": False,
        "schema": {"type": "array", "items": {"type": "string", "enum": [*KINDS, ""]}},
    }
    paths[counts.PATH] = {
        "get": {
            "operationId": "counts",
            "summary": "The caller's jobs per kind and status",
            "description": "Every (kind, status) of the asked kinds (all when none), zeros "
            "included, as of one store revision." + MIN_REVISION,
            "parameters": [kinds_param],
            **security("Bearer", "XApiKey"),
            "responses": {
                "200": _json("Every (kind, status) of the asked kinds.", _ref("Counts")),
                "400": _json("A parameter (or X-Min-Revision) is not valid.", error),
                "401": _json("No API key, or one that is not valid.", error),
                "403": _json("The API key does not have the read scope.", error),
                "503": _json("The database did not answer.", error),
                "504": _json("X-Min-Revision was not reached within --view-wait.", error),
            },
        }
    }
    paths[counts.WATCH_PATH] = {
        "get": {
            "operationId": "watchCounts",
            "summary": "The caller's counts pushed as server-sent events",
            "description": "The counts as server-sent events (`event: counts`, id = its "
            "revision): at once, then whenever the store has moved on (at most every "
            f"{counts.PUSH_INTERVAL:g} s), and `event: heartbeat` when nothing changed for "
            "`heartbeat` seconds. It counts as one of the caller's watch streams. Event "
            "data: `counts` the Counts schema; `heartbeat` {revision}; `error` (the "
            "stream ends) the `error` object of the Error schema.",
            "parameters": [
                kinds_param,
                {
                    "name": "heartbeat",
                    "in": "query",
                    "description": "Seconds between heartbeats while nothing changes "
                    f"({counts.DEFAULT_HEARTBEAT:g} when absent).",
                    "schema": {
                        "type": "number",
                        "exclusiveMinimum": True,
                        "minimum": 0,
                        "maximum": 3600,
                    },
                },
            ],
            **security("Bearer", "XApiKey"),
            "responses": {
                "200": {
                    "description": "The event stream; each `counts` event's data is a Counts.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _json("A parameter is not valid.", error),
                "401": _json("No API key, or one that is not valid.", error),
                "403": _json("The API key does not have the read scope.", error),
                "429": _json("The caller's key or connection has its most watch streams.", error),
            },
        }
    }
    paths[dashboard.JOBS_PATH] = {
        "get": {
            "operationId": "dashboardJobs",
            "summary": "One page of one kind's jobs, filtered on the server (the dashboard's)",
            "description": "Newest first (by id when a prefix is given), each job in the SSE "
            "watch's envelope, so that a listed row and a watched change read alike. A page "
            "token is bound to its kind and filter.",
            "parameters": [
                {
                    "name": "kind",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": list(KINDS)},
                },
                {
                    "name": "status",
                    "in": "query",
                    "description": "Only these statuses of the kind, in documented spelling "
                    "or as enum value names (comma-separated or repeated); any when absent.",
                    "style": "form",
                    "explode": False,
                    "schema": {"type": "array", "items": {"type": "string"}},
                },
                {
                    "name": "active",
                    "in": "query",
                    "description": "Only jobs not settled (the default: true).",
                    "schema": {"type": "boolean", "default": True},
                },
                {
                    "name": "prefix",
                    "in": "query",
                    "description": "Only ids that start with it, listed by id.",
                    "schema": {"type": "string", "maxLength": dashboard.MAX_PREFIX},
                },
                *(
                    {
                        "name": name,
                        "in": "query",
                        "description": f"Only jobs created {when} this time (RFC 3339).",
                        "schema": {"type": "string", "format": "date-time"},
                    }
                    for name, when in (("since", "at or after"), ("until", "before"))
                ),
                {
                    "name": "page_size",
                    "in": "query",
                    "description": f"Jobs per page: {job_pages.DEFAULT_PAGE_SIZE} when 0 or "
                    f"absent, at most {job_pages.MAX_PAGE_SIZE} (a larger size is capped).",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                },
                {
                    "name": "page_token",
                    "in": "query",
                    "description": "The nextPageToken of the previous page, with the same "
                    "kind and filter.",
                    "schema": {"type": "string", "maxLength": 1024},
                },
            ],
            **security("Bearer", "XApiKey"),
            "responses": {
                "200": _json("A page of jobs.", _ref("DashboardJobs")),
                "400": _json(
                    "A parameter is not valid: no or no such kind, an unknown status, a "
                    "page token of another list or filter.",
                    error,
                ),
                "401": _json("No API key, or one that is not valid.", error),
                "403": _json("The API key does not have the read scope.", error),
                "503": _json("The database did not answer.", error),
            },
        }
    }
    paths["/dashboard/kinds.json"] = {
        "get": {
            "operationId": "dashboardKinds",
            "summary": "How each kind's statuses are spelled and what they mean (the dashboard's)",
            "responses": {"200": _json("The kinds.", _ref("DashboardKinds"))},
        }
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "responses": {
                "200": _json("Serving.", _ref("Health")),
                "503": _json("Not serving: storage away, or shutting down.", _ref("Health")),
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Prometheus metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    paths[PATH] = {
        "get": {
            "operationId": "openapi",
            "responses": {"200": _json("This document.", {"type": "object"})},
        }
    }
    # Where a route takes an empty query value (`since=`, `active=`: a form's empty
    # field), as absent (`Param.blank`) or as a value (`active=` is false), the document
    # admits it too.
    for path, read in (
        (sse.PATH, sse.PARAMS),
        (counts.PATH, counts.PARAMS),
        (counts.WATCH_PATH, counts.WATCH_PARAMS),
        (history_route.PATH, history_route.PARAMS),
        (dashboard.JOBS_PATH, dashboard.JOBS_PARAMS),
    ):
        empty = {
            param.name for param in read if param.where == params.QUERY and _takes_empty(param)
        }
        for each in paths[re.sub(r":\w+}", "}", path)]["get"]["parameters"]:  # {id:any}
            if each["in"] == "query" and each["name"] in empty:
                each["allowEmptyValue"] = True
    return paths


def document(secured: bool) -> dict[str, Any]:
    components: dict[str, Any] = {"schemas": _schemas()}
    if secured:
        components["securitySchemes"] = SECURITY_SCHEMES
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jobstatus",
            "version": "1",
            "description": "The documented status paths of four job kinds, and a watch.",
        },
        "paths": _operations(secured),
        "components": components,
    }


def routes(auth: Authenticator) -> list[BaseRoute]:
    cache: dict[bool, dict[str, Any]] = {}

    async def openapi(request: Request) -> Response:
        secured = not auth.open
        if secured not in cache:
            cache[secured] = document(secured)
        return JSONResponse(cache[secured])

    return [Route(PATH, openapi, methods=["GET"])]
