"""The dashboard's pages of jobs: one kind of the caller's, filtered by status, "active
only" (not settled), id prefix and creation time, read page by page in keyset order
(state/job_pages.py serves each filter through an index). A page token carries the
filter it was made for and where the next page starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobstatus_server.contract.errors import invalid
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.state.job_pages import JobFilter, by_id, newest_first
from jobstatus_server.state.store import Store
from jobstatus_server.usecases.counts import counted_statuses
from jobstatus_server.usecases.page_token import PageTokens

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
PAGE_TOKENS = PageTokens(b"jobstatus dashboard page token")
# {"k", "s": statuses, "p": prefix, "f": since, "u": until, "a": the last create_revision
# (newest first), "i": the last id (by id)}


@dataclass(frozen=True)
class PageRequest:
    kind: Kind[Any]
    tenant: str
    statuses: tuple[int, ...] = ()  # empty: any
    active: bool = True  # only jobs not settled
    prefix: str = ""
    since: float | None = None
    until: float | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class JobsPage:
    revision: int  # the store revision the page was read at: watch its jobs from there
    jobs: list[Any]  # the kind's messages
    next_page_token: str  # empty on the last page


def _statuses(asked: PageRequest) -> tuple[int, ...] | None:
    """The statuses to list (empty: any); None when no status can match."""
    statuses = asked.statuses
    if not asked.active:
        return statuses
    active = tuple(s for s in counted_statuses(asked.kind) if s not in asked.kind.settled)
    chosen = tuple(s for s in (statuses or active) if s in active)
    return chosen or None


async def jobs_page(store: Store, asked: PageRequest) -> JobsPage:
    kind = asked.kind
    size = min(asked.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    statuses = _statuses(asked)
    fields = {
        "s": sorted(statuses or ()),
        "p": asked.prefix,
        "f": asked.since,
        "u": asked.until,
    }
    after_revision: int | None = None
    after_id: str | None = None
    if asked.page_token:
        bound = PAGE_TOKENS.decode(asked.page_token, kind)
        if bound is None or any(bound.get(name) != value for name, value in fields.items()):
            raise invalid("page_token", "is not a page token of this list and filter")
        after_revision, after_id = bound["a"], bound.get("i")
    # One more than a page: whether there is a next one. None of them when no status
    # can match (the page still says the revision it was read at).
    limit = 0 if statuses is None else size + 1
    wanted = JobFilter(
        asked.tenant, kind.name, statuses or (), asked.prefix, asked.since, asked.until
    )
    if asked.prefix:
        page = await store.read(lambda conn: by_id(conn, wanted, after_id, limit))
    else:
        page = await store.read(lambda conn: newest_first(conn, wanted, after_revision, limit))
    rows = page.rows[:size]
    token = ""
    if len(page.rows) > size:
        last_revision, last_id, _ = rows[-1]
        more = {"i": last_id} if asked.prefix else {}
        token = PAGE_TOKENS.encode(kind, {**fields, **more}, last_revision)
    return JobsPage(page.revision, [kind.message.FromString(data) for _, _, data in rows], token)
