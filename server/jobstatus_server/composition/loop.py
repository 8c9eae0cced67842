"""The event loop the server (and the bench's bare baselines) run on.

uvloop when it is installed (uvicorn[standard] brings it) and JOBSTATUS_LOOP is not
`asyncio`: its loop, transports and timers cost less per call than asyncio's, for
gRPC and HTTP alike. The bench's baselines run on the same loop, so that a ratio
measures jobstatus's own work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if os.environ.get("JOBSTATUS_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
