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

The HTTP side of these limits (the outermost ASGI layer, the request head's bound)
is http_api/fast_path.py and http_api/app.py.

Open streams are also where a revoked key is caught: after every re-read of the
keys, each open stream whose key is gone, revoked or lost its scope is ended
(UNAUTHENTICATED or PERMISSION_DENIED), within --key-refresh seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from jobstatus_server.access.auth import Authenticator, Caller
from jobstatus_server.contract.errors import JobStatusError, ResourceExhausted
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
class AdmittedStream:
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
    streams: set[AdmittedStream] = field(default_factory=set)
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
    ) -> AdmittedStream:
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
        stream = AdmittedStream(caller, scope, end, owner, connection)
        self.streams.add(stream)
        self._by_owner[owner] += 1
        self._by_connection[connection] += 1
        return stream

    def close_stream(self, stream: AdmittedStream) -> None:
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
