"""A job's history: its kept changes, oldest first, over gRPC (Get*History) and HTTP.

The history is the event log (store.py), so it reaches back as far as the log is
kept: compaction (--history-count, --history-age) removes old changes. A page says
where the kept history starts (`oldest_revision`) and whether the job's earliest
changes are gone (`truncated`). A page token whose next change may have been
compacted since it was issued fails with OUT_OF_RANGE instead of skipping
changes silently.

GET /api/v1/history/{kind}/{id}?page_size=N&page_token=T answers

    {"kind": "map_import", "id": "...", "oldestRevision": 1, "truncated": false,
     "changes": [{"revision": 3, "time": "2026-...Z", "job": {...}}],
     "nextPageToken": ""}

with each job in its kind's documented JSON (as the SSE watch renders it), and
jobstatus's own error body (sse.error_body) otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Generic

from google.protobuf import timestamp_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobstatus_server import params
from jobstatus_server.auth import READ, Authenticator, bearer
from jobstatus_server.errors import (
    InvalidArgument,
    JobStatusError,
    NotFound,
    OutOfRange,
    invalid,
    refusals,
)
from jobstatus_server.kinds import Kind, M
from jobstatus_server.store import Store

PATH = "/api/v1/history/{kind}/{id:any}"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_ID_LEN = 1024  # longer than any job id the contract allows
_TOKEN_CHECK = 12
_DIGITS = re.compile(r"[0-9]+")  # as long as params.py lets a value be


@dataclass(frozen=True)
class Change(Generic[M]):
    revision: int
    time: float  # POSIX seconds
    job: M

    def timestamp(self) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromMicroseconds(round(self.time * 1e6))  # the store stamps microseconds
        return stamp


@dataclass(frozen=True)
class Page(Generic[M]):
    changes: list[Change[M]]
    next_page_token: str
    oldest_revision: int
    truncated: bool


def _check(raw: bytes) -> bytes:
    return hashlib.sha256(b"jobstatus.v1 history token\0" + raw).digest()[:_TOKEN_CHECK]


def _job_tag(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:16]


def encode_token(kind: Kind[Any], job_id: str, after: int) -> str:
    raw = json.dumps(
        {"k": kind.name, "j": _job_tag(job_id), "a": after}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(_check(raw) + raw).decode().rstrip("=")


def decode_token(token: str, kind: Kind[Any], job_id: str) -> int:
    data: object = None
    try:
        blob = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode())
        check, raw = blob[:_TOKEN_CHECK], blob[_TOKEN_CHECK:]
        if hmac.compare_digest(check, _check(raw)):
            data = json.loads(raw)
    except (ValueError, binascii.Error):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("k") != kind.name
        or not isinstance(data.get("a"), int)
        or not 0 <= data["a"] < 2**63  # a revision: an int64
    ):
        raise invalid("page_token", "is not a page token of a history", "INVALID_PAGE_TOKEN")
    if data.get("j") != _job_tag(job_id):
        raise invalid("page_token", "was issued for another job", "INVALID_PAGE_TOKEN")
    return int(data["a"])


async def history(
    store: Store, kind: Kind[M], tenant: str, job_id: str, page_size: int, page_token: str
) -> Page[M]:
    """One page of the job's kept changes, oldest first."""
    if page_size < 0:
        raise invalid("page_size", "must be 0 or more")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    not_found = NotFound(
        f"no {kind.display} with {kind.id_field} {job_id!r}",
        reason=kind.not_found_reason,
        metadata={kind.id_field: job_id},
    )
    if "\x00" in job_id or len(job_id) > MAX_ID_LEN:
        raise not_found  # no job has such an id (and no database is asked for one)
    try:
        after = decode_token(page_token, kind, job_id) if page_token else 0
    except InvalidArgument:
        # An unknown job is NOT_FOUND whatever the token: only a known job's token is wrong.
        if (await store.history(kind, tenant, job_id, 0, 1)).created is None:
            raise not_found from None
        raise
    found = await store.history(kind, tenant, job_id, after, size + 1)
    if found.created is None:
        raise not_found
    oldest = found.compacted + 1
    if after and after < found.compacted:
        raise OutOfRange(
            f"the history after revision {after} was compacted meanwhile; the kept history "
            f"starts at revision {oldest}: page again without a page token",
            reason="REVISION_COMPACTED",
            metadata={"oldest_revision": str(oldest)},
        )
    rows = found.changes
    changes = [Change(r, t, kind.message.FromString(d)) for r, t, d in rows[:size]]
    token = encode_token(kind, job_id, rows[size - 1][0]) if len(rows) > size else ""
    return Page(changes, token, oldest, found.created <= found.compacted)


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
        # sse.py renders each kind's documented JSON; it imports the servicers, which
        # import this module, so it is imported here rather than at the top.
        from jobstatus_server.sse import FEEDS, error_body

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
        render = FEEDS[kind.name].render
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
