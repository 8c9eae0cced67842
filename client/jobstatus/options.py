"""What every call of Client and AsyncClient shares: its options, its deadline, the key.

Every method takes the options of a gRPC call as keyword arguments (CallOptions):
`timeout`, the call's deadline in seconds, and `metadata`, extra (key, value)
pairs sent with it. The client's API key travels in `x-api-key` on every call.
A client without a target or a key takes them from JOBSTATUS_GRPC_ADDR and
JOBSTATUS_API_KEY, as the jobstatus command does.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias, TypedDict

import grpc

from jobstatus.errors import DeadlineExceeded

Metadata: TypeAlias = Sequence[tuple[str, str]]

DEFAULT_TARGET = "127.0.0.1:50051"
# Keepalive pings find a dead connection under a quiet watch stream; a reconnect
# backoff capped at 5 s (gRPC's default cap is 120 s) finds a restarted server soon.
CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.max_reconnect_backoff_ms": 5_000,
}


class CallOptions(TypedDict, total=False):
    """The options of one call, taken by every method as keyword arguments.

    timeout: the call's deadline, in seconds (None: no deadline). A method that makes
        several calls (list, history) applies it to each; watch and wait apply it to
        the whole, reconnects included. DEADLINE_EXCEEDED raises DeadlineExceeded.
    metadata: (key, value) pairs sent with the call, besides the client's x-api-key.
    """

    timeout: float | None
    metadata: Metadata


ADDR_VARIABLE = "JOBSTATUS_GRPC_ADDR"
KEY_VARIABLE = "JOBSTATUS_API_KEY"


def target_or_default(target: str | None) -> str:
    """`target`, else JOBSTATUS_GRPC_ADDR, else DEFAULT_TARGET (as the jobstatus command)."""
    return target or os.environ.get(ADDR_VARIABLE) or DEFAULT_TARGET


def key_or_default(api_key: str | None) -> str | None:
    """`api_key`, else JOBSTATUS_API_KEY (as the jobstatus command); None: no key."""
    return api_key or os.environ.get(KEY_VARIABLE) or None


def new_request_id() -> str:
    """A fresh request id: a create sent again with it is answered with the same job."""
    return str(uuid.uuid4())


def channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The client's channel options, CHANNEL_OPTIONS overridden by the caller's."""
    return list({**CHANNEL_OPTIONS, **dict(options)}.items())


class Session:
    """What every call of one client shares: the API key, and whether the client is closed."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.closed = False

    def call_kwargs(self, options: CallOptions) -> dict[str, Any]:
        """The keyword arguments of a stub call: its timeout and metadata, key included."""
        key = (("x-api-key", self.api_key),) if self.api_key else ()
        return {
            "timeout": options.get("timeout"),
            "metadata": (*key, *options.get("metadata", ())),
        }


class Deadline:
    """The end of a timeout that spans several calls (a watch's reconnects, a wait)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        # Never 0: gRPC takes a timeout of 0 as no deadline at all.
        return None if self.at is None else max(0.001, self.at - time.monotonic())

    def options(self, options: CallOptions) -> CallOptions:
        """`options` with the time left as the next call's timeout."""
        return {**options, "timeout": self.remaining()}

    def sleep_time(self, delay: float) -> float:
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)

    def check(self) -> None:
        if self.at is not None and time.monotonic() >= self.at:
            raise DeadlineExceeded(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no result within {self.timeout} s"
            )
