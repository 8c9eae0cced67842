"""What the clients answer besides jobs: a page of a list, a job's history and its changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from jobstatus.kinds import Kind, Status

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of a list: its jobs, and the token of the next page ("" on the last)."""

    jobs: list[M]
    next_page_token: str


@dataclass(frozen=True)
class JobChange(Generic[M]):
    """One change of a job: its revision, when it was committed, the job as of it, and
    the job's status then (a Status: prints as its name, MAP_IMPORT_STATUS_DONE)."""

    revision: int
    time: datetime
    job: M
    status: Status


@dataclass(frozen=True)
class History(Generic[M]):
    """A job's kept changes, oldest first (one page of them, or all of them).

    The event log is compacted: `oldest_revision` is the oldest revision it still keeps,
    and `truncated` is True when the job's earliest changes are no longer among them.
    """

    changes: list[JobChange[M]]
    oldest_revision: int
    truncated: bool
    next_page_token: str = ""


def history_of(kind: Kind[M], response: Any) -> History[M]:
    """The History that one history RPC's response holds."""
    changes = []
    for change in response.changes:
        job = kind.job_of(change)
        changes.append(
            JobChange(int(change.revision), change.time.ToDatetime(UTC), job, kind.status(job))
        )
    return History(
        changes, int(response.oldest_revision), bool(response.truncated), response.next_page_token
    )


def joined(pages: Sequence[History[M]]) -> History[M]:
    """Pages of one history read one after another, as one History."""
    last = pages[-1]
    changes = [change for page in pages for change in page.changes]
    return History(changes, last.oldest_revision, any(p.truncated for p in pages))
