"""Bounded cost per caller, on both transports.

- request size: a gRPC message beyond --max-request-bytes, an HTTP request line
  and headers beyond --max-header-bytes, an HTTP body declared beyond
  --max-request-bytes;
- open watch streams (gRPC and SSE) per API key and per connection;
- concurrent calls (gRPC unary calls, HTTP requests until their response starts)
  per caller.

Each refusal is RESOURCE_EXHAUSTED on gRPC and 429 on HTTP, counted in
`jobstatus_limit_refusals{transport,limit}`. A caller is its API key; on the
open server (no keys), its IP address.

Open streams are also where a revoked key is caught: after every re-read of the
keys, each open stream whose key is gone, revoked or lost its scope is ended
(UNAUTHENTICATED or PERMISSION_DENIED), within --key-refresh seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobstatus_server.access.auth import Authenticator, Caller, parse_key
from jobstatus_server.contract.errors import JobStatusError, ResourceExhausted, refusals
from jobstatus_server.observability.metrics import LIMIT_REFUSALS

GRPC, HTTP = "grpc", "http"


def caller_id(key_id: str, address: str) -> str:
    """Who a caller is for its limits: its API key, else (open server) its IP address."""
    return f"key:{key_id}" if key_id else f"ip:{address}"


def grpc_address(peer: str) -> str:
    """The IP address of a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`)."""
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0].strip("[]")


def refuse(transport: str, limit: str, message: str, **metadata: str) -> ResourceExhausted:
    LIMIT_REFUSALS.labels(transport, limit).inc()
    return ResourceExhausted(
        message, reason="LIMIT_EXCEEDED", metadata={"limit": limit, **metadata}, retry_after=1.0
    )


@dataclass(eq=False)
class Stream:
    """One open watch stream: who opened it, and how to end it from outside."""

    caller: Caller
    scope: str
    end: Callable[[JobStatusError], None]
    owner: str
    connection: str
    ended: JobStatusError | None = None

    def stop(self, error: JobStatusError) -> None:
        if self.ended is None:
            self.ended = error
            self.end(error)


@dataclass
class CallerLimits:
    max_request_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_streams_per_key: int = 20_000
    max_streams_per_connection: int = 1_000
    max_concurrent_calls: int = 1_000
    streams: set[Stream] = field(default_factory=set)
    _by_owner: Counter[str] = field(default_factory=Counter)
    _by_connection: Counter[str] = field(default_factory=Counter)
    _calls: dict[str, int] = field(default_factory=dict)

    # --- streams ------------------------------------------------------------------

    def open_stream(
        self,
        transport: str,
        caller: Caller,
        scope: str,
        address: str,
        connection: str,
        end: Callable[[JobStatusError], None],
    ) -> Stream:
        """Count a new watch stream, or refuse it; `close_stream` when it ends."""
        owner = caller_id(caller.key_id, address)
        if self._by_owner[owner] >= self.max_streams_per_key:
            raise refuse(
                transport,
                "streams_per_key",
                f"{caller.name} has {self.max_streams_per_key} watch streams open, the most "
                "it may: close one first",
                max_streams=str(self.max_streams_per_key),
            )
        if self._by_connection[connection] >= self.max_streams_per_connection:
            raise refuse(
                transport,
                "streams_per_connection",
                f"this connection has {self.max_streams_per_connection} watch streams open, "
                "the most it may: close one first, or open another connection",
                max_streams=str(self.max_streams_per_connection),
            )
        stream = Stream(caller, scope, end, owner, connection)
        self.streams.add(stream)
        self._by_owner[owner] += 1
        self._by_connection[connection] += 1
        return stream

    def close_stream(self, stream: Stream) -> None:
        if stream in self.streams:
            self.streams.discard(stream)
            for counts, key in (
                (self._by_owner, stream.owner),
                (self._by_connection, stream.connection),
            ):
                counts[key] -= 1
                if counts[key] <= 0:
                    del counts[key]

    def recheck(self, auth: Authenticator) -> None:
        """End every open stream whose key no longer allows it (after a re-read of the keys)."""
        for stream in list(self.streams):
            error = auth.still_allowed(stream.caller, stream.scope)
            if error is not None:
                stream.stop(error)

    # --- concurrent calls -----------------------------------------------------------

    def begin_call(self, transport: str, owner: str) -> None:
        calls = self._calls
        count = calls.get(owner, 0)
        if count >= self.max_concurrent_calls:
            raise refuse(
                transport,
                "concurrent_calls",
                f"more than {self.max_concurrent_calls} calls of this caller at once: "
                "wait for some to finish",
                max_calls=str(self.max_concurrent_calls),
            )
        calls[owner] = count + 1

    def admits(self, key_id: str, address: str) -> bool:
        """Whether `begin_call` would take one more call of this caller now, without
        counting it (for a call that ends before anything else runs)."""
        calls = self._calls
        if not calls:
            return self.max_concurrent_calls > 0
        return calls.get(caller_id(key_id, address), 0) < self.max_concurrent_calls

    def end_call(self, owner: str) -> None:
        calls = self._calls
        count = calls[owner] - 1
        if count > 0:
            calls[owner] = count
        else:
            del calls[owner]


# --- HTTP -------------------------------------------------------------------------------


def _presented_key_id(headers: list[tuple[bytes, bytes]], query: bytes) -> str:
    """The key id of the first well-formed key the request carries, unverified: enough to
    count its calls (a forged id is refused at once by the route's authentication)."""
    for name, value in headers:
        if name in (b"x-api-key", b"api-key", b"authorization"):
            text = value.decode("latin-1")
            parsed = parse_key(text.split(" ", 1)[-1])
            if parsed is not None:
                return parsed[0]
    if b"jsk_" in query:
        start = query.index(b"jsk_")
        parsed = parse_key(query[start : start + 100].split(b"&", 1)[0].decode("latin-1"))
        if parsed is not None:
            return parsed[0]
    return ""


def http_refusal(error: ResourceExhausted) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(
        {
            "error": {
                "code": error.code.name,
                "reason": error.reason,
                "message": error.message,
                "metadata": dict(error.metadata),
            }
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    return 429, headers, body


class Guard:
    """The outermost ASGI layer: a body declared too large and too many concurrent
    requests of one caller answer 429 before any route runs. A request counts until
    its response starts, so an open SSE stream does not hold a slot (streams have
    their own limits)."""

    def __init__(self, app: Any, limits: CallerLimits, lean: Any = None) -> None:
        self.app = app
        self.limits = limits
        # The documented REST paths (http.Lean), answered here when no layer (tracing)
        # sits between this Guard and them.
        self.lean = lean

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        lean = self.lean
        if lean is not None and scope["type"] == "http" and scope["method"] == "GET":
            # A documented path the view answers at once: its ready messages.
            ready = lean.ready(scope, self.limits)
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
                await self._refuse(
                    send,
                    refuse(
                        HTTP,
                        "request_bytes",
                        f"a request body is at most {self.limits.max_request_bytes} bytes",
                    ),
                )
                return
        client = scope.get("client") or ("", 0)
        owner = caller_id(_presented_key_id(headers, scope.get("query_string", b"")), client[0])
        try:
            self.limits.begin_call(HTTP, owner)
        except ResourceExhausted as error:
            refusals.refused(f"{scope['method']} {scope['path'][:100]!r}", error)
            await self._refuse(send, error)
            return
        if lean is not None and scope["method"] == "GET":
            found = lean.find(scope["path"])
            if found is not None:
                await lean.answer_counted(
                    found[0], found[1], scope, receive, send, self.limits.end_call, owner
                )
                return
        counted = [True]

        async def started(message: Any) -> None:
            if counted[0] and message["type"] == "http.response.start":
                counted[0] = False
                self.limits.end_call(owner)
            await send(message)

        try:
            await self.app(scope, receive, started)
        finally:
            if counted[0]:
                self.limits.end_call(owner)

    @staticmethod
    async def _refuse(send: Any, error: ResourceExhausted) -> None:
        status, headers, body = http_refusal(error)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request line and headers: beyond
    `max_header_bytes` the request is answered 429 and the connection closed, before
    more of it is kept in memory."""

    max_header_bytes = 64 * 1024

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_too_large = False

    def _too_large(self) -> None:
        self._head_too_large = True
        raise httptools.HttpParserError("request head too large")

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._too_large()
        self.url += url  # as HttpToolsProtocol.on_url, without one more call per request

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_header_bytes:
            self._too_large()
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if not getattr(self, "_head_too_large", False):
            super().send_400_response(msg)
            return
        error = refuse(
            HTTP,
            "header_bytes",
            f"a request line and headers are at most {self.max_header_bytes} bytes",
        )
        _, headers, body = http_refusal(error)
        head = [b"HTTP/1.1 429 Too Many Requests\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int) -> type[LimitedHttpTools]:
    return type("LimitedHttpTools", (LimitedHttpTools,), {"max_header_bytes": max_header_bytes})
