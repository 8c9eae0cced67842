"""A watch's initial state, read in pages: the paged reader and its SQL.

A watch from revision 0 sends the state of every matching job, then SYNCED at a
revision R, after which the client's view equals the store's state at R. Over a
million jobs that state is never held at once: it is read in pages of `PAGE` jobs
in keyset order, by job id within (tenant, kind) (the job table's primary key), each
page one short read transaction that also reads the store's revision, so each page
is exact as of its own revision. Between pages the loop yields (each read runs on
the reader pool), so no other caller waits on a snapshot.

Pages read at different revisions are stitched together exactly, with no memory
but the last key sent. Page i covers the job ids after the last id of page i-1
(`after`) and is read at revision P_i (P_1 <= P_2 <= ...). The invariant after
page i: every job with an id up to page i's last id has been sent as of P_i.
To keep it, the read of page i also reads the changes in (P_{i-1}, P_i] of the
jobs with ids up to `after` (new jobs too) from the event log, in the same
transaction, and they are sent as STATE events, in revision order: the jobs after
`after` are in page i itself, as of P_i, and the jobs of later pages will be read
as of a later revision. So no change is lost and none is sent twice (a job may get
more than one STATE event, each a newer state of it). The last page (fewer than
`PAGE` jobs) covers every id after `after`: then every matching job has been sent
as of P_n, and SYNCED P_n follows; the stream goes on with the changes after P_n.

The comparison `job_id <= after` is the database's own (a column of the catch-up
query, not a test in Python), so it agrees with the order of the page query under
any collation; and it is a column, not a condition, so the catch-up query keeps the
event log's (kind, revision) index. The changes of one gap are read in batches of
`batch`; more than a batch in one gap is read on in further short reads. A gap that
reaches past the kept history (compacted while one page was sent) ends the watch
with RESOURCE_EXHAUSTED and resume revision 0: the client reads the state again.

A watch of given ids (at most 1000) reads them in one page: the page's limit is the
number of ids, so it is exact as of one revision, as before.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, case, select

from jobstatus_server.contract.errors import ResourceExhausted
from jobstatus_server.state.changes import Change, change_from_row
from jobstatus_server.state.sql import COUNTER, EVENT, JOB

T = TypeVar("T")
Read = Callable[[Callable[[Connection], T]], Awaitable[T]]

PAGE = 256  # jobs per page of an initial state


@dataclass(frozen=True)
class Position:
    """The store's revision and compaction point, read with a page."""

    revision: int
    compacted: int


@dataclass(frozen=True)
class Page:
    """One page of jobs, and the changes of the earlier pages' jobs since the last page."""

    at: Position
    jobs: list[Change]  # in job id order
    changes: list[Change]  # earlier pages' jobs changed after the last page's revision
    changes_to: int  # the revision up to which the changes were read (at.revision: all)


def read_position(conn: Connection) -> Position:
    """The store's revision and compaction point (in the read's transaction)."""
    counters = {
        str(name): int(value)
        for name, value in conn.execute(select(COUNTER.c.name, COUNTER.c.value))
    }
    return Position(counters["revision"], counters["compacted"])


def page_query(kind: str, tenant: str, ids: Sequence[str], after: str | None, limit: int) -> Any:
    """Up to `limit` jobs with ids after `after`, in id order (the primary key's)."""
    query = select(
        JOB.c.revision, JOB.c.tenant, JOB.c.kind, JOB.c.job_id, JOB.c.status, JOB.c.data
    ).where(JOB.c.tenant == tenant, JOB.c.kind == kind)
    if after is not None:
        query = query.where(JOB.c.job_id > after)
    if ids:
        query = query.where(JOB.c.job_id.in_(ids))
    return query.order_by(JOB.c.job_id).limit(limit)


