"""The HTTP fast path: every request's first stop, and the documented REST paths' GETs
without Starlette's middleware and router.

A request arrives at `CallerGuard`, the outermost ASGI layer (straight from
uvicorn):

1. a GET of a documented path that the view answers at once, with nothing to wait
   for, gets its ready answer (`ReadyAnswers`: two ASGI messages made once per change
   of the job), after the same checks its handler makes: the key, by the rules of
   credentials.py and the Authenticator; the read scope; the caller's concurrent
   calls; `X-Min-Revision`;
2. a body declared too large, or one call too many of its caller, answers 429
   (limits.py);
3. any other GET of a documented path goes straight to its handler (rest.py) through
   `DocumentedGets`, its metrics recorded there;
4. everything else goes to the Starlette app (app.py).

Anything the fast path cannot decide at once (a key it has not seen, a refusal, a
revision to wait for, a miss of the view) takes the handler's way, which answers it.

One concept past 400 lines: the path of a request from uvicorn to its answer, kept
together so that its cost per request can be read (and benchmarked) in one place.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobstatus_server.access.auth import OPEN, READ, cluster_of
from jobstatus_server.access.credentials import KEY_HEADERS, header_key, presented_key_id
from jobstatus_server.access.limits import HTTP, CallerLimits, caller_id, refuse
from jobstatus_server.contract.errors import ResourceExhausted, refusals
from jobstatus_server.http_api import params
from jobstatus_server.http_api.error_body import limit_refusal
from jobstatus_server.http_api.rest import Json, Path, ReadyRead
from jobstatus_server.observability.metrics import HTTP_REQUESTS, HTTP_SECONDS, VIEW_HITS, Tally

# What a ready answer is: the start and body messages, made once per change of the job.
Ready = tuple[Message, Message]
# What a ready answer takes of its own: the tuple and the body message (the start
# message is shared by every answer of its length, the body is the documented body).
READY_SIZE = sys.getsizeof((None, None)) + sys.getsizeof({"type": "", "body": b""})

_RAW_MIN_REVISION = params.MIN_REVISION_HEADER.encode("latin-1")
_RAW_HOST = b"host"
_RAW_CONTENT_LENGTH = b"content-length"
_STARTS: dict[tuple[int, int], Message] = {}


def start_message(status: int, length: int) -> Message:
    """The start message of a ready JSON body (as rest.Json sends it), made once per
    status and length (uvicorn reads it, it does not change it)."""
    start = _STARTS.get((status, length))
    if start is None:
        if len(_STARTS) >= 4096:
            _STARTS.clear()
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (_RAW_CONTENT_LENGTH, str(length).encode()),
                (b"content-type", b"application/json"),
            ],
        }
        _STARTS[(status, length)] = start
    return start


class ReadyAnswers:
    """The ready answers of one documented path: the answer its handler would give, 200
    with the view's JSON body, to a GET with nothing to wait for and nothing to count
    but the request."""

    __slots__ = (
        "auth",
        "form",
        "key_headers",
        "kind_name",
        "notable",
        "reads_host",
        "render",
        "view",
    )

    def __init__(self, read: ReadyRead) -> None:
        self.auth = read.auth
        self.view = read.view
        self.kind_name = read.kind.name
        self.form = read.form
        self.render = read.render
        self.key_headers = read.key_headers
        self.reads_host = read.reads_host
        # The request headers the path (or the CallerGuard) reads: a request carrying
        # another key header, or one of them twice, takes the handler's way.
        self.notable = KEY_HEADERS | {_RAW_MIN_REVISION, _RAW_CONTENT_LENGTH}
        if read.reads_host:
            self.notable |= {_RAW_HOST}

    def answer(self, scope: Scope, job_id: str, limits: CallerLimits) -> Ready | None:
        """The ready answer of this GET; None for any other (the handler answers it). Run
        by the CallerGuard as the request arrives; the concurrent-calls check is
        `limits.admits` (the call ends before anything else runs, so it would be counted
        and uncounted at once)."""
        key_name = key_value = revision = host = None
        notable, key_headers = self.notable, self.key_headers
        for name, value in scope["headers"]:
            if name in notable:
                if name in key_headers and key_name is None:
                    key_name, key_value = name, value
                elif name == _RAW_MIN_REVISION and revision is None:
                    revision = value
                elif name == _RAW_HOST and host is None:
                    host = value
                else:
                    return None
        if scope["query_string"]:
            # It may carry a key the CallerGuard counts the call by, or a delivery's `source`.
            return None
        auth = self.auth
        if auth.open:
            if key_name is not None:
                return None  # counted by the CallerGuard under its key id, not the caller's
            caller = OPEN
        else:
            if key_name is None or key_value is None:
                return None
            presented = header_key(key_name, key_value)
            known = auth.known(presented)
            if known is None or READ not in known.scopes:
                return None
            caller = known
        if self.reads_host:
            cluster = cluster_of("" if host is None else host.decode("latin-1"))
            if cluster is not None and (cluster != caller.tenant or not auth.knows_tenant(cluster)):
                return None
        client = scope.get("client")
        if client is None or not limits.admits(caller.key_id, client[0]):
            return None
        view = self.view
        need = view.store.revision
        if revision is not None:
            min_revision = params.min_revision(revision.decode("latin-1"))
            if min_revision is None:
                return None
            if min_revision > need:
                need = min_revision
        if view.revision < need:
            return None
        entry = view.lookup((self.kind_name, caller.tenant, job_id))
        if entry is None:
            return None
        renderings = entry.renderings
        ready_answers = renderings.ready_answers
        ready: Ready | None = None if ready_answers is None else ready_answers[self.form]
        if ready is None:
            try:
                body = renderings.documented_json(self.form, self.render)
            except Exception:  # the handler answers it (and logs it)
                return None
            ready = (start_message(200, len(body)), {"type": "http.response.body", "body": body})
            renderings.keep_ready_answer(self.form, ready, READY_SIZE)
        return ready


class GetRequest:
    """What a documented path's handler reads of a GET request, straight from the scope
    (in place of Starlette's Request; rest.IncomingRequest)."""

    __slots__ = ("client", "headers", "path_params", "scope")

    def __init__(self, scope: Scope, param: str, value: str) -> None:
        self.scope = scope
        self.path_params = {param: value}
        self.headers = _RawHeaders(scope["headers"])
        self.client = _Client(scope["client"][0]) if scope.get("client") else None

    @property
    def query_params(self) -> dict[str, str]:
        # As Starlette's QueryParams: latin-1 query string, blanks kept, the last value wins.
        query: bytes = self.scope["query_string"]
        return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}


