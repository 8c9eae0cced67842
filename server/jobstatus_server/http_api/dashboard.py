"""The dashboard: a live page of every job, served at / on the HTTP listener.

Static files shipped in the package (dashboard/), no build step and nothing from
another host. The page reads what any client reads: the SSE watch of each kind
(sse.py, with `envelope=true`) and a job's history (history.py), sending the API
key the user typed (kept in the tab's sessionStorage) as X-Api-Key. The server
adds no data path of its own beyond /dashboard/kinds.json: how each kind's
statuses are spelled and which outcome each one means.

Every answer carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only and no inline script, so a job field that holds
markup can never run (the page renders every field with textContent anyway).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus.live import SUCCEEDED
from jobstatus.spelling import spelling
from jobstatus_server.access.auth import Authenticator
from jobstatus_server.contract.kinds import KINDS

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


def _read(name: str) -> bytes:
    return resources.files("jobstatus_server.http_api").joinpath("dashboard", name).read_bytes()


def routes(auth: Authenticator) -> list[BaseRoute]:
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
    ]
