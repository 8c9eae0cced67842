"""What `jobstatus watch` shows: a row per job with its progress, and how the jobs ended.

WatchView is fed the events of a watch (jobstatus.watch.WatchEvent) one by one
and renders the jobs it knows as a rich table: a spinner or an outcome mark,
the id, the status in its documented spelling (green when the job succeeded,
red when it failed, yellow while it runs), a progress bar and a detail, and
under the table a status line with the revision and the latest heartbeat.

How far a job is comes from the job itself: a map import's meta_data.progress,
a delivery's progress, a dataset run's finished steps out of two (fetch,
import); a catalog import has no percentage, so a running one gets a pulsing
bar.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from jobstatus.kinds import Kind
from jobstatus.spelling import by_spelling, spell
from jobstatus.v1 import catalog_import_pb2, dataset_pb2, delivery_pb2, errors_pb2, map_import_pb2
from jobstatus.watch import EventType, WatchEvent

BAR_WIDTH = 24
DATASET_STEPS = 2  # fetch, then import


class Outcome(enum.Enum):
    """Where a job stands: still running, or settled with success or failure."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# The settled statuses that count as success; every other settled status is a failure.
# Expired and Archived (map import) and delete (delivery) only follow a finished job
# (Done, Discovered, done) whose package or cache entry has since aged out: the job
# succeeded.
SUCCEEDED: dict[str, tuple[str, ...]] = {
    "map_import": ("Done", "Expired", "Archived"),
    "prepared_delivery": ("done", "delete"),
    "dataset": ("success",),
    "catalog_import": ("SUCCESS",),
}


def succeeded_statuses(kind: Kind[Any]) -> frozenset[int]:
    numbers = by_spelling(kind.status_enum)
    return frozenset(numbers[s] for s in SUCCEEDED[kind.name])


def outcome(kind: Kind[Any], job: Message) -> Outcome:
    status = kind.status_of(job)
    if status not in kind.settled:
        return Outcome.RUNNING
    return Outcome.SUCCEEDED if status in succeeded_statuses(kind) else Outcome.FAILED


def status_text(kind: Kind[Any], job: Message) -> str:
    """The job's status in its documented spelling; "no run" for a dataset never imported."""
    status = kind.status_of(job)
    return spell(kind.status_enum, status) if status else "no run"


@dataclass(frozen=True)
class JobProgress:
    """How far a job is: a percentage (None when the kind has none), and a detail for people."""

    percent: float | None
    detail: str


def _error_detail(error: errors_pb2.Error) -> str:
    code = spell(errors_pb2.ErrorCode.DESCRIPTOR, error.error_code) if error.error_code else ""
    return ": ".join(part for part in (code, error.message) if part)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def progress(kind: Kind[Any], job: Message) -> JobProgress:
    failed = outcome(kind, job) is Outcome.FAILED
    if isinstance(job, map_import_pb2.MapImport):
        meta = job.meta_data
        if failed and job.HasField("error"):
            return JobProgress(float(meta.progress), _error_detail(job.error))
        return JobProgress(float(meta.progress), meta.package_url or meta.file_name)
    if isinstance(job, delivery_pb2.PreparedDelivery):
        if failed and job.HasField("error"):
            detail = _error_detail(job.error)
        elif job.artifacts:
            types = ", ".join(a.artifact_type or a.item_key for a in job.artifacts)
            detail = f"{types} ({_size(job.size)})"
        else:
            detail = ""
        return JobProgress(float(job.progress), detail)
    if isinstance(job, dataset_pb2.Dataset):
        if not job.HasField("latest_run"):
            return JobProgress(None, job.name)
        return _dataset_progress(job)
    if isinstance(job, catalog_import_pb2.CatalogImport):
        # No percentage: only the type and, on failure, the message.
        kind_type = spell(catalog_import_pb2.CatalogImportType.DESCRIPTOR, job.type)
        return JobProgress(None, f"{kind_type}: {job.message}" if job.message else kind_type)
    return JobProgress(None, "")


