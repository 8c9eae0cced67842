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
lease runs out. A dataset's run (`client.datasets.run(dataset_id)`) is the same
with log entries for progress: `log(detail)` and `end_step()`.

runplan.py decides what to write and when, runbase.py sends the writes from the
block and a thread (JobRun, DatasetRun) or a task (AsyncJobRun, AsyncDatasetRun);
here is what each run starts with and what its writes call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.message import Message

from jobstatus.errors import JobStatusError
from jobstatus.runbase import RunOptions, TaskRun, ThreadRun
from jobstatus.runplan import DatasetPlan, JobPlan, StepWrite, Write
from jobstatus.v1 import dataset_pb2 as ds

if TYPE_CHECKING:  # the clients import this module to build their runs
    from jobstatus.aio import AsyncDatasetClient, AsyncKindClient
    from jobstatus.sync import DatasetClient, KindClient

M = TypeVar("M", bound=Message)


def _entry(detail: str, level: ds.DatasetLogLevel.ValueType) -> ds.DatasetLogEntry:
    entry = ds.DatasetLogEntry(level=level, detail=detail)
    entry.created_at.FromDatetime(datetime.now(UTC))
    return entry


# --- the jobs of a kind with a generic update --------------------------------------------


class _JobRunApi(Generic[M]):
    """The part of a job run that neither sends nor waits."""

    plan: JobPlan[M]

    @property
    def job_id(self) -> str:
        return self.plan.job_id

    def set_result(self, resource: M, update_mask: list[str] | tuple[str, ...] = ()) -> None:
        """Fields the done write sets besides the status: a map import's
        meta_data.package_url and meta_data.footprint, a delivery's artifacts. The
        paths of `update_mask`, or every populated field of `resource` when empty."""
        self.plan.set_result(resource, update_mask)

    def _entering(self) -> Write[M] | None:
        return self.plan.entering()

    def _finish(self, error: BaseException | None) -> list[Write[M]]:
        return self.plan.finish(error)


class JobRun(_JobRunApi[M], ThreadRun[JobPlan[M], M, Write[M]]):
    """A job run by a `with` block (see the module's docstring); from KindClient.run."""

    def __init__(self, jobs: KindClient[M], options: RunOptions[M]) -> None:
        plan = JobPlan(jobs.kind, options.job_id, options.progress_interval, options.lease)
        super().__init__(plan, options)
        self.jobs = jobs

    def _start(self) -> M:
        options = self.options
        try:
            new = options.new(self.jobs.kind.new_job(options.job_id))
            return self.jobs.create(
                new, request_id=options.request_id, lease_duration=options.lease, **options.call
            )
        except JobStatusError as error:
            if not options.adopts(error):
                raise
            return self.jobs.get(options.job_id, **options.call)

    def _write(self, write: Write[M]) -> M:
        return self.jobs.update(
            write.resource,
            update_mask=write.update_mask,
            lease_duration=self.options.lease,
            **self.options.call,
        )

    def progress(self, value: int) -> None:
        """Report progress (0 to 100): sent now, or coalesced into a write within the
        interval. Raises the error of a background write that failed."""
        self._report(partial(self.plan.progress, value))


class AsyncJobRun(_JobRunApi[M], TaskRun[JobPlan[M], M, Write[M]]):
    """A job run by an `async with` block (see the module's docstring); from
    AsyncKindClient.run."""

    def __init__(self, jobs: AsyncKindClient[M], options: RunOptions[M]) -> None:
        plan = JobPlan(jobs.kind, options.job_id, options.progress_interval, options.lease)
        super().__init__(plan, options)
        self.jobs = jobs

    async def _start(self) -> M:
        options = self.options
        try:
            new = options.new(self.jobs.kind.new_job(options.job_id))
            return await self.jobs.create(
                new, request_id=options.request_id, lease_duration=options.lease, **options.call
            )
        except JobStatusError as error:
            if not options.adopts(error):
                raise
            return await self.jobs.get(options.job_id, **options.call)

    async def _write(self, write: Write[M]) -> M:
        return await self.jobs.update(
            write.resource,
            update_mask=write.update_mask,
            lease_duration=self.options.lease,
            **self.options.call,
        )

    async def progress(self, value: int) -> None:
        """Report progress (0 to 100): sent now, or coalesced into a write within the
        interval. Raises the error of a background write that failed."""
        await self._report(partial(self.plan.progress, value))


