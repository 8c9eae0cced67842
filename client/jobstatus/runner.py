"""Job runners: `with client.map_imports.run(job_id) as job:` runs a job to its end.

    with client.map_imports.run("m-1", lease=timedelta(seconds=30)) as job:
        for step in range(100):
            ...
            job.progress(step)
        job.set_result(MapImport(meta_data=MapImportMetaData(package_url=..., footprint=...)))

Entering creates the job (or adopts it when it exists) and moves it to its kind's
running status (kinds.Lifecycle). `progress(n)` reports progress at a bounded rate:
at most one progress write per `progress_interval`, the values in between coalesced,
the last one always sent (by a background flush, or with the final write). Leaving
the block normally moves the job to its kind's done status, with the fields given
to `set_result`; leaving it by an exception (KeyboardInterrupt and cancellation
included) moves it to its failed status with the exception's message, and the
exception goes on. With a `lease`, every write renews the job's lease and a
background renewal writes when nothing else did for a third of it, so a runner that
dies without a word (kill -9, a lost machine) is failed by the server when its
lease runs out.

RunPlan decides what to write and when, without I/O; JobRun (threads) and
AsyncJobRun (asyncio) only send its writes.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, Unpack

import grpc
from google.protobuf.message import Message

from jobstatus.errors import JobStatusError
from jobstatus.kinds import Kind, Lifecycle, Seconds, seconds
from jobstatus.options import CallOptions

M = TypeVar("M", bound=Message)

DEFAULT_PROGRESS_INTERVAL = 1.0  # seconds between two progress writes, at most one
RENEW_FRACTION = 1 / 3  # a lease is renewed when a third of it passed without a write
MAX_MESSAGE = 4096  # the contract's longest error message


@dataclass(frozen=True)
class Write(Generic[M]):
    """One update a runner sends: the fields in `resource` named by `update_mask`."""

    resource: M
    update_mask: list[str]
    progress: int | None = None  # the progress value it carries, if any


class RunPlan(Generic[M]):
    """What a job runner writes, and when: pure, the clock passed in (time.monotonic)."""

    def __init__(self, kind: Kind[M], job_id: str, interval: float, lease: Seconds | None) -> None:
        if kind.lifecycle is None:
            raise TypeError(f"a {kind.name} has no job runner")
        if interval < 0:
            raise ValueError(f"progress_interval must be 0 or more, not {interval}")
        self.kind = kind
        self.lifecycle: Lifecycle = kind.lifecycle
        self.job_id = job_id
        self.interval = interval
        self.lease = lease
        self.renew_every = None if not lease else seconds(lease) * RENEW_FRACTION
        self.pending: int | None = None  # a progress value not sent yet
        self.progress_at = -math.inf  # when the last progress write was sent
        self.written_at = -math.inf  # when the last write of any kind was sent
        self.result: tuple[M, list[str]] | None = None  # what the done write sets besides
        self.job: M | None = None  # the job as the server last answered

    def wrote(self, job: M, write: Write[M] | None, now: float) -> None:
        """Note the server's answer to a write (or to the create that began the run)."""
        self.job = job
        self.job_id = self.kind.job_id(job)
        self.written_at = now
        if write is not None and write.progress is not None:
            self.progress_at = now

    def _update(self, progress: int | None = None, **fields: Any) -> Write[M]:
        paths = list(fields)
        if progress is not None:
            paths.append(self.lifecycle.progress_path)
        resource = self.kind.new_job(self.job_id, **fields)
        if progress is not None:
            *parents, last = self.lifecycle.progress_path.split(".")
            target: Any = resource
            for name in parents:
                target = getattr(target, name)
            setattr(target, last, progress)
        return Write(resource, paths, progress)

    def entering(self) -> Write[M] | None:
        """The write that moves a created or adopted job to the running status, if needed
        (for an adopted job already running: the renewal that gives it the run's lease)."""
        assert self.job is not None
        if self.kind.status_of(self.job) != self.lifecycle.running:
            return self._update(status=self.lifecycle.running)
        return self._renewal() if self.renew_every else None

    def _renewal(self) -> Write[M]:
        # An update with no field but the lease renews it and changes nothing else.
        return Write(self.kind.new_job(self.job_id), [])

    def progress(self, value: int, now: float) -> Write[M] | None:
        """The write to send now for `value`, or None: it waits (coalesced) for the flush."""
        if not self.lifecycle.progress_path:
            raise TypeError(f"a {self.kind.name} has no progress to report")
        if not 0 <= value <= 100:
            raise ValueError(f"progress is a percentage from 0 to 100, not {value}")
        self.pending = int(value)
        return self.tick(now)

    def due(self) -> float:
        """When tick() may have something to write (math.inf: nothing until told)."""
        flush = self.progress_at + self.interval if self.pending is not None else math.inf
        renew = self.written_at + self.renew_every if self.renew_every else math.inf
        return min(flush, renew)

    def tick(self, now: float) -> Write[M] | None:
        """What is due at `now`: the coalesced progress, a lease renewal, or nothing."""
        if self.pending is not None and now >= self.progress_at + self.interval:
            value, self.pending = self.pending, None
            return self._update(progress=value)
        if self.renew_every and now >= self.written_at + self.renew_every:
            return self._renewal()
        return None

    def set_result(self, resource: M, update_mask: Sequence[str]) -> None:
        self.result = (resource, list(update_mask))

    def finish(self, error: BaseException | None) -> Write[M]:
        """The last write: done (with the result's fields), or failed with `error`'s message;
        either carries the progress not sent yet."""
        if error is None:
            write = self._update(progress=self.pending, status=self.lifecycle.done)
            if self.result is not None:
                resource, mask = self.result
                merged = self.kind.new_job(self.job_id)
                merged.MergeFrom(resource)
                merged.MergeFrom(write.resource)
                paths = list(mask) or [
                    path for path in leaf_paths(resource) if path != self.kind.id_field
                ]
                write = Write(merged, [*dict.fromkeys([*write.update_mask, *paths])])
        else:
            message = (str(error) or type(error).__name__)[:MAX_MESSAGE]
            write = self._update(
                progress=self.pending,
                status=self.lifecycle.failed,
                **self.lifecycle.failure(message),
            )
        self.pending = None
        return write


