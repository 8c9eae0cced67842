"""The view: this process's memory of the current state of jobs.

Per job (kind, tenant, id) it keeps the latest committed state: its revision,
its serialized protobuf bytes, and the change's renderings (renderings.py: built
once per change when first asked, the parsed message, the Get response, the
documented JSON bodies and the ready HTTP answers). Get and
the documented REST paths answer from it with no thread hop and no SQL.

It is fed by the watch hub's change feed (`Hub._publish`), strictly in
revision order, before any stream sees the change. A read that finds no entry
reads the database once and fills the view; a fill never replaces a newer
revision than the one it read (a change applied while the read was in flight
wins).

Consistency, per process (and so per replica on PostgreSQL):

- read-your-writes: a read waits until the view has applied every revision
  this process committed before the read arrived;
- `min_revision`: a read waits until the view has applied that revision (the
  one a write returned, on any replica), bounded by the caller's deadline;
- monotonic per job: an answer never carries an older revision of a job than
  one this process already answered for it (entries only move forward; an
  evicted job is read again from the database, which is at least as new).

Memory is bounded by a budget in bytes (each entry's overhead and its renderings'
exact size, which grows as forms are built and is checked at the next change or
fill): settled jobs are evicted first, least
recently read first, then active ones, least recently read first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from jobstatus_server.contract.errors import JobStatusError
from jobstatus_server.contract.kinds import KINDS, Kind
from jobstatus_server.observability.metrics import (
    VIEW_BYTES,
    VIEW_EVICTIONS,
    VIEW_HITS,
    VIEW_JOBS,
    VIEW_MISSES,
    VIEW_REVISION,
)
from jobstatus_server.state.renderings import Renderings
from jobstatus_server.state.store import Change, KnownState, Store

Key = tuple[str, str, str]  # (kind, tenant, job id)
ENTRY_OVERHEAD = 200  # bytes an entry costs beyond its key's strings and its renderings
DEFAULT_BUDGET = 64 * 1024 * 1024
DEFAULT_WAIT = 5.0
_HITS = VIEW_HITS.labels()  # a hit is counted on every read: `+= 1`, no lock


@dataclass
class DeadlineExceeded(JobStatusError):
    """The view did not reach the revision a read needs before the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


@dataclass(eq=False, slots=True)
class Entry:
    """One job's latest state known to the view."""

    revision: int
    status: int
    data: bytes  # the job's serialized protobuf message
    settled: bool
    renderings: Renderings  # every form the change is sent in (renderings.py)
    size: int = 0  # what the entry costs beyond its renderings' size


@dataclass(slots=True)
class _Fill:
    seen: int = 0  # the newest revision of the job applied while a read was in flight
    readers: int = 0


