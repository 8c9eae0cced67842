"""The watch hub: tails the event log and fans changes out to watch streams.

The event log is the source of truth. The hub is only woken (by a local
commit, or by its poll for other writers) and then reads the committed events
after the last one it published, strictly in revision order, never past a
gap. Each live stream has a bounded queue; a stream whose queue is full is
cut off with RESOURCE_EXHAUSTED and its last sent revision, so a stalled
consumer never grows server memory and never slows the others.

A stream starts by catching up from the ring of recent events, or from the
event log when it is further behind, writing straight to the client (so
catch-up is paced by the client), and joins the live fan-out once it has
reached the hub's revision. Nothing is ever sent twice or out of order:
the cursor only moves forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from jobstatus.v1 import watch_pb2
from jobstatus_server.errors import (
    JobStatusError,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from jobstatus_server.kinds import Kind
from jobstatus_server.metrics import HUB_REVISION, WATCH_CUTOFFS, WATCH_STREAMS
from jobstatus_server.store import Change, Snapshot, Store

log = logging.getLogger(__name__)

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT

# Builds the kind's response message: (type, revision, job or None).
Respond = Callable[[int, int, Message | None], Message]


@dataclass
class WatchSettings:
    buffer: int = 1024  # events queued per live stream before it is cut off
    ring: int = 8192  # recent events kept in memory for catching up
    catch_up_batch: int = 512
    heartbeat: float = 15.0
    min_heartbeat: float = 0.5
    max_heartbeat: float = 300.0
    poll_interval: float = 1.0
    history_count: int = 100_000
    history_age: float = 24 * 3600.0


# Put in an idle live stream's queue when its heartbeat is due.
HEARTBEAT_DUE = Change(0, "", "", "", 0, b"")


@dataclass(eq=False, slots=True)
class Stream:
    """One open watch stream."""

    kind: Kind[Any]
    tenant: str
    ids: frozenset[str]
    task: asyncio.Task[Any]
    queue: asyncio.Queue[Change]
    heartbeat: float
    sent: int = 0  # the last revision written to the client
    floor: int = 0  # changes at or before this revision were covered by the catch-up
    ended: JobStatusError | None = None
    last_write: float = 0.0  # monotonic time of the last write
    timer: asyncio.TimerHandle | None = None
    live: bool = False  # caught up: in the hub's fan-out

    def arm(self) -> None:
        """Check for idleness when a heartbeat could next be due: one timer per
        heartbeat interval, nothing per event."""
        delay = max(0.0, self.last_write + self.heartbeat - time.monotonic())
        self.timer = asyncio.get_running_loop().call_later(delay, self._beat)

    def _beat(self) -> None:
        if time.monotonic() - self.last_write >= self.heartbeat * 0.999 and self.queue.empty():
            self.queue.put_nowait(HEARTBEAT_DUE)
            self.last_write = time.monotonic()
        self.arm()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def matches(self, change: Change) -> bool:
        return (
            change.kind == self.kind.name
            and change.tenant == self.tenant
            and (not self.ids or change.job_id in self.ids)
        )

    def end(self, error: JobStatusError) -> None:
        """End the stream from outside: its task raises `error` to the client."""
        if self.ended is None:
            self.ended = error
            WATCH_CUTOFFS.labels(error.reason).inc()
            self.task.cancel()


@dataclass
class Hub:
    store: Store
    settings: WatchSettings = field(default_factory=WatchSettings)
    revision: int = 0  # the last revision published
    compacted: int = 0
    ring: deque[Change] = field(default_factory=deque)
    streams: set[Stream] = field(default_factory=set)
    _by_kind: dict[tuple[str, str], set[Stream]] = field(default_factory=lambda: defaultdict(set))
    _by_job: dict[tuple[str, str, str], set[Stream]] = field(
        default_factory=lambda: defaultdict(set)
    )
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False
    # Called with every batch of changes before any stream sees them (the view, view.py).
    listeners: list[Callable[[Sequence[Change]], None]] = field(default_factory=list)

    async def start(self) -> None:
        self.ring = deque(maxlen=self.settings.ring)
        self.revision = self.store.revision
        self.compacted = await self.store.compacted()
        self.store.on_commit(lambda revision: self._wake.set())
        self._task = asyncio.create_task(self._run(), name="jobstatus-hub")

    async def close(self, resume_hint: str = "the server is shutting down") -> None:
        """End every stream with UNAVAILABLE and its resume revision; stop tailing."""
        self._closing = True
        for stream in list(self.streams):
            stream.end(self._unavailable(stream, resume_hint))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def _unavailable(stream: Stream, why: str) -> Unavailable:
        return Unavailable(
            f"{why}; resume the watch from revision {stream.sent}",
            reason="WATCH_INTERRUPTED",
            metadata={"resume_revision": str(stream.sent)},
        )

    # --- tailing the log --------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()
            try:
                await self._tail()
            except JobStatusError as error:
                log.warning("hub could not read the event log: %s", error)
            except Exception:
                log.exception("hub failed to tail the event log")

    async def _tail(self) -> None:
        while True:
            changes = await self.store.events_after(self.revision, self.settings.catch_up_batch)
            if not changes:
                return
            contiguous = list(
                itertools.takewhile(
                    lambda pair: pair[1].revision == self.revision + 1 + pair[0],
                    enumerate(changes),
                )
            )
            if not contiguous:
                compacted = await self.store.compacted()
                if compacted > self.revision:
                    # This hub fell behind the kept history (its database was away while
                    # others wrote and compacted): the missing changes are gone for good.
                    self._skip_to(compacted)
                    continue
                # The next revision is not visible yet: never publish past a gap.
                await asyncio.sleep(0.005)
                continue
            self._publish([change for _, change in contiguous])
            if len(contiguous) < len(changes):
                await asyncio.sleep(0.005)
            elif len(changes) < self.settings.catch_up_batch:
                return

    def _skip_to(self, compacted: int) -> None:
        """Jump over compacted history: every live stream missed changes it can never
        get, so it ends with OUT_OF_RANGE and its client starts over from the state."""
        log.warning(
            "hub at revision %d is behind the history (compacted to %d)", self.revision, compacted
        )
        for stream in list(self.streams):
            if stream.live:
                self._detach(stream)
                stream.end(_out_of_range(stream.sent, compacted))
        self.ring.clear()
        self.revision = compacted
        self.compacted = max(self.compacted, compacted)

    def _publish(self, changes: Sequence[Change]) -> None:
        """Publish in order: no await here, so streams see a consistent hub."""
        for listener in self.listeners:
            listener(changes)
        for change in changes:
            self.ring.append(change)
            self.revision = change.revision
            targets = self._by_kind.get((change.kind, change.tenant), set()) | self._by_job.get(
                (change.kind, change.tenant, change.job_id), set()
            )
            HUB_REVISION.set(change.revision)
            for stream in targets:
                try:
                    stream.queue.put_nowait(change)
                except asyncio.QueueFull:
                    self._detach(stream)
                    stream.end(
                        ResourceExhausted(
                            f"the watcher fell more than {self.settings.buffer} events behind; "
                            f"resume from revision {stream.sent}",
                            reason="WATCHER_TOO_SLOW",
                            metadata={"resume_revision": str(stream.sent)},
                        )
                    )

    # --- streams ------------------------------------------------------------------

    def _attach(self, stream: Stream) -> None:
        if stream.ids:
            for job_id in stream.ids:
                self._by_job[(stream.kind.name, stream.tenant, job_id)].add(stream)
        else:
            self._by_kind[(stream.kind.name, stream.tenant)].add(stream)

    def _detach(self, stream: Stream) -> None:
        keys: list[Any]
        if stream.ids:
            keys = [(stream.kind.name, stream.tenant, job_id) for job_id in stream.ids]
            index: dict[Any, set[Stream]] = self._by_job
        else:
            keys = [(stream.kind.name, stream.tenant)]
            index = self._by_kind
        for key in keys:
            members = index.get(key)
            if members is not None:
                members.discard(stream)
                if not members:
                    del index[key]

    async def _catch_up(self, stream: Stream, cursor: int) -> tuple[list[Change], int]:
        """The changes for `stream` after `cursor`, in order, and the revision they reach."""
        oldest_in_ring = self.ring[0].revision if self.ring else self.revision + 1
        if cursor + 1 >= oldest_in_ring:
            start = cursor + 1 - oldest_in_ring
            found = [c for c in itertools.islice(self.ring, start, None) if stream.matches(c)]
            return found, self.revision
        upper = self.revision
        found = await self.store.events_after(
            cursor,
            self.settings.catch_up_batch,
            upper=upper,
            kind=stream.kind.name,
            tenant=stream.tenant,
            ids=sorted(stream.ids),
        )
        compacted = await self.store.compacted()
        self.compacted = max(self.compacted, compacted)
        if cursor < compacted:
            raise _out_of_range(cursor, compacted)
        if len(found) == self.settings.catch_up_batch:
            return found, found[-1].revision
        return found, upper

    async def watch(
        self,
        kind: Kind[Any],
        tenant: str,
        ids: Sequence[str],
        start_revision: int,
        until_settled: bool,
        heartbeat: float,
        send: Callable[[Message], Any],
        respond: Respond,
    ) -> None:
        """Serve one watch stream until the client leaves, it settles, or it is ended."""
        if self._closing:
            raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
        task = asyncio.current_task()
        assert task is not None
        heartbeat = min(max(heartbeat, self.settings.min_heartbeat), self.settings.max_heartbeat)
        stream = Stream(
            kind,
            tenant,
            frozenset(ids),
            task,
            asyncio.Queue(maxsize=self.settings.buffer),
            heartbeat,
        )
        self.streams.add(stream)
        WATCH_STREAMS.inc()
        try:
            await self._serve(stream, start_revision, until_settled, send, respond)
        except asyncio.CancelledError:
            if stream.ended is None:
                raise
            task.uncancel()
            raise stream.ended from None
        finally:
            stream.disarm()
            self._detach(stream)
            self.streams.discard(stream)
            WATCH_STREAMS.dec()

    async def _serve(
        self,
        stream: Stream,
        start_revision: int,
        until_settled: bool,
        send: Callable[[Message], Any],
        respond: Respond,
    ) -> None:
        kind = stream.kind
        if start_revision and not until_settled and start_revision <= self.revision:
            # A resume the hub can answer alone: no read of the database.
            snapshot = Snapshot(self.revision, self.compacted, [])
        else:
            snapshot = await self.store.snapshot(
                kind.name,
                stream.tenant,
                sorted(stream.ids),
                with_jobs=start_revision == 0 or until_settled,
            )
        if start_revision > snapshot.revision:
            raise OutOfRange(
                f"revision {start_revision} is ahead of the store (at {snapshot.revision})",
                reason="REVISION_AHEAD",
                metadata={"current_revision": str(snapshot.revision)},
            )
        if start_revision and start_revision < snapshot.compacted:
            raise _out_of_range(start_revision, snapshot.compacted)
        if until_settled and stream.ids:
            missing = sorted(stream.ids - {job.job_id for job in snapshot.jobs})
            if missing:
                # Waiting for a job that does not exist would never end.
                raise NotFound(
                    f"no {kind.display} with {kind.id_field} {', '.join(map(repr, missing))}",
                    reason=kind.not_found_reason,
                    metadata={kind.id_field: ",".join(missing)},
                )
        # The settled state of each watched job as of the stream's position.
        settled: dict[str, bool] = {job_id: False for job_id in stream.ids}
        cursor = start_revision
        if start_revision == 0:
            for job in snapshot.jobs:
                # A send that has begun reaches the client even if the stream is ended
                # while it waits: count it as sent before it starts (the resume point).
                stream.sent = max(stream.sent, job.revision)
                await send(respond(STATE, job.revision, _job(kind, job)))
                settled[job.job_id] = job.status in kind.settled
            cursor = snapshot.revision
            stream.sent = cursor
            await send(respond(SYNCED, cursor, None))
        else:
            for job in snapshot.jobs:
                # A job changed after the start is unsettled until its events arrive.
                settled[job.job_id] = job.revision <= start_revision and job.status in kind.settled
            stream.sent = start_revision
        if until_settled and settled and all(settled.values()):
            return
        # Catch up with the hub, then join the live fan-out (no await in between).
        while cursor < self.revision:
            changes, reached = await self._catch_up(stream, cursor)
            for change in changes:
                if await self._deliver(stream, change, settled, until_settled, send, respond):
                    return
            cursor = reached
        stream.floor = cursor
        stream.live = True
        self._attach(stream)
        stream.last_write = time.monotonic()
        stream.arm()
        queue = stream.queue
        while True:
            change = await queue.get()
            if change is HEARTBEAT_DUE:
                if queue.empty():
                    # Nothing queued on a live stream: all up to the hub's revision is sent.
                    stream.sent = max(stream.sent, self.revision)
                    await send(respond(HEARTBEAT, stream.sent, None))
                continue
            if await self._deliver(stream, change, settled, until_settled, send, respond):
                return

    async def _deliver(
        self,
        stream: Stream,
        change: Change,
        settled: dict[str, bool],
        until_settled: bool,
        send: Callable[[Message], Any],
        respond: Respond,
    ) -> bool:
        """Send one change; True when the stream is done (every watched job settled)."""
        if change.revision <= stream.floor:
            return False
        kind = stream.kind
        message = change.cache.get(respond)
        if message is None:
            message = respond(CHANGE, change.revision, _job(kind, change))
            change.cache[respond] = message
        stream.sent = change.revision  # before the send: see _serve
        await send(message)
        stream.last_write = time.monotonic()
        settled[change.job_id] = change.status in kind.settled
        return until_settled and all(settled.values())


def _job(kind: Kind[Any], change: Change) -> Message:
    job: Message | None = change.cache.get(kind.name)
    if job is None:
        job = kind.message.FromString(change.data)
        change.cache[kind.name] = job
    return job


def _out_of_range(revision: int, compacted: int) -> OutOfRange:
    return OutOfRange(
        f"revision {revision} is older than the kept history, which starts after "
        f"revision {compacted}: read the current state and watch from there",
        reason="REVISION_COMPACTED",
        metadata={"oldest_revision": str(compacted + 1), "compact_revision": str(compacted)},
    )