def _dataset_progress(job: dataset_pb2.Dataset) -> JobProgress:
    run = job.latest_run
    step_enum = dataset_pb2.DatasetImportStepName.DESCRIPTOR
    level_enum = dataset_pb2.DatasetLogLevel.DESCRIPTOR
    done = sum(1 for s in run.steps if s.status == dataset_pb2.DATASET_IMPORT_STATUS_SUCCESS)
    if run.status == dataset_pb2.DATASET_IMPORT_STATUS_SUCCESS:
        done = DATASET_STEPS
    current = run.steps[-1] if run.steps else None
    parts = []
    if current is not None:
        step = spell(step_enum, current.name)
        if current.status == dataset_pb2.DATASET_IMPORT_STATUS_IN_PROGRESS:
            parts.append(f"step {step}")
        elif current.status == dataset_pb2.DATASET_IMPORT_STATUS_FAILED:
            parts.append(f"step {step} failed")
        if current.entries:
            last = current.entries[-1]
            parts.append(f"{spell(level_enum, last.level)}: {last.detail}")
    return JobProgress(100.0 * done / DATASET_STEPS, " · ".join(parts) or job.name)


# --- the live view ----------------------------------------------------------------------

_STYLE = {Outcome.RUNNING: "yellow", Outcome.SUCCEEDED: "green", Outcome.FAILED: "bold red"}
_MARK = {Outcome.SUCCEEDED: "✓", Outcome.FAILED: "✗"}


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


