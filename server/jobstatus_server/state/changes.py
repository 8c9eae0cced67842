"""What the store hands out about committed changes: a `Change` (one committed change
of a job, as the writer made it or the event log holds it), a `Snapshot` (what a watch
starts from) and a `History` page (one job's kept changes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Change:
    """One committed change, as read from the event log."""

    revision: int
    tenant: str
    kind: str
    job_id: str
    status: int
    data: bytes
    cache: dict[Any, Any] = field(default_factory=dict)
    # The watch events built from this change, once for every stream (watch.py).
    events: dict[Any, Any] | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a watch starts from, read in one transaction."""

    revision: int  # the store's revision
    compacted: int  # every event after this one is kept
    jobs: list[Change]  # the current state of the matching jobs (empty unless asked)


@dataclass(frozen=True)
class History:
    """A page of one job's kept changes, read in one transaction."""

    compacted: int  # every event after this one is kept
    created: int | None  # the job's first revision; None: no such job
    changes: list[tuple[int, float, bytes]]  # (revision, commit time in POSIX seconds, job)


def change_from_row(row: Any) -> Change:
    """A `Change` from a row of the event table (or the job table)."""
    return Change(
        int(row.revision),
        str(row.tenant),
        str(row.kind),
        str(row.job_id),
        int(row.status),
        bytes(row.data),
    )
