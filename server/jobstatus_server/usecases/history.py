"""A job's history: its kept changes, oldest first (gRPC Get*History, and HTTP in
http_api/history.py).

The history is the event log (store.py), so it reaches back as far as the log is
kept: compaction (--history-count, --history-age) removes old changes. A page says
where the kept history starts (`oldest_revision`) and whether the job's earliest
changes are gone (`truncated`). A page token whose next change may have been
compacted since it was issued fails with OUT_OF_RANGE instead of skipping
changes silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Generic

from google.protobuf import timestamp_pb2

from jobstatus_server.contract.errors import (
    InvalidArgument,
    OutOfRange,
    invalid,
)
from jobstatus_server.contract.kinds import Kind, M
from jobstatus_server.state.store import Store
from jobstatus_server.usecases.page_token import PageTokens

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_ID_LEN = 1024  # longer than any job id the contract allows


@dataclass(frozen=True)
class HistoryEntry(Generic[M]):
    revision: int
    time: float  # POSIX seconds
    job: M

    def timestamp(self) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromMicroseconds(round(self.time * 1e6))  # the store stamps microseconds
        return stamp


@dataclass(frozen=True)
class Page(Generic[M]):
    changes: list[HistoryEntry[M]]
    next_page_token: str
    oldest_revision: int
    truncated: bool


HISTORY_TOKENS = PageTokens(b"jobstatus.v1 history token")  # {"k", "j": the job's tag, "a"}


def _job_tag(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:16]


def encode_token(kind: Kind[Any], job_id: str, after: int) -> str:
    return HISTORY_TOKENS.encode(kind, {"j": _job_tag(job_id)}, after)


def decode_token(token: str, kind: Kind[Any], job_id: str) -> int:
    """Where the page of a history token starts; INVALID_ARGUMENT for any other token."""
    data = HISTORY_TOKENS.decode(token, kind)
    if data is None:
        raise invalid("page_token", "is not a page token of a history", "INVALID_PAGE_TOKEN")
    if data.get("j") != _job_tag(job_id):
        raise invalid("page_token", "was issued for another job", "INVALID_PAGE_TOKEN")
    return int(data["a"])


async def history(
    store: Store, kind: Kind[M], tenant: str, job_id: str, page_size: int, page_token: str
) -> Page[M]:
    """One page of the job's kept changes, oldest first."""
    if page_size < 0:
        raise invalid("page_size", "must be 0 or more")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    not_found = kind.not_found(job_id)
    if "\x00" in job_id or len(job_id) > MAX_ID_LEN:
        raise not_found  # no job has such an id (and no database is asked for one)
    try:
        after = decode_token(page_token, kind, job_id) if page_token else 0
    except InvalidArgument:
        # An unknown job is NOT_FOUND whatever the token: only a known job's token is wrong.
        if (await store.history(kind, tenant, job_id, 0, 1)).created is None:
            raise not_found from None
        raise
    found = await store.history(kind, tenant, job_id, after, size + 1)
    if found.created is None:
        raise not_found
    oldest = found.compacted + 1
    if after and after < found.compacted:
        raise OutOfRange(
            f"the history after revision {after} was compacted meanwhile; the kept history "
            f"starts at revision {oldest}: page again without a page token",
            reason="REVISION_COMPACTED",
            metadata={"oldest_revision": str(oldest)},
        )
    rows = found.changes
    changes = [HistoryEntry(r, t, kind.message.FromString(d)) for r, t, d in rows[:size]]
    token = encode_token(kind, job_id, rows[size - 1][0]) if len(rows) > size else ""
    return Page(changes, token, oldest, found.created <= found.compacted)
