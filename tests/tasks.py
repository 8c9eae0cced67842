"""asyncio tasks a test left behind with an exception nobody retrieved.

Such a task is freed at some later garbage collection, and asyncio logs its traceback
then: in whatever the process happens to be doing. On Python 3.11.7 (this project's)
that can be a compile(), pytest rewriting a module a later test imports, and the
traceback's formatting parses source lines itself; the nested parse corrupts the AST
constructor's interpreter-wide recursion count, and the compile fails with
"SystemError: AST constructor recursion depth mismatch". A leak in one module then
broke another module's import (CI, test_openapi.py importing schemathesis).
`Unretrieved` collects at a point of its own choosing and names the leaking tasks.
"""

from __future__ import annotations

import gc
import logging
from types import TracebackType
from typing import ClassVar

LEAKS = ("Task exception was never retrieved", "Task was destroyed but it is pending")


class Unretrieved(logging.Handler):
    """While entered, records asyncio's reports of leaked tasks; on exit, collects the
    garbage (so that leaks are reported now, not later) and fails if there were any.
    Checks nest: a leak is the innermost entered check's."""

    active: ClassVar[list[Unretrieved]] = []

    def __init__(self, where: str) -> None:
        super().__init__(logging.ERROR)
        self.where = where
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(LEAKS) and self.active[-1] is self:
            self.seen.append(" ".join(message.split()))

    def __enter__(self) -> Unretrieved:
        logging.getLogger("asyncio").addHandler(self)
        self.active.append(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            gc.collect()
        finally:
            self.active.remove(self)
            logging.getLogger("asyncio").removeHandler(self)
        if kind is None:
            assert not self.seen, (
                f"{self.where} left asyncio tasks that nobody saw to their end (an "
                f"exception never retrieved, or destroyed while pending; await or cancel "
                f"them, or take their end): {self.seen}"
            )
