"""Counts of the caller's jobs per kind and status (CountJobs, GET /api/v1/counts), and
the totals over every tenant (the /metrics gauge `jobstatus_jobs`).

The store keeps the counts in every write's transaction (state/job_counts.py), so a
count is a read of a few rows, never of the jobs themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobstatus_server.contract.errors import invalid
from jobstatus_server.contract.kinds import KINDS, Kind
from jobstatus_server.observability.metrics import JOBS
from jobstatus_server.state.job_counts import tenant_counts, total_counts
from jobstatus_server.state.store import Store
from jobstatus_server.state.view import View

NO_STATUS_LABEL = "no run"  # the label of a dataset's status before its first run


def counted_statuses(kind: Kind[Any]) -> tuple[int, ...]:
    """The statuses a count of `kind` lists, in enum order: every value but UNSPECIFIED,
    which only a kind whose jobs start without a status (a dataset) lists too."""
    return tuple(
        value.number for value in kind.status_enum.values if value.number != 0 or 0 in kind.initial
    )


def status_label(kind: Kind[Any], status: int) -> str:
    """The status as people read it: its documented spelling."""
    return NO_STATUS_LABEL if status == 0 else kind.spell(status)


@dataclass(frozen=True)
class StatusCount:
    kind: Kind[Any]
    status: int
    count: int

    @property
    def status_name(self) -> str:
        """The status's enum value name, e.g. MAP_IMPORT_STATUS_DONE."""
        return str(self.kind.status_enum.values_by_number[self.status].name)

    @property
    def label(self) -> str:
        return status_label(self.kind, self.status)


@dataclass(frozen=True)
class Counts:
    revision: int  # the store revision the counts are as of
    counts: list[StatusCount]  # every (kind, status) asked, zeros included


def kinds_named(names: Sequence[str], field: str) -> list[Kind[Any]]:
    """The kinds `names` asks for, in the kind table's order (none: every kind);
    INVALID_ARGUMENT naming `field` for an unknown one."""
    for name in names:
        if name not in KINDS:
            raise invalid(
                field, f"unknown kind {name!r}; one of: {', '.join(KINDS)}", "UNKNOWN_KIND"
            )
    return [kind for kind in KINDS.values() if not names or kind.name in names]


async def count_jobs(
    store: Store,
    view: View,
    tenant: str,
    kinds: Sequence[Kind[Any]],
    min_revision: int = 0,
    remaining: float | None = None,
) -> Counts:
    """The tenant's jobs of `kinds` per status, as of one revision: at least this
    process's acknowledged writes and `min_revision` (waited for as a Get waits)."""
    if min_revision > store.revision:
        await view.reach(min_revision, remaining)
    names = [kind.name for kind in kinds]
    stored = await store.read(lambda conn: tenant_counts(conn, tenant, names))
    return Counts(
        stored.revision,
        [
            StatusCount(kind, status, stored.jobs.get((kind.name, status), 0))
            for kind in kinds
            for status in counted_statuses(kind)
        ],
    )


async def count_all_tenants(store: Store) -> list[StatusCount]:
    """Every tenant's jobs summed, per kind and status, zeros included."""
    totals = await store.read(total_counts)
    return [
        StatusCount(kind, status, totals.get((kind.name, status), 0))
        for kind in KINDS.values()
        for status in counted_statuses(kind)
    ]


async def refresh_jobs_gauge(store: Store) -> None:
    """Set the /metrics gauge `jobstatus_jobs` to every tenant's counts (before a scrape)."""
    for count in await count_all_tenants(store):
        JOBS.labels(count.kind.name, count.status_name).set(count.count)
