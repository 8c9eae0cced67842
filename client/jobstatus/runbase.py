"""What every job run shares (runner.py): how it was asked for (RunOptions), and how
its plan's writes (runplan.py) are sent: from the block and a thread (ThreadRun), or
from the block and a task of the event loop (TaskRun). A run's start, its writes and
its end are the subclasses' (runner.py); here they are only sent, in order, one at a
time, a background write that failed kept to be raised by the next report.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import grpc
from google.protobuf.message import Message

from jobstatus.errors import JobStatusError
from jobstatus.kinds import Seconds
from jobstatus.options import CallOptions
from jobstatus.runplan import Plan

M = TypeVar("M", bound=Message)


class Flushing(Protocol):
    @property
    def flush(self) -> bool: ...


W = TypeVar("W", bound=Flushing)
P = TypeVar("P", bound=Plan[Any, Any])


@dataclass(frozen=True)
class RunOptions(Generic[M]):
    """How run() was asked to run a job (see KindClient.run and DatasetClient.run)."""

    job_id: str
    resource: M | None
    request_id: str | None
    lease: Seconds | None
    progress_interval: float
    call: CallOptions  # the options of each of the run's calls

    def new(self, job: M) -> M:
        """The job to create: `job` (an empty one with the id) and the given resource."""
        if self.resource is not None:
            job.MergeFrom(self.resource)
        return job

    def adopts(self, error: JobStatusError) -> bool:
        """Whether a create refused with `error` means the job exists, to be adopted."""
        return error.code == grpc.StatusCode.ALREADY_EXISTS and bool(self.job_id)


def _note_failure(error: BaseException | None, failed: JobStatusError) -> None:
    if error is None:
        raise failed
    error.add_note(f"jobstatus: the job could not be marked failed: {failed}")


class Run(Generic[P, M, W]):
    """What every run shares: its plan, its options, and a background write that failed."""

    def __init__(self, plan: P, options: RunOptions[Any]) -> None:
        self.plan: P = plan
        self.options = options
        self.failure: JobStatusError | None = None

    @property
    def latest(self) -> M:
        """The job as the server last answered a write of this run."""
        job: M | None = self.plan.job
        if job is None:
            raise RuntimeError("the run has not started: use it in a with block")
        return job

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


class ThreadRun(Run[P, M, W]):
    """A run's writes from the block, and from a thread for flushes and renewals."""

    def __init__(self, plan: P, options: RunOptions[Any]) -> None:
        super().__init__(plan, options)
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def _start(self) -> M:
        raise NotImplementedError

    def _entering(self) -> W | None:
        raise NotImplementedError

    def _write(self, write: W) -> M:
        raise NotImplementedError

    def _finish(self, error: BaseException | None) -> list[W]:
        raise NotImplementedError

    def _send(self, write: W) -> None:
        self.plan.wrote(self._write(write), write.flush, time.monotonic())

    def _report(self, report: Callable[[float], W | None]) -> None:
        """Make a report (it may return a write to send now); raises the error of a
        background write that failed."""
        with self._wake:
            self._raise_failure()
            write = report(time.monotonic())
            if write is not None:
                self._send(write)
            self._wake.notify()

    def __enter__(self) -> Self:
        self.plan.wrote(self._start(), False, time.monotonic())
        entering = self._entering()
        if entering is not None:
            self._send(entering)
        self._thread = threading.Thread(target=self._background, name="jobstatus-run", daemon=True)
        self._thread.start()
        return self

    def _background(self) -> None:
        with self._wake:
            while not self._stopped and self.failure is None:
                wait = self.plan.due() - time.monotonic()
                if wait > 0:
                    self._wake.wait(None if math.isinf(wait) else wait)
                    continue
                write = self.plan.tick(time.monotonic())
                if write is not None:
                    try:
                        self._send(write)
                    except JobStatusError as error:
                        self.failure = error

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        # A background write that failed was raised by the next report, if there was
        # one; the block's end is what decides: done, or failed with its exception.
        try:
            for write in self._finish(exc):
                self._send(write)
        except JobStatusError as failed:
            _note_failure(exc, failed)


class TaskRun(Run[P, M, W]):
    """A run's writes from the block, and from a task for flushes and renewals."""

    def __init__(self, plan: P, options: RunOptions[Any]) -> None:
        super().__init__(plan, options)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> M:
        raise NotImplementedError

    def _entering(self) -> W | None:
        raise NotImplementedError

    async def _write(self, write: W) -> M:
        raise NotImplementedError

    def _finish(self, error: BaseException | None) -> list[W]:
        raise NotImplementedError

    async def _send(self, write: W) -> None:
        self.plan.wrote(await self._write(write), write.flush, time.monotonic())

    async def _report(self, report: Callable[[float], W | None]) -> None:
        async with self._lock:
            self._raise_failure()
            write = report(time.monotonic())
            if write is not None:
                await self._send(write)
        self._wake.set()

    async def __aenter__(self) -> Self:
        self.plan.wrote(await self._start(), False, time.monotonic())
        entering = self._entering()
        if entering is not None:
            await self._send(entering)
        self._task = asyncio.create_task(self._background(), name="jobstatus-run")
        return self

    async def _background(self) -> None:
        while self.failure is None:
            self._wake.clear()  # before reading the plan: a report after it wakes us
            wait = self.plan.due() - time.monotonic()
            if wait > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if math.isinf(wait) else wait)
                continue
            async with self._lock:
                write = self.plan.tick(time.monotonic())
                if write is not None:
                    try:
                        await self._send(write)
                    except JobStatusError as error:
                        self.failure = error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            try:
                for write in self._finish(exc):
                    await self._send(write)
            except JobStatusError as failed:
                _note_failure(exc, failed)