@dataclass
class View:
    store: Store
    budget: int = DEFAULT_BUDGET
    wait: float = DEFAULT_WAIT  # the longest a read without a deadline waits for the view
    revision: int = 0  # every change up to this revision is applied
    size: int = 0
    _active: OrderedDict[Key, Entry] = field(default_factory=OrderedDict)
    _settled: OrderedDict[Key, Entry] = field(default_factory=OrderedDict)
    _fills: dict[Key, _Fill] = field(default_factory=dict)
    _waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def start(self, revision: int) -> None:
        """Begin at `revision` (the hub's): later changes arrive through `apply`."""
        self.revision = revision
        VIEW_REVISION.set(revision)
        VIEW_JOBS.set_function(lambda: len(self._active) + len(self._settled))
        VIEW_BYTES.set_function(lambda: self.size)

    # --- the change feed ----------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply committed changes, in revision order (called by the hub before fan-out)."""
        for change in changes:
            revision = change.revision
            if revision <= self.revision:
                continue
            if revision != self.revision + 1:
                # The feed jumped (compacted history was skipped): what the view holds
                # may have missed changes, so it forgets everything.
                self.clear()
            self.revision = revision
            key = (change.kind, change.tenant, change.job_id)
            fill = self._fills.get(key)
            if fill is not None:
                fill.seen = revision
            kind = KINDS.get(change.kind)
            if kind is None:
                continue
            current = self._active.get(key) or self._settled.get(key)
            if current is not None and current.revision >= revision:
                continue
            if change.deleted:  # the retention policy deleted the job: it is unknown now
                if current is not None:
                    (self._settled if current.settled else self._active).pop(key, None)
                    self._forget(current)
                continue
            self._put(
                key,
                Entry(
                    revision,
                    change.status,
                    change.data,
                    change.status in kind.settled,
                    change.renderings,
                ),
                current,
            )
        VIEW_REVISION.set(self.revision)
        self._evict()
        self._wake()

    def clear(self) -> None:
        for queue in (self._active, self._settled):
            for entry in queue.values():
                entry.renderings.account = None
        self._active.clear()
        self._settled.clear()
        self.size = 0

    def _put(self, key: Key, entry: Entry, current: Entry | None) -> None:
        if current is not None:
            (self._settled if current.settled else self._active).pop(key, None)
            self._forget(current)
        # The entry and its key, and its renderings' exact bytes: forms built later add
        # to the view's size as they are built (Renderings.account).
        entry.size = ENTRY_OVERHEAD + len(key[1]) + len(key[2])
        (self._settled if entry.settled else self._active)[key] = entry
        renderings = entry.renderings
        renderings.account = self
        self.size += entry.size + renderings.size

    def _forget(self, entry: Entry) -> None:
        renderings = entry.renderings
        renderings.account = None
        self.size -= entry.size + renderings.size

    def _evict(self) -> None:
        while self.size > self.budget:
            for queue in (self._settled, self._active):
                # An entry read from the database ahead of the feed stays until the feed
                # has caught up with it: dropped earlier, the feed's older change of the
                # job would take its place and a later read would go back in time.
                victim = next((k for k, e in queue.items() if e.revision <= self.revision), None)
                if victim is not None:
                    break
            else:
                return  # only entries ahead of the feed: evicted once it catches up
            self._forget(queue.pop(victim))
            VIEW_EVICTIONS.inc()

    # --- waiting for a revision ---------------------------------------------------

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.revision:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    async def reach(self, revision: int, remaining: float | None) -> None:
        """Wait until the view has applied `revision`; DeadlineExceeded after `remaining`
        seconds (the view's own bound when None)."""
        if self.revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._order), future))
        limit = self.wait if remaining is None else max(0.0, remaining)
        try:
            await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise DeadlineExceeded(
                f"this server has not yet seen revision {revision} (it is at {self.revision})",
                reason="REVISION_NOT_REACHED",
                metadata={"revision": str(self.revision), "min_revision": str(revision)},
            ) from None
        finally:
            if not future.done():
                future.cancel()
            # Drop cancelled waiters from the top, so timed-out reads leave nothing behind.
            while self._waiters and self._waiters[0][2].done():
                heapq.heappop(self._waiters)

    # --- reading ------------------------------------------------------------------

    def lookup(self, key: Key) -> Entry | None:
        """The entry for `key`, marked as read; None when the view does not hold it."""
        entry = self._active.get(key)
        if entry is not None:
            self._active.move_to_end(key)
            return entry
        entry = self._settled.get(key)
        if entry is not None:
            self._settled.move_to_end(key)
        return entry

    def known(self, keys: Sequence[tuple[str, str, str]]) -> KnownState | None:
        """For Store.known: the revision the view is complete up to, and the bytes of each
        of `keys` (tenant, kind, job id) as of that revision; None when it lacks one."""
        revision = self.revision
        loaded = {}
        for key in keys:
            tenant, kind, job_id = key
            entry = self._active.get((kind, tenant, job_id)) or self._settled.get(
                (kind, tenant, job_id)
            )
            if entry is None or entry.revision > revision:
                return None
            loaded[key] = entry.data
        return revision, loaded

    async def get(
        self,
        kind: Kind[Any],
        tenant: str,
        job_id: str,
        min_revision: int = 0,
        remaining: float | None = None,
        possible: Callable[[], bool] | None = None,
    ) -> Entry | None:
        """The job's latest state (None: no such job), at least as new as this process's
        acknowledged writes and `min_revision`. On a miss, `possible()` False says no job
        can have this id: None without a database read."""
        need = self.store.revision
        if min_revision > need:
            need = min_revision
        if self.revision < need:
            await self.reach(need, remaining)
        key = (kind.name, tenant, job_id)
        entry = self.lookup(key)
        if entry is not None:
            _HITS.value += 1
            return entry
        VIEW_MISSES.inc()
        if possible is not None and not possible():
            return None
        return await self._fill(kind, key)

    async def require(
        self,
        kind: Kind[Any],
        tenant: str,
        job_id: str,
        min_revision: int = 0,
        remaining: float | None = None,
    ) -> Entry:
        """As `get`, but NotFound for a job that does not exist."""
        entry = await self.get(kind, tenant, job_id, min_revision, remaining)
        if entry is None:
            raise kind.not_found(job_id)
        return entry

    async def _fill(self, kind: Kind[Any], key: Key) -> Entry | None:
        while True:
            fill = self._fills.get(key)
            if fill is None:
                fill = self._fills[key] = _Fill()
            fill.readers += 1
            try:
                job = await self.store.get(kind, key[1], key[2])
            finally:
                fill.readers -= 1
                if not fill.readers:
                    del self._fills[key]
            found = 0 if job is None else int(job.revision)
            current = self.lookup(key)
            if current is not None and current.revision >= found:
                return current
            if fill.seen > found:
                # A newer change was applied while the read was in flight, and is no
                # longer held (evicted at once): read again.
                continue
            if job is None:
                return None
            status = kind.status_of(job)
            data = job.SerializeToString()
            entry = Entry(found, status, data, status in kind.settled, Renderings(data))
            self._put(key, entry, current)
            self._evict()
            return entry