class _RawHeaders:
    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (lower case), as Starlette's Headers.get."""
        wanted = name.encode("latin-1")
        for key, value in self.raw:
            if key == wanted:
                return value.decode("latin-1")
        return default


class _Client:
    __slots__ = ("host",)

    def __init__(self, host: str) -> None:
        self.host = host


class DocumentedGets:
    """The documented REST paths without Starlette's middleware and router per request:
    a GET whose path is one of them goes straight to its handler, its metrics recorded
    once here; every other request goes to the Starlette app."""

    def __init__(self, paths: Sequence[Path], app: ASGIApp) -> None:
        self.paths = tuple(paths)
        self.app = app
        self._seconds = {p.template: HTTP_SECONDS.labels("GET", p.template) for p in paths}
        self._counts: dict[tuple[str, int], Any] = {}
        # Requests answered since the last scrape, by route and status: added to
        # HTTP_REQUESTS by `flush` (/metrics), not one Counter.inc per request.
        self._pending: dict[tuple[str, int], int] = {}
        # The ready answers (`ready`), per path: observed in HTTP_SECONDS and counted in
        # HTTP_REQUESTS (200) and VIEW_HITS at each scrape.
        self._tallies = {
            p.template: Tally(
                self._seconds[p.template],
                HTTP_REQUESTS.labels("GET", p.template, "200"),
                VIEW_HITS,
            )
            for p in paths
            if p.ready is not None and not p.suffix
        }
        # Per path in order: its prefix, and its ready answers and tally (None: the
        # handler answers every GET of it).
        self._ready = tuple(
            (
                p.prefix,
                ReadyAnswers(p.ready).answer if p.ready is not None and not p.suffix else None,
                self._tallies.get(p.template),
            )
            for p in paths
        )
        _DOCUMENTED_GETS.add(self)

    def ready(self, scope: Scope, limits: CallerLimits) -> Ready | None:
        """The ready answer of a GET of a documented path (`ReadyAnswers`), recorded
        here; None: no such GET, the handler answers it."""
        path: str = scope["path"]
        for prefix, ready, tally in self._ready:
            if not path.startswith(prefix):
                continue
            if ready is None or tally is None:
                return None
            started = perf_counter()
            answer = ready(scope, path[len(prefix) :], limits)
            if answer is not None:
                tally.observe(perf_counter() - started)
            return answer
        return None

    def find(self, path: str) -> tuple[Path, str] | None:
        """The documented path `path` is, and its id; None when it is none of them."""
        for candidate in self.paths:
            value = candidate.match(path)
            if value is not None:
                return candidate, value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            found = self.find(scope["path"])
            if found is not None:
                await self._answer(found[0], found[1], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self, path: Path, value: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        status = 500
        try:
            response = await path.handler(GetRequest(scope, path.param, value))
            status = response.status_code
            self._seconds[path.template].observe(time.perf_counter() - started)
            await response(scope, receive, send)
        finally:
            self._count(path.template, status)

    async def answer_counted(
        self,
        path: Path,
        value: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        end_call: Callable[[str], None],
        owner: str,
    ) -> None:
        """As `_answer`, called by the CallerGuard straight from uvicorn (no other ASGI
        layer between them): `end_call(owner)` when the response starts, and a ready
        body sent with a shared start message (uvicorn does not change it)."""
        started = time.perf_counter()
        status = 500
        counted = True
        try:
            response = await path.handler(GetRequest(scope, path.param, value))
            status = response.status_code
            self._seconds[path.template].observe(time.perf_counter() - started)
            counted = False
            end_call(owner)
            if type(response) is Json:
                body = response.body
                await send(start_message(status, len(body)))
                await send({"type": "http.response.body", "body": body})
            else:
                await response(scope, receive, send)
        finally:
            if counted:
                end_call(owner)
            self._count(path.template, status)

    def _count(self, template: str, status: int) -> None:
        key = (template, status)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        """Add the requests counted since the last flush to HTTP_REQUESTS (the ready
        answers' are Tallies: `flush_tallies`)."""
        pending, self._pending = self._pending, {}
        for (template, status), count in pending.items():
            counter = self._counts.get((template, status))
            if counter is None:
                counter = HTTP_REQUESTS.labels("GET", template, str(status))
                self._counts[(template, status)] = counter
            counter.inc(count)


_DOCUMENTED_GETS: weakref.WeakSet[DocumentedGets] = weakref.WeakSet()


def flush_request_counts() -> None:
    """Add every DocumentedGets' requests counted since the last scrape to HTTP_REQUESTS."""
    for documented in list(_DOCUMENTED_GETS):
        documented.flush()


class CallerGuard:
    """The outermost ASGI layer: the ready answers first; then a body declared too large
    and too many concurrent requests of one caller answer 429 before any route runs. A
    request counts until its response starts, so an open SSE stream does not hold a
    slot (streams have their own limits)."""

    def __init__(
        self, app: ASGIApp, limits: CallerLimits, documented: DocumentedGets | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        # The documented REST paths, answered here when no layer (tracing) sits between
        # this CallerGuard and them.
        self.documented = documented

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        documented = self.documented
        if documented is not None and scope["type"] == "http" and scope["method"] == "GET":
            # A documented path the view answers at once: its ready messages.
            ready = documented.ready(scope, self.limits)
            if ready is not None:
                await send(ready[0])
                await send(ready[1])
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in headers:
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.limits.max_request_bytes
            ):
                await _refuse(
                    send,
                    refuse(
                        HTTP,
                        "request_bytes",
                        f"a request body is at most {self.limits.max_request_bytes} bytes",
                    ),
                )
                return
        client = scope.get("client") or ("", 0)
        owner = caller_id(presented_key_id(headers, scope.get("query_string", b"")), client[0])
        try:
            self.limits.begin_call(HTTP, owner)
        except ResourceExhausted as error:
            refusals.refused(f"{scope['method']} {scope['path'][:100]!r}", error)
            await _refuse(send, error)
            return
        if documented is not None and scope["method"] == "GET":
            found = documented.find(scope["path"])
            if found is not None:
                await documented.answer_counted(
                    found[0], found[1], scope, receive, send, self.limits.end_call, owner
                )
                return
        counted = [True]

        async def started(message: Message) -> None:
            if counted[0] and message["type"] == "http.response.start":
                counted[0] = False
                self.limits.end_call(owner)
            await send(message)

        try:
            await self.app(scope, receive, started)
        finally:
            if counted[0]:
                self.limits.end_call(owner)


async def _refuse(send: Send, error: ResourceExhausted) -> None:
    status, headers, body = limit_refusal(error)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
