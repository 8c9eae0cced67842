"""What a job runner (runner.py) writes and when, without I/O: the clock is passed in.

Every run shares one cadence (Plan): reports that are not sent at once wait
(coalesced) for a flush at most once per interval after the last one, the last
report is always sent (by a flush, or with the final write), and with a lease a
renewal is due when a third of it passed without any write.

JobPlan is the plan of the kinds with a generic update (kinds.Lifecycle: running,
done and failed statuses, a progress field): its writes are updates (Write).
DatasetPlan is a dataset's import run: its writes are UpdateDatasetImport steps
(StepWrite) that append log entries to the running step and end it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from google.protobuf.message import Message

from jobstatus.kinds import Kind, Lifecycle, Seconds, seconds
from jobstatus.v1 import dataset_pb2 as ds

M = TypeVar("M", bound=Message)
W = TypeVar("W")

DEFAULT_INTERVAL = 1.0  # seconds between two flushes of reports, at most one
RENEW_FRACTION = 1 / 3  # a lease is renewed when a third of it passed without a write
MAX_MESSAGE = 4096  # the contract's longest error message


def failure_message(error: BaseException) -> str:
    """What a failed job says of the exception that ended its run."""
    return (str(error) or type(error).__name__)[:MAX_MESSAGE]


class Plan(Generic[M, W]):
    """The cadence of a run's writes; subclasses say what is pending and what to write."""

    def __init__(self, interval: float, lease: Seconds | None) -> None:
        if interval < 0:
            raise ValueError(f"progress_interval must be 0 or more, not {interval}")
        self.interval = interval
        self.renew_every = None if not lease else seconds(lease) * RENEW_FRACTION
        self.flushed_at = -math.inf  # when the last write carrying reports was sent
        self.written_at = -math.inf  # when the last write of any kind was sent
        self.job: M | None = None  # the job as the server last answered

    def _pending(self) -> bool:
        raise NotImplementedError

    def _flush(self) -> W:
        """The write of the pending reports (they are no longer pending)."""
        raise NotImplementedError

    def _renewal(self) -> W:
        raise NotImplementedError

    def wrote(self, job: M, flushed: bool, now: float) -> None:
        """Note the server's answer to a write (`flushed`: it carried reports)."""
        self.job = job
        self.written_at = now
        if flushed:
            self.flushed_at = now

    def due(self) -> float:
        """When tick() may have something to write (math.inf: nothing until told)."""
        flush = self.flushed_at + self.interval if self._pending() else math.inf
        renew = self.written_at + self.renew_every if self.renew_every else math.inf
        return min(flush, renew)

    def tick(self, now: float) -> W | None:
        """What is due at `now`: the pending reports, a lease renewal, or nothing."""
        if self._pending() and now >= self.flushed_at + self.interval:
            return self._flush()
        if self.renew_every and now >= self.written_at + self.renew_every:
            return self._renewal()
        return None


@dataclass(frozen=True)
class Write(Generic[M]):
    """An update: the fields in `resource` named by `update_mask` (none: a renewal)."""

    resource: M
    update_mask: list[str]
    flush: bool = False  # it carries the pending progress


class JobPlan(Plan[M, Write[M]]):
    """A run of a kind with a generic update: map imports, deliveries, catalog imports."""

    def __init__(self, kind: Kind[M], job_id: str, interval: float, lease: Seconds | None) -> None:
        if kind.lifecycle is None:
            raise TypeError(f"a {kind.name} is run by its own runner, not by update")
        super().__init__(interval, lease)
        self.kind = kind
        self.lifecycle: Lifecycle = kind.lifecycle
        self.job_id = job_id
        self.pending: int | None = None  # a progress value not sent yet
        self.held: int | None = None  # the progress the job holds, as last answered
        self.result: tuple[M, list[str]] | None = None  # what the done write sets besides

    def wrote(self, job: M, flushed: bool, now: float) -> None:
        super().wrote(job, flushed, now)
        self.job_id = self.kind.job_id(job)
        if self.lifecycle.progress_path:
            value: Any = job
            for name in self.lifecycle.progress_path.split("."):
                value = getattr(value, name)
            self.held = int(value)

    def _pending(self) -> bool:
        return self.pending is not None

    def _update(self, **fields: Any) -> Write[M]:
        progress, self.pending = self.pending, None
        resource = self.kind.new_job(self.job_id, **fields)
        paths = list(fields)
        if progress is not None:
            *parents, last = self.lifecycle.progress_path.split(".")
            target: Any = resource
            for name in parents:
                target = getattr(target, name)
            setattr(target, last, progress)
            paths.append(self.lifecycle.progress_path)
        return Write(resource, paths, flush=progress is not None)

    def _flush(self) -> Write[M]:
        return self._update()

    def _renewal(self) -> Write[M]:
        # An update with no field but the lease renews it and changes nothing else.
        return Write(self.kind.new_job(self.job_id), [])

    def entering(self) -> Write[M] | None:
        """The write that moves a created or adopted job to the running status, if needed
        (for an adopted job already running: the renewal that gives it the run's lease)."""
        assert self.job is not None
        if self.kind.status_of(self.job) != self.lifecycle.running:
            return Write(self.kind.new_job(self.job_id, status=self.lifecycle.running), ["status"])
        return self._renewal() if self.renew_every else None

    def progress(self, value: int, now: float) -> Write[M] | None:
        """The write to send now for `value`, or None: it waits (coalesced) for the flush."""
        if not self.lifecycle.progress_path:
            raise TypeError(f"a {self.kind.name} has no progress to report")
        if not 0 <= value <= 100:
            raise ValueError(f"progress is a percentage from 0 to 100, not {value}")
        # The value the job holds already needs no write (a write that changes nothing).
        self.pending = None if value == self.held else int(value)
        return self.tick(now)

    def set_result(self, resource: M, update_mask: Sequence[str]) -> None:
        self.result = (resource, list(update_mask))

    def finish(self, error: BaseException | None) -> list[Write[M]]:
        """The last write: done (with the result's fields), or failed with `error`'s message;
        either carries the progress not sent yet."""
        if error is not None:
            failure = self.lifecycle.failure(failure_message(error))
            return [self._update(status=self.lifecycle.failed, **failure)]
        write = self._update(status=self.lifecycle.done)
        if self.result is None:
            return [write]
        resource, mask = self.result
        merged = self.kind.new_job(self.job_id)
        merged.MergeFrom(resource)
        merged.MergeFrom(write.resource)
        paths = list(mask) or [p for p in leaf_paths(resource) if p != self.kind.id_field]
        return [Write(merged, [*dict.fromkeys([*write.update_mask, *paths])], write.flush)]