# --- a dataset's import run --------------------------------------------------------------


class _DatasetRunApi:
    """The part of a dataset's run that neither sends nor waits."""

    plan: DatasetPlan
    options: RunOptions[Any]

    @property
    def job_id(self) -> str:
        return self.options.job_id

    def _entering(self) -> StepWrite | None:
        return self.plan.entering()

    def _finish(self, error: BaseException | None) -> list[StepWrite]:
        return self.plan.finish(error)

    def _update_import(self, write: StepWrite) -> dict[str, Any]:
        """The arguments of UpdateDatasetImport for `write`."""
        return {
            "step_status": write.step_status,
            "entries": write.entries,
            "run_id": self.plan.run_id(),
            "lease_duration": self.options.lease,
            **self.options.call,
        }


class DatasetRun(_DatasetRunApi, ThreadRun[DatasetPlan, ds.Dataset, StepWrite]):
    """A dataset's import run by a `with` block; from DatasetClient.run."""

    def __init__(self, datasets: DatasetClient, options: RunOptions[Any]) -> None:
        super().__init__(DatasetPlan(options.progress_interval, options.lease), options)
        self.datasets = datasets

    def _start(self) -> ds.Dataset:
        options = self.options
        try:
            return self.datasets.start_import(
                options.job_id,
                request_id=options.request_id,
                lease_duration=options.lease,
                **options.call,
            )
        except JobStatusError as error:
            if error.reason != "IMPORT_IN_PROGRESS":  # else: adopt the run in progress
                raise
            return self.datasets.get(options.job_id, **options.call)

    def _write(self, write: StepWrite) -> ds.Dataset:
        return self.datasets.update_import(
            self.options.job_id, write.step, **self._update_import(write)
        )

    def log(
        self, detail: str, level: ds.DatasetLogLevel.ValueType = ds.DATASET_LOG_LEVEL_INFO
    ) -> None:
        """Add a log entry to the running step: sent now, or with others within the
        interval. Raises the error of a background write that failed."""
        self._report(partial(self.plan.log, _entry(detail, level)))

    def end_step(self) -> None:
        """End the running step with success: after fetch, the step import runs."""
        self._report(lambda now: self.plan.end_step())


class AsyncDatasetRun(_DatasetRunApi, TaskRun[DatasetPlan, ds.Dataset, StepWrite]):
    """A dataset's import run by an `async with` block; from AsyncDatasetClient.run."""

    def __init__(self, datasets: AsyncDatasetClient, options: RunOptions[Any]) -> None:
        super().__init__(DatasetPlan(options.progress_interval, options.lease), options)
        self.datasets = datasets

    async def _start(self) -> ds.Dataset:
        options = self.options
        try:
            return await self.datasets.start_import(
                options.job_id,
                request_id=options.request_id,
                lease_duration=options.lease,
                **options.call,
            )
        except JobStatusError as error:
            if error.reason != "IMPORT_IN_PROGRESS":  # else: adopt the run in progress
                raise
            return await self.datasets.get(options.job_id, **options.call)

    async def _write(self, write: StepWrite) -> ds.Dataset:
        return await self.datasets.update_import(
            self.options.job_id, write.step, **self._update_import(write)
        )

    async def log(
        self, detail: str, level: ds.DatasetLogLevel.ValueType = ds.DATASET_LOG_LEVEL_INFO
    ) -> None:
        await self._report(partial(self.plan.log, _entry(detail, level)))

    async def end_step(self) -> None:
        await self._report(lambda now: self.plan.end_step())


__all__ = ["AsyncDatasetRun", "AsyncJobRun", "DatasetRun", "JobRun"]