_WELL_KNOWN = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def leaf_paths(message: Message, prefix: str = "") -> list[str]:
    """The update_mask paths of every populated field of `message`, down to scalars,
    repeated fields and timestamps: the fields it sets, and no sibling it leaves out."""
    paths = []
    for field, value in message.ListFields():
        nested = (
            field.message_type is not None
            and not field.is_repeated
            and field.message_type.full_name not in _WELL_KNOWN
        )
        if nested:
            paths.extend(leaf_paths(value, f"{prefix}{field.name}."))
        else:
            paths.append(prefix + field.name)
    return paths


class SyncJobs(Protocol[M]):
    """What a JobRun needs of a kind's client (sync.KindClient)."""

    kind: Kind[M]

    def create(
        self,
        resource: M,
        *,
        request_id: str | None = ...,
        lease_duration: Seconds | None = ...,
        **options: Unpack[CallOptions],
    ) -> M: ...

    def get(self, job_id: str, **options: Unpack[CallOptions]) -> M: ...

    def update(
        self,
        resource: M,
        *,
        update_mask: Sequence[str] = ...,
        lease_duration: Seconds | None = ...,
        **options: Unpack[CallOptions],
    ) -> M: ...


class AsyncJobs(Protocol[M]):
    """What an AsyncJobRun needs of a kind's client (aio.AsyncKindClient)."""

    kind: Kind[M]

    def create(
        self,
        resource: M,
        *,
        request_id: str | None = ...,
        lease_duration: Seconds | None = ...,
        **options: Unpack[CallOptions],
    ) -> Awaitable[M]: ...

    def get(self, job_id: str, **options: Unpack[CallOptions]) -> Awaitable[M]: ...

    def update(
        self,
        resource: M,
        *,
        update_mask: Sequence[str] = ...,
        lease_duration: Seconds | None = ...,
        **options: Unpack[CallOptions],
    ) -> Awaitable[M]: ...


@dataclass(frozen=True)
class RunOptions(Generic[M]):
    """How run() was asked to run a job (see KindClient.run)."""

    job_id: str
    resource: M | None
    request_id: str | None
    lease: Seconds | None
    progress_interval: float
    call: CallOptions  # the options of each of the run's calls


def _new(options: RunOptions[M], kind: Kind[M]) -> M:
    job = kind.new_job(options.job_id)
    if options.resource is not None:
        job.MergeFrom(options.resource)
    return job


def _adoptable(error: JobStatusError, options: RunOptions[Any]) -> bool:
    return error.code == grpc.StatusCode.ALREADY_EXISTS and bool(options.job_id)


def _note_failure(error: BaseException | None, failed: JobStatusError) -> None:
    if error is None:
        raise failed
    error.add_note(f"jobstatus: the job could not be marked failed: {failed}")