def catch_up_query(
    kind: str, tenant: str, ids: Sequence[str], upto: str, after: int, upper: int, batch: int
) -> Any:
    """The changes with revision in (after, upper], oldest first; the job's data only for
    jobs with ids up to `upto` (by the database's order), NULL for the others."""
    query = select(
        EVENT.c.revision,
        EVENT.c.tenant,
        EVENT.c.kind,
        EVENT.c.job_id,
        EVENT.c.status,
        case((EVENT.c.job_id <= upto, EVENT.c.data), else_=None).label("data"),
    ).where(
        EVENT.c.kind == kind,
        EVENT.c.tenant == tenant,
        EVENT.c.revision > after,
        EVENT.c.revision <= upper,
    )
    if ids:
        query = query.where(EVENT.c.job_id.in_(ids))
    return query.order_by(EVENT.c.revision).limit(batch)


def _changes(
    conn: Connection,
    kind: str,
    tenant: str,
    ids: Sequence[str],
    upto: str,
    after: int,
    upper: int,
    batch: int,
) -> tuple[list[Change], int]:
    """The changes in (after, upper] of jobs with ids up to `upto`, and the revision up
    to which they were read (`upper` unless the batch filled)."""
    compacted = int(
        conn.execute(select(COUNTER.c.value).where(COUNTER.c.name == "compacted")).scalar_one()
    )
    if compacted > after:
        raise ResourceExhausted(
            f"the watch's initial state fell behind the kept history (changes after "
            f"revision {after} are compacted) while it was sent; watch again from revision 0",
            reason="WATCHER_TOO_SLOW",
            metadata={"resume_revision": "0"},
        )
    rows = list(conn.execute(catch_up_query(kind, tenant, ids, upto, after, upper, batch)))
    read_to = int(rows[-1].revision) if len(rows) == batch else upper
    return [change_from_row(row) for row in rows if row.data is not None], read_to


class InitialState:
    """The pages of one watch's initial state: `first()` reads the first page (the
    watch's checks need its position), then `batches()` yields the jobs to send as
    STATE events, a page or a batch of changes at a time; when it ends, every
    matching job has been yielded as of `revision`."""

    def __init__(
        self,
        read: Read[Any],
        kind: str,
        tenant: str,
        ids: Sequence[str],
        *,
        page: int = PAGE,
        batch: int = 512,
    ) -> None:
        self._read = read
        self.kind, self.tenant, self.ids = kind, tenant, list(ids)
        # A watch of given ids reads them all in one page, at one revision.
        self.page = max(page, len(self.ids))
        self.batch = batch
        self.after: str | None = None  # the last job id read: all up to it are as of `revision`
        self.revision = 0
        self.done = False
        self._first: list[Change] = []

    async def first(self) -> Page:
        """Read the first page; `batches()` yields its jobs first."""
        page: Page = await self._read(self._read_page)
        self._first = page.jobs
        self._advance(page)
        return page

    async def batches(self) -> AsyncGenerator[list[Change], None]:
        first, self._first = self._first, []
        yield first
        del first
        while not self.done:
            upto = self.after
            assert upto is not None
            page: Page = await self._read(self._read_page)
            upper = page.at.revision
            yield page.changes
            read_to = page.changes_to
            while read_to < upper:
                more, read_to = await self._read(
                    partial(
                        _changes,
                        kind=self.kind,
                        tenant=self.tenant,
                        ids=self.ids,
                        upto=upto,
                        after=read_to,
                        upper=upper,
                        batch=self.batch,
                    )
                )
                yield more
            self._advance(page)
            jobs = page.jobs
            del page  # one page held at a time: none while the next is read
            yield jobs
            del jobs

    def _read_page(self, conn: Connection) -> Page:
        at = read_position(conn)
        changes: list[Change] = []
        changes_to = at.revision
        if self.after is not None:
            changes, changes_to = _changes(
                conn,
                self.kind,
                self.tenant,
                self.ids,
                self.after,
                self.revision,
                at.revision,
                self.batch,
            )
        query = page_query(self.kind, self.tenant, self.ids, self.after, self.page)
        jobs = [change_from_row(row) for row in conn.execute(query)]
        return Page(at, jobs, changes, changes_to)

    def _advance(self, page: Page) -> None:
        jobs = page.jobs
        if len(jobs) < self.page:
            self.done = True
        else:
            self.after = jobs[-1].job_id
        self.revision = page.at.revision