_WELL_KNOWN = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def leaf_paths(message: Message, prefix: str = "") -> list[str]:
    """The update_mask paths of every populated field of `message`, down to scalars,
    repeated fields and timestamps: the fields it sets, and no sibling it leaves out."""
    paths = []
    for descriptor, value in message.ListFields():
        nested = (
            descriptor.message_type is not None
            and not descriptor.is_repeated
            and descriptor.message_type.full_name not in _WELL_KNOWN
        )
        if nested:
            paths.extend(leaf_paths(value, f"{prefix}{descriptor.name}."))
        else:
            paths.append(prefix + descriptor.name)
    return paths


# --- a dataset's import run --------------------------------------------------------------

STEP_STATUS: TypeAlias = ds.DatasetImportStatus.ValueType
RUNNING = ds.DATASET_IMPORT_STATUS_IN_PROGRESS
SUCCESS = ds.DATASET_IMPORT_STATUS_SUCCESS
FAILED = ds.DATASET_IMPORT_STATUS_FAILED
NO_STATUS = ds.DATASET_IMPORT_STATUS_UNSPECIFIED


@dataclass(frozen=True)
class StepWrite:
    """An UpdateDatasetImport: entries for the running `step`, and its end when
    `step_status` is set (none of either: a renewal of the lease)."""

    step: ds.DatasetImportStepName.ValueType
    step_status: STEP_STATUS
    entries: list[ds.DatasetLogEntry] = field(default_factory=list)
    flush: bool = False  # it carries the pending entries


class DatasetPlan(Plan[ds.Dataset, StepWrite]):
    """A dataset's import run: started with the step fetch running; log entries are
    coalesced; the end of the block ends the running steps with success (fetch, then
    import), or the running step failed with an error entry carrying the message."""

    def __init__(self, interval: float, lease: Seconds | None) -> None:
        super().__init__(interval, lease)
        self.pending: list[ds.DatasetLogEntry] = []

    def _pending(self) -> bool:
        return bool(self.pending)

    def running_step(self) -> ds.DatasetImportStepName.ValueType | None:
        """The step in progress of the run, None once the run ended."""
        assert self.job is not None
        run = self.job.latest_run
        if run.status != RUNNING or not run.steps or run.steps[-1].status != RUNNING:
            return None
        return run.steps[-1].name

    def run_id(self) -> str:
        assert self.job is not None
        return self.job.latest_run.id

    def _step(self, status: STEP_STATUS = NO_STATUS, *extra: ds.DatasetLogEntry) -> StepWrite:
        step = self.running_step()
        if step is None:
            raise RuntimeError("the dataset's import run has ended: no step is running")
        entries, self.pending = [*self.pending, *extra], []
        return StepWrite(step, status, entries, flush=bool(entries))

    def _flush(self) -> StepWrite:
        return self._step()

    def _renewal(self) -> StepWrite:
        return self._step()  # with no entry pending, only the lease

    def entering(self) -> StepWrite | None:
        """For an adopted run: the renewal that gives it the run's lease."""
        return self._renewal() if self.renew_every else None

    def log(self, entry: ds.DatasetLogEntry, now: float) -> StepWrite | None:
        """The write to send now with `entry`, or None: it waits (coalesced) for the flush."""
        self.pending.append(entry)
        return self.tick(now)

    def end_step(self) -> StepWrite:
        """The write that ends the running step with success (fetch: import starts)."""
        return self._step(SUCCESS)

    def finish(self, error: BaseException | None) -> list[StepWrite]:
        """The writes that end the run: each remaining step with success, or the running
        one failed with an error entry; the entries not sent yet go with the first."""
        if self.running_step() is None:
            return []
        if error is not None:
            entry = ds.DatasetLogEntry(
                level=ds.DATASET_LOG_LEVEL_ERROR, detail=failure_message(error)
            )
            return [self._step(FAILED, entry)]
        writes = [self._step(SUCCESS)]
        if writes[0].step == ds.DATASET_IMPORT_STEP_NAME_FETCH:
            writes.append(StepWrite(ds.DATASET_IMPORT_STEP_NAME_IMPORT, SUCCESS))
        return writes