class WatchView:
    """The jobs of one watch as its events tell them, and a status line."""

    def __init__(
        self, kind: Kind[Any], ids: Sequence[str] = (), *, until_settled: bool = False
    ) -> None:
        self.kind = kind
        self.ids = list(dict.fromkeys(ids))
        self.until_settled = until_settled
        self.jobs: dict[str, Message] = {}
        self.revision = 0
        self.synced = False
        self.heartbeat = ""  # the time of the latest heartbeat
        self.resynced = ""  # the time of the latest RESYNC
        self.events = 0
        self._spinners: dict[str, Spinner] = {}

    def apply(self, event: WatchEvent[Any]) -> None:
        self.events += 1
        if event.revision:
            self.revision = max(self.revision, event.revision)
        if event.type is EventType.RESYNC:
            # The history the watch stood on is gone: forget every job, the state follows.
            self.jobs.clear()
            self.synced = False
            self.resynced = _clock()
        elif event.type is EventType.SYNCED:
            self.synced = True
        elif event.type is EventType.HEARTBEAT:
            self.heartbeat = _clock()
        elif event.job is not None:
            self.jobs[self.kind.job_id(event.job)] = event.job

    # --- what the jobs came to ------------------------------------------------------

    def watched(self) -> list[str]:
        """The ids the view is about: the ids asked for, or every job seen."""
        return self.ids or list(self.jobs)

    def outcomes(self) -> dict[str, Outcome | None]:
        """Each watched job's outcome (None: no event about it yet)."""
        return {
            job_id: outcome(self.kind, self.jobs[job_id]) if job_id in self.jobs else None
            for job_id in self.watched()
        }

    # --- rendering ------------------------------------------------------------------

    def _ordered(self) -> list[str]:
        order = [*self.ids, *(job_id for job_id in self.jobs if job_id not in self.ids)]
        return order if self.ids else list(self.jobs)

    def render(
        self, max_rows: int | None = None, *, detail_width: int | None = 60
    ) -> RenderableType:
        table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
        table.add_column("", width=1, no_wrap=True)
        table.add_column(self.kind.id_field, no_wrap=True, style="bold")
        table.add_column("status", no_wrap=True)
        table.add_column("progress", no_wrap=True, width=BAR_WIDTH)
        table.add_column("", justify="right", no_wrap=True, width=4)
        # Only the detail gives way when the screen is narrow.
        table.add_column("detail", max_width=detail_width)
        rows = self._ordered()
        hidden = 0
        if max_rows is not None and len(rows) > max_rows:
            # Too many for the screen: every running job first, then the latest settled ones.
            running = [j for j in rows if j not in self.jobs or self._outcome(j) is Outcome.RUNNING]
            others = [j for j in rows if j not in running]
            keep = set((running + others[::-1])[: max(max_rows, 1)])
            hidden = len(rows) - len(keep)
            rows = [j for j in rows if j in keep]
        for job_id in rows:
            table.add_row(*self._row(job_id))
        return Group(table, self.status_line(hidden))

    def _outcome(self, job_id: str) -> Outcome:
        return outcome(self.kind, self.jobs[job_id])

    def _row(self, job_id: str) -> tuple[RenderableType, ...]:
        job = self.jobs.get(job_id)
        if job is None:
            waiting = Text("waiting for its first event", style="dim", no_wrap=True)
            return (Text("·", style="dim"), job_id, Text("-", style="dim"), "", "", waiting)
        result = self._outcome(job_id)
        style = _STYLE[result]
        status = Text(status_text(self.kind, job), style=style)
        how_far = progress(self.kind, job)
        mark: RenderableType
        if result is Outcome.RUNNING:
            mark = self._spinners.setdefault(job_id, Spinner("dots", style="yellow"))
        else:
            mark = Text(_MARK[result], style=style)
        bar: RenderableType
        percent: RenderableType = ""
        if how_far.percent is not None:
            bar = ProgressBar(
                total=100,
                completed=how_far.percent,
                width=BAR_WIDTH,
                complete_style="red" if result is Outcome.FAILED else "yellow",
                finished_style="green",
            )
            percent = f"{how_far.percent:3.0f}%"
        elif result is Outcome.RUNNING:
            bar = ProgressBar(total=None, width=BAR_WIDTH, pulse=True)
        else:
            bar = Text(" " * BAR_WIDTH)
        detail = Text(how_far.detail, style="dim", no_wrap=True, overflow="ellipsis")
        return (mark, job_id, status, bar, percent, detail)

    def status_line(self, hidden: int = 0) -> Text:
        outcomes = self.outcomes()
        settled = sum(1 for o in outcomes.values() if o not in (None, Outcome.RUNNING))
        failed = sum(1 for o in outcomes.values() if o is Outcome.FAILED)
        parts = [f"revision {self.revision}"]
        parts.append("live" if self.synced else "reading the current state")
        parts.append(
            f"{settled}/{len(outcomes)} settled" + (f", {failed} failed" if failed else "")
        )
        if hidden:
            parts.append(f"{hidden} more not shown")
        if self.heartbeat:
            parts.append(f"heartbeat {self.heartbeat}")
        if self.resynced:
            parts.append(f"history moved on at {self.resynced}: state re-read")
        parts.append("exits when all settle" if self.until_settled else "Ctrl-C to stop")
        return Text(" · ".join(parts), style="dim")


# --- one JSON line per event ------------------------------------------------------------


def event_json(kind: Kind[Any], event: WatchEvent[Any]) -> dict[str, Any]:
    """An event for scripts: type, revision and, for STATE and CHANGE, the job.

    `status` is the documented spelling (null for a dataset without a run) and
    `job` the protobuf JSON of the job, as `jobstatus get --json` prints it.
    """
    line: dict[str, Any] = {"type": event.type.name, "revision": event.revision}
    if event.job is not None:
        status = kind.status_of(event.job)
        line["kind"] = kind.name
        line["id"] = kind.job_id(event.job)
        line["status"] = spell(kind.status_enum, status) if status else None
        line["outcome"] = outcome(kind, event.job).value
        line["job"] = json_format.MessageToDict(event.job)
    return line
