"""What the store hands out about committed changes: a `Change` (one committed change
of a job, as the writer made it or the event log holds it) and a `History` page (one
job's kept changes). A watch's initial state is read in pages (snapshot.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobstatus_server.state.renderings import Renderings

# The status of the change that deletes a job (the retention policy): no kind has it.
# Its data is the job's last state; the watch sends it as a DELETED event.
DELETED = -1


@dataclass(slots=True, init=False)
class Change:
    """One committed change, as read from the event log."""

    revision: int
    tenant: str
    kind: str
    job_id: str
    status: int
    data: bytes
    # Every form the change is sent in, built once for every stream and reader.
    renderings: Renderings

    def __init__(
        self,
        revision: int,
        tenant: str,
        kind: str,
        job_id: str,
        status: int,
        data: bytes,
    ) -> None:
        self.revision = revision
        self.tenant = tenant
        self.kind = kind
        self.job_id = job_id
        self.status = status
        self.data = data
        self.renderings = Renderings(data)

    @property
    def deleted(self) -> bool:
        return self.status == DELETED


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
