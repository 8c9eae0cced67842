"""Reading the counts of jobs per tenant, kind and status (the `job_count` table, which
triggers on the job table keep in every write's transaction: migration 0006). A read
is a few rows, whatever the number of stored jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from jobstatus_server.state.models import JobCount
from jobstatus_server.state.sql import COUNTER

JOB_COUNT = JobCount.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StoredCounts:
    """The counts as of one store revision: (kind, status) -> jobs; a (kind, status)
    with no job may be absent."""

    revision: int
    jobs: dict[tuple[str, int], int]


def tenant_counts(conn: Connection, tenant: str, kinds: Sequence[str]) -> StoredCounts:
    """The tenant's counts of `kinds` and the revision they are as of, in the read's one
    snapshot (the reader's transaction)."""
    revision = conn.execute(
        select(COUNTER.c.value).where(COUNTER.c.name == "revision")
    ).scalar_one()
    query = select(JOB_COUNT.c.kind, JOB_COUNT.c.status, JOB_COUNT.c.jobs).where(
        JOB_COUNT.c.tenant == tenant, JOB_COUNT.c.kind.in_(kinds)
    )
    jobs = {(str(kind), int(status)): int(count) for kind, status, count in conn.execute(query)}
    return StoredCounts(int(revision), jobs)


def total_counts(conn: Connection) -> dict[tuple[str, int], int]:
    """Every tenant's jobs summed, by (kind, status)."""
    query = select(JOB_COUNT.c.kind, JOB_COUNT.c.status, func.sum(JOB_COUNT.c.jobs)).group_by(
        JOB_COUNT.c.kind, JOB_COUNT.c.status
    )
    return {(str(kind), int(status)): int(count) for kind, status, count in conn.execute(query)}