class _RunBase(Generic[M]):
    """What JobRun and AsyncJobRun share: the plan and the answers of the server."""

    def __init__(self, kind: Kind[M], options: RunOptions[M]) -> None:
        self.options = options
        self.plan = RunPlan(kind, options.job_id, options.progress_interval, options.lease)
        self.failure: JobStatusError | None = None  # a background write that failed

    @property
    def latest(self) -> M:
        """The job as the server last answered a write of this run."""
        if self.plan.job is None:
            raise RuntimeError("the run has not started: use it in a with block")
        return self.plan.job

    @property
    def job_id(self) -> str:
        return self.plan.job_id

    def set_result(self, resource: M, update_mask: Sequence[str] = ()) -> None:
        """Fields the done write sets besides the status: a map import's
        meta_data.package_url and meta_data.footprint, a delivery's artifacts. The
        paths of `update_mask`, or every populated field of `resource` when empty."""
        self.plan.set_result(resource, update_mask)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


class JobRun(_RunBase[M]):
    """A job run by a `with` block (see the module's docstring); from KindClient.run."""

    def __init__(self, jobs: SyncJobs[M], options: RunOptions[M]) -> None:
        super().__init__(jobs.kind, options)
        self.jobs = jobs
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def _send(self, write: Write[M]) -> None:
        job = self.jobs.update(
            write.resource,
            update_mask=write.update_mask,
            lease_duration=self.options.lease,
            **self.options.call,
        )
        self.plan.wrote(job, write, time.monotonic())

    def __enter__(self) -> JobRun[M]:
        kind, options = self.plan.kind, self.options
        try:
            job = self.jobs.create(
                _new(options, kind),
                request_id=options.request_id,
                lease_duration=options.lease,
                **options.call,
            )
        except JobStatusError as error:
            if not _adoptable(error, options):
                raise
            job = self.jobs.get(options.job_id, **options.call)
        self.plan.wrote(job, None, time.monotonic())
        entering = self.plan.entering()
        if entering is not None:
            self._send(entering)
        self._thread = threading.Thread(
            target=self._background, name=f"jobstatus-run-{self.job_id}", daemon=True
        )
        self._thread.start()
        return self

    def progress(self, value: int) -> None:
        """Report progress (0 to 100): sent now, or coalesced into a write within the
        interval. Raises the error of a background write that failed."""
        with self._wake:
            self._raise_failure()
            write = self.plan.progress(value, time.monotonic())
            if write is not None:
                self._send(write)
            self._wake.notify()

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
        # A background write that failed was raised by progress() if the block reported
        # after it; the block's end is what decides: done, or failed with its exception.
        try:
            self._send(self.plan.finish(exc))
        except JobStatusError as failed:
            _note_failure(exc, failed)


class AsyncJobRun(_RunBase[M]):
    """A job run by an `async with` block (see the module's docstring); from
    AsyncKindClient.run. Its background writes run in a task of the running loop."""

    def __init__(self, jobs: AsyncJobs[M], options: RunOptions[M]) -> None:
        super().__init__(jobs.kind, options)
        self.jobs = jobs
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _send(self, write: Write[M]) -> None:
        job = await self.jobs.update(
            write.resource,
            update_mask=write.update_mask,
            lease_duration=self.options.lease,
            **self.options.call,
        )
        self.plan.wrote(job, write, time.monotonic())

    async def __aenter__(self) -> AsyncJobRun[M]:
        kind, options = self.plan.kind, self.options
        try:
            job = await self.jobs.create(
                _new(options, kind),
                request_id=options.request_id,
                lease_duration=options.lease,
                **options.call,
            )
        except JobStatusError as error:
            if not _adoptable(error, options):
                raise
            job = await self.jobs.get(options.job_id, **options.call)
        self.plan.wrote(job, None, time.monotonic())
        entering = self.plan.entering()
        if entering is not None:
            await self._send(entering)
        self._task = asyncio.create_task(self._background(), name=f"jobstatus-run-{self.job_id}")
        return self

    async def progress(self, value: int) -> None:
        """Report progress (0 to 100): sent now, or coalesced into a write within the
        interval. Raises the error of a background write that failed."""
        async with self._lock:
            self._raise_failure()
            write = self.plan.progress(value, time.monotonic())
            if write is not None:
                await self._send(write)
        self._wake.set()

    async def _background(self) -> None:
        while self.failure is None:
            self._wake.clear()  # before reading the plan: a progress() after it wakes us
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
                await self._send(self.plan.finish(exc))
            except JobStatusError as failed:
                _note_failure(exc, failed)


__all__ = ["AsyncJobRun", "CallOptions", "JobRun", "RunOptions", "RunPlan", "Write"]
