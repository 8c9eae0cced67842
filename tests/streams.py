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
