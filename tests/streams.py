"""Bounded stream reading for tests: take what you wait for, by a deadline, or fail
with the guarantee that broke and what the stream did send.

A reader keeps everything it took, so a failure can say "expected 3 changes within
10 s, saw: [...]" instead of hanging until pytest's timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

from jobstatus.v1 import watch_pb2

T = TypeVar("T")

SHOWN = 12  # items quoted in a failure message (the last ones)


def shown(items: list[str]) -> str:
    if len(items) <= SHOWN:
        return "[" + ", ".join(items) + "]"
    return f"[... {len(items) - SHOWN} more, " + ", ".join(items[-SHOWN:]) + "]"


class Reader(Generic[T]):
    """The items of an asyncio.Queue (a stream pumped by a task), read with deadlines."""

    def __init__(self, queue: asyncio.Queue[T], show: Callable[[T], str] = repr) -> None:
        self.queue = queue
        self.show = show
        self.seen: list[T] = []  # every item taken, in order

    def saw(self) -> str:
        return shown([self.show(item) for item in self.seen])

    async def take(self, within: float, expect: str, why: str) -> T:
        """The next item within `within` seconds, else an AssertionError naming `why`
        (the guarantee), `expect` (what was awaited) and what was seen."""
        try:
            item = await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            raise AssertionError(
                f"{why}: expected {expect} within {within:g} s, saw: {self.saw()}"
            ) from None
        self.seen.append(item)
        return item

    async def take_until(
        self, done: Callable[[T], bool], within: float, expect: str, why: str
    ) -> list[T]:
        """Items up to the first for which `done(item)` holds (it is called once per item,
        so it may count); one deadline for all of them."""
        deadline = time.monotonic() + within
        taken: list[T] = []
        while not taken or not done(taken[-1]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{why}: expected {expect} within {within:g} s, saw: {self.saw()}"
                )
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                left = 0
                continue
            self.seen.append(item)
            taken.append(item)
        return taken


CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
M = TypeVar("M", bound=Message)


def take_changes(stream: grpc.CallIterator[M], count: int, what: str) -> list[M]:
    """The next `count` CHANGE events of a gRPC watch (heartbeats skipped); the call's
    deadline bounds the wait, and running out of it fails naming `what`."""
    seen: list[M] = []
    found: list[M] = []
    try:
        for event in stream:
            seen.append(event)
            if getattr(event, "type") == CHANGE:  # noqa: B009
                found.append(event)
                if len(found) == count:
                    return found
    except grpc.RpcError as error:
        raise AssertionError(
            f"{what}: the watch ended with {error.code()} first; saw {len(seen)} events: "
            + ", ".join(watch_pb2.WatchEventType.Name(getattr(e, "type")) for e in seen)  # noqa: B009
        ) from error
    raise AssertionError(f"{what}: the watch ended with OK first; saw {seen}")


def take_heartbeats(stream: grpc.CallIterator[M], count: int, what: str) -> None:
    """Read `count` heartbeats of a gRPC watch; any change in between fails naming `what`."""
    for beats, event in enumerate(stream, 1):
        assert getattr(event, "type") == HEARTBEAT, f"{what}: {event}"  # noqa: B009
        if beats == count:
            return
    raise AssertionError(f"{what}: the watch ended")
