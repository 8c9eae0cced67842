"""Pages of one tenant's jobs of one kind, filtered, for the dashboard: each page read
through an index, in keyset order, so its cost does not grow with the store.

- Newest first (`newest_first`): by `create_revision`, below a keyset bound. Without
  a status filter through `ix_job_list`; with one, one branch per status through
  `ix_job_status` (each ordered by the index and cut at the page's size), merged.
- By id (`by_id`, when an id prefix is asked): the primary key's range of the
  prefix, in id order, after a keyset bound.
- A time range (creation time) becomes a range of `create_revision` found through
  `ix_job_created`, and the rows are checked against it too.

On PostgreSQL the id range is the prefix's under the database's collation: exact in
a database created without a locale (C), as jobstatus's tests make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, select, union_all

from jobstatus_server.state.sql import COUNTER, JOB


@dataclass(frozen=True)
class JobFilter:
    tenant: str
    kind: str
    statuses: tuple[int, ...] = ()  # empty: any status
    prefix: str = ""
    since: float | None = None  # creation time, POSIX seconds, inclusive
    until: float | None = None  # exclusive


@dataclass(frozen=True)
class JobPage:
    revision: int  # the store revision the page was read at
    rows: list[tuple[int, str, bytes]]  # (create_revision, job id, the job's bytes)


def _revision(conn: Connection) -> int:
    return int(
        conn.execute(select(COUNTER.c.value).where(COUNTER.c.name == "revision")).scalar_one()
    )


def _created_bound(conn: Connection, wanted: JobFilter, *, first: bool) -> int | None:
    """The first create_revision created at or after `since` (first), or the last one
    created before `until`; None when there is none."""
    query = select(JOB.c.create_revision).where(
        JOB.c.tenant == wanted.tenant, JOB.c.kind == wanted.kind
    )
    if first:
        query = query.where(JOB.c.create_time >= wanted.since).order_by(JOB.c.create_time)
    else:
        query = query.where(JOB.c.create_time < wanted.until).order_by(JOB.c.create_time.desc())
    found = conn.execute(query.limit(1)).scalar_one_or_none()
    return None if found is None else int(found)


def _base(wanted: JobFilter) -> Select[Any]:
    query = select(JOB.c.create_revision, JOB.c.job_id, JOB.c.data).where(
        JOB.c.tenant == wanted.tenant, JOB.c.kind == wanted.kind
    )
    if wanted.since is not None:
        query = query.where(JOB.c.create_time >= wanted.since)
    if wanted.until is not None:
        query = query.where(JOB.c.create_time < wanted.until)
    return query


def _rows(conn: Connection, query: Any) -> list[tuple[int, str, bytes]]:
    return [(int(r), str(j), bytes(d)) for r, j, d in conn.execute(query)]


def newest_first(conn: Connection, wanted: JobFilter, before: int | None, limit: int) -> JobPage:
    """Up to `limit` matching jobs created before revision `before` (None: any), newest
    first."""
    revision = _revision(conn)
    low, high = 0, before
    if wanted.since is not None:
        first = _created_bound(conn, wanted, first=True)
        if first is None:
            return JobPage(revision, [])
        low = first
    if wanted.until is not None:
        last = _created_bound(conn, wanted, first=False)
        if last is None:
            return JobPage(revision, [])
        high = last + 1 if high is None else min(high, last + 1)
    base = _base(wanted).where(JOB.c.create_revision >= low)
    if high is not None:
        base = base.where(JOB.c.create_revision < high)
    newest = JOB.c.create_revision.desc()
    if not wanted.statuses:
        return JobPage(revision, _rows(conn, base.order_by(newest).limit(limit)))
    branches = [
        base.where(JOB.c.status == status).order_by(newest).limit(limit).subquery().select()
        for status in wanted.statuses
    ]
    merged = union_all(*branches).subquery()
    query = select(merged).order_by(merged.c.create_revision.desc()).limit(limit)
    return JobPage(revision, _rows(conn, query))


def _after_prefix(prefix: str) -> str:
    """The least string greater than every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def by_id(conn: Connection, wanted: JobFilter, after: str | None, limit: int) -> JobPage:
    """Up to `limit` matching jobs whose id starts with the filter's prefix and comes
    after `after` (None: from the first), in id order."""
    revision = _revision(conn)
    prefix = wanted.prefix
    query = _base(wanted).where(JOB.c.job_id >= prefix, JOB.c.job_id < _after_prefix(prefix))
    if after is not None:
        query = query.where(JOB.c.job_id > after)
    if wanted.statuses:
        query = query.where(JOB.c.status.in_(wanted.statuses))
    rows = _rows(conn, query.order_by(JOB.c.job_id).limit(limit))
    return JobPage(revision, [row for row in rows if row[1].startswith(prefix)])
