"""The watch hub: publishes committed changes in revision order and fans them out.

Changes reach the hub through one door, `Hub._publish`, strictly in revision order
and never past a gap. This process's commits are handed over by the store's writer
as they commit (no read-back of the event log); other replicas' commits, and any gap
between ours, are read from the event log when a NOTIFY (or the poll) wakes the hub.

Every published change goes into one shared ring of recent changes. A change
reaches only the streams that match it: an index by (kind, tenant) for streams of
all jobs and by (kind, tenant, job id) for streams of given jobs. A stream holds at
most one change of its own (a reference, no copy); when more arrive before it has
written that one, it is *lagging* and reads on from the shared ring by its cursor
(or from the event log, when the ring no longer reaches back that far). A stream
that falls more than `buffer` changes behind is cut off with RESOURCE_EXHAUSTED and
the last revision it sent, so a stalled consumer never costs memory and never slows
the others.

Each change is framed once for every stream of a form: a stream's transport gives
the hub its `Framing` (gRPC's serialized Watch*Response, built from the job's stored
bytes; SSE's event of the documented body), and the change's renderings keep each
frame (`Renderings.watch_frame`), so N streams cost one frame per change, not N.

The revision a stream names as its resume point (on a cut-off, a shutdown, a
heartbeat) is the last one whose send began: a send that has begun reaches the
client even if the stream is ended while it waits, so it counts as sent.

A watch from revision 0 first sends the matching jobs' current state, streamed in
pages (snapshot.py explains how pages read at different revisions add up to the
state at the revision SYNCED names): the server holds one page at a time, each send
awaits the transport's flow control, and the loop yields between pages. At most
`snapshot_streams` streams read and send an initial state at once; the others wait
their turn (a task each, nothing read), and get a heartbeat each interval meanwhile, at
their resume point: 0 for a watch from 0 (it has no state yet), R for one from R. A
stream stalled in its initial state is cut
off with RESOURCE_EXHAUSTED (WATCHER_TOO_SLOW) by the same rule as a live one, more
than `buffer` of its changes published while one of its events waits, or when one
event has waited `snapshot_stall` seconds (it holds one of the few slots). Until
SYNCED the client has no consistent state, so such a stream (and one ended by a
shutdown) names resume revision 0: the client reads the state again.

One concept past 400 lines: publishing, the ring, the index of streams, each
stream's cursor and the hand-over from a stream's paged initial state (snapshot.py
reads the pages; here they are sent in turns and joined to the feed at SYNCED) are one
ordering guarantee (every change once, in revision order, never past a gap); split
across modules, its invariants would be too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.errors import (
    JobStatusError,
    ResourceExhausted,
    Unavailable,
)
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.contract.watch_start import GRPC_RESUME, check_watch_start, revision_compacted
from jobstatus_server.observability.metrics import HUB_REVISION, WATCH_CUTOFFS, WATCH_STREAMS
from jobstatus_server.state.renderings import Framing
from jobstatus_server.state.store import Change, Store

log = logging.getLogger(__name__)

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
DELETED = watch_pb2.WATCH_EVENT_TYPE_DELETED


@dataclass
class WatchSettings:
    buffer: int = 1024  # changes a live stream may fall behind before it is cut off
    ring: int = 8192  # recent changes kept in memory for lagging streams
    catch_up_batch: int = 512
    heartbeat: float = 15.0
    min_heartbeat: float = 0.5
    max_heartbeat: float = 300.0
    poll_interval: float = 1.0
    history_count: int = 100_000
    history_age: float = 24 * 3600.0
    snapshot_streams: int = 4  # watches reading and sending their initial state at once
    snapshot_stall: float = 30.0  # seconds one event of an initial state may wait on its client


@dataclass(eq=False, slots=True)
class Stream:
    """One open watch stream."""

    kind: Kind[Any]
    tenant: str
    ids: frozenset[str]
    task: asyncio.Task[Any]
    heartbeat: float
    sent: int = 0  # the last revision whose send began: the resume point
    cursor: int = 0  # every matching change up to here is sent (or is `next`)
    joined: int = 0  # the hub's revision when the stream joined the fan-out
    backlog: int = 0  # changes published to it since it joined and not yet sent
    next: Change | None = None  # its one pending change while not lagging
    lagging: bool = False  # more than one pending: read on from the ring by cursor
    beat: bool = False  # a heartbeat is due
    waiter: asyncio.Future[None] | None = None
    ended: JobStatusError | None = None
    last_write: float = 0.0  # monotonic time of the last write
    timer: asyncio.TimerHandle | None = None
    live: bool = False  # caught up: in the hub's fan-out
    # While an event of its initial state waits on the client: since when (monotonic),
    # and how many matching changes were published meanwhile (the stall rules).
    sending_since: float = 0.0
    behind: int = 0

    def arm(self) -> None:
        """Check for idleness when a heartbeat could next be due: one timer per
        heartbeat interval, nothing per event."""
        delay = max(0.0, self.last_write + self.heartbeat - time.monotonic())
        self.timer = asyncio.get_running_loop().call_later(delay, self._beat)

    def _beat(self) -> None:
        if time.monotonic() - self.last_write >= self.heartbeat * 0.999:
            self.beat = True
            self.wake()
        self.arm()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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


class Settling:
    """Which jobs an until_settled watch still waits for: the named jobs, or (a watch of
    all jobs) every job seen so far that is not settled. It holds the unsettled jobs
    only, not every job seen."""

    __slots__ = ("seen", "unsettled")

    def __init__(self, ids: frozenset[str]) -> None:
        self.unsettled = set(ids)
        self.seen = bool(ids)

    def see(self, job_id: str, settled: bool) -> None:
        self.seen = True
        if settled:
            self.unsettled.discard(job_id)
        else:
            self.unsettled.add(job_id)

    @property
    def done(self) -> bool:
        return self.seen and not self.unsettled


@dataclass
class Hub:
    store: Store
    settings: WatchSettings = field(default_factory=WatchSettings)
    revision: int = 0  # the last revision published
    compacted: int = 0
    ring: deque[Change] = field(default_factory=deque)
    streams: set[Stream] = field(default_factory=set)
    _by_kind: dict[tuple[str, str], set[Stream]] = field(default_factory=dict)
    _by_job: dict[tuple[str, str, str], set[Stream]] = field(default_factory=dict)
    # Streams sending their initial state (at most `snapshot_streams`, by `_slots`).
    _opening: set[Stream] = field(default_factory=set)
    _slots: asyncio.Semaphore = field(init=False)
    # Local commit groups that arrived before the changes ahead of them were published.
    _held: deque[list[Change]] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False
    # Called with every batch of changes before any stream sees them (the view, view.py).
    listeners: list[Callable[[Sequence[Change]], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.settings.snapshot_streams)

    async def start(self) -> None:
        self.ring = deque(maxlen=self.settings.ring)
        self.revision = self.store.revision
        self.compacted = await self.store.compacted()
        self.store.on_changes(self._committed)
        self.store.on_commit(self._notified)
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

    # --- what comes in ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _committed(self, changes: list[Change]) -> None:
        """This process's commit group, in revision order, handed over by the writer."""
        if not changes or changes[-1].revision <= self.revision:
            return
        if changes[0].revision <= self.revision + 1:
            self._publish([c for c in changes if c.revision > self.revision])
            self._release()
        else:
            # Something committed before ours (another replica) is not published yet:
            # hold ours until the log has filled the gap; never publish past it.
            self._held.append(changes)
            self._wake.set()

    def _notified(self, revision: int) -> None:
        """A commit happened (another replica's, or ours): tail the log if we are behind."""
        if revision == 0 or revision > self.revision:
            self._wake.set()

    def _release(self) -> None:
        """Publish held local groups that now follow on."""
        while self._held:
            first = self._held[0]
            if first[-1].revision <= self.revision:
                self._held.popleft()
                continue
            if first[0].revision > self.revision + 1:
                return
            self._held.popleft()
            self._publish([c for c in first if c.revision > self.revision])

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
        """Read what others committed from the log, in order, up to the first gap."""
        while True:
            # Up to the first held local group: the log is read only for the gap before it.
            upper = self._held[0][0].revision - 1 if self._held else None
            if upper is not None and upper <= self.revision:
                self._release()
                continue
            after = self.revision
            changes = await self.store.events_after(
                after, self.settings.catch_up_batch, upper=upper
            )
            # Our own commits may have been published while the read was under way.
            fresh = [c for c in changes if c.revision > self.revision]
            if not changes:
                if self._held and await self._behind_compaction():
                    continue
                return
            if not fresh:
                continue
            contiguous: list[Change] = []
            for change in fresh:
                if change.revision != self.revision + 1 + len(contiguous):
                    break
                contiguous.append(change)
            if not contiguous:
                if await self._behind_compaction():
                    continue
                # The next revision is not visible yet: never publish past a gap.
                await asyncio.sleep(0.005)
                continue
            self._publish(contiguous)
            self._release()
            if len(contiguous) < len(fresh):
                await asyncio.sleep(0.005)
            elif len(changes) < self.settings.catch_up_batch and not self._held:
                return

    async def _behind_compaction(self) -> bool:
        compacted = await self.store.compacted()
        if compacted > self.revision:
            # This hub fell behind the kept history (its database was away while
            # others wrote and compacted): the missing changes are gone for good.
            self._skip_to(compacted)
            self._release()
            return True
        return False

    def _skip_to(self, compacted: int) -> None:
        """Jump over compacted history: every live stream missed changes it can never
        get, so it ends with OUT_OF_RANGE and its client starts over from the state."""
        log.warning(
            "hub at revision %d is behind the history (compacted to %d)", self.revision, compacted
        )
        for stream in list(self.streams):
            if stream.live:
                self._detach(stream)
                stream.end(revision_compacted(stream.sent, compacted))
        self.ring.clear()
        self.revision = compacted
        self.compacted = max(self.compacted, compacted)

    def _publish(self, changes: Sequence[Change]) -> None:
        """The single entry of changes, in revision order: no await here, so the
        listeners (the view) and the streams see a consistent hub."""
        for listener in self.listeners:
            listener(changes)
        buffer = self.settings.buffer
        by_kind, by_job = self._by_kind, self._by_job
        opening = self._opening
        cut: list[Stream] = []
        stalled: list[Stream] = []
        for change in changes:
            self.ring.append(change)
            for stream in opening:
                if stream.sending_since and stream.matches(change):
                    stream.behind += 1
                    if stream.behind > buffer:
                        stalled.append(stream)
            self.revision = change.revision
            of_kind = by_kind.get((change.kind, change.tenant))
            of_job = by_job.get((change.kind, change.tenant, change.job_id))
            for targets in (of_kind, of_job):
                if not targets:
                    continue
                for stream in targets:
                    stream.backlog += 1
                    if stream.backlog > buffer:
                        cut.append(stream)
                    elif stream.next is None and not stream.lagging:
                        stream.next = change
                    else:
                        stream.lagging = True
                    stream.wake()
        if changes:
            HUB_REVISION.set(self.revision)
        for stream in cut:
            if stream.live:
                self._detach(stream)
                stream.end(
                    ResourceExhausted(
                        f"the watcher fell more than {buffer} events behind; "
                        f"resume from revision {stream.sent}",
                        reason="WATCHER_TOO_SLOW",
                        metadata={"resume_revision": str(stream.sent)},
                    )
                )
        for stream in stalled:
            self._cut_opening(
                stream, f"more than {buffer} changes were committed while one event waited"
            )

    # --- streams ------------------------------------------------------------------

    def _attach(self, stream: Stream) -> None:
        stream.live = True
        stream.joined = self.revision
        if stream.ids:
            for job_id in stream.ids:
                self._by_job.setdefault((stream.kind.name, stream.tenant, job_id), set()).add(
                    stream
                )
        else:
            self._by_kind.setdefault((stream.kind.name, stream.tenant), set()).add(stream)

    def _detach(self, stream: Stream) -> None:
        if not stream.live:
            return
        stream.live = False
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

    async def _read_on(self, stream: Stream, upper: int) -> list[Change]:
        """The changes for `stream` after its cursor up to `upper` (at most a batch), in
        order, from the ring or, when the ring does not reach back so far, the log. The
        cursor moves to the last revision looked at."""
        cursor = stream.cursor
        ring = self.ring
        oldest = ring[0].revision if ring else self.revision + 1
        if cursor + 1 >= oldest:
            found: list[Change] = []
            batch = self.settings.catch_up_batch
            position = cursor + 1 - oldest
            end = min(upper, self.revision) - oldest + 1
            matches = stream.matches
            while position < end and len(found) < batch:
                change = ring[position]
                if matches(change):
                    found.append(change)
                position += 1
            stream.cursor = oldest + position - 1
            return found
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
            raise revision_compacted(cursor, compacted)
        stream.cursor = found[-1].revision if len(found) == self.settings.catch_up_batch else upper
        return found

    async def watch(
        self,
        kind: Kind[Any],
        tenant: str,
        ids: Sequence[str],
        start_revision: int,
        until_settled: bool,
        heartbeat: float,
        send: Callable[[bytes], Any],
        framing: Framing,
    ) -> int:
        """Serve one watch stream until the client leaves, it settles, or it is ended;
        `send` gets each event as `framing` frames it. Returns (when the watched jobs
        have settled) the revision up to which the stream has sent every change."""
        if self._closing:
            raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
        task = asyncio.current_task()
        assert task is not None
        heartbeat = min(max(heartbeat, self.settings.min_heartbeat), self.settings.max_heartbeat)
        stream = Stream(kind, tenant, frozenset(ids), task, heartbeat)
        self.streams.add(stream)
        WATCH_STREAMS.inc()
        try:
            settling = Settling(stream.ids) if until_settled else None
            await self._open(stream, start_revision, settling, send, framing)
            if settling is not None and settling.done:
                return stream.sent
            await self._follow(stream, settling, send, framing)
            return stream.sent
        except asyncio.CancelledError:
            if stream.ended is None:
                raise
            task.uncancel()
            raise stream.ended from None
        finally:
            stream.disarm()
            self._opening.discard(stream)
            self._detach(stream)
            self.streams.discard(stream)
            WATCH_STREAMS.dec()

    async def _open(
        self,
        stream: Stream,
        start_revision: int,
        settling: Settling | None,
        send: Callable[[bytes], Any],
        framing: Framing,
    ) -> None:
        """Check the request, send the initial state (start 0), and set the cursor; an
        until_settled watch learns which of its jobs are settled as of its position."""
        if start_revision == 0 or settling is not None:
            await self._initial_state(stream, start_revision, settling, send, framing)
            return
        current, compacted = self.revision, self.compacted
        if start_revision > current:
            # Ahead of this hub: is it ahead of the store too?
            position = await self.store.position()
            current, compacted = position.revision, position.compacted
        # A resume the hub can answer alone: no read of the jobs.
        check_watch_start(
            stream.kind, stream.ids, start_revision, False, current, compacted, (), GRPC_RESUME
        )
        stream.sent = stream.cursor = start_revision

    async def _initial_state(
        self,
        stream: Stream,
        start_revision: int,
        settling: Settling | None,
        send: Callable[[bytes], Any],
        framing: Framing,
    ) -> None:
        """Read the matching jobs in pages (snapshot.py) and, from revision 0, send each as
        a STATE event, then SYNCED at the revision the state is exact at; from a revision
        (until_settled), only note which jobs were settled then. At most
        `snapshot_streams` streams do so at once; the others wait their turn."""
        kind, settled_statuses = stream.kind, stream.kind.settled
        stream.sent = start_revision  # its resume point until SYNCED (0: no state yet)
        self._opening.add(stream)
        self._arm_stall(stream)
        try:
            async with self._turn(stream, start_revision, send, framing):
                state = self.store.initial_state(
                    kind.name, stream.tenant, sorted(stream.ids), batch=self.settings.catch_up_batch
                )
                first = await state.first()
                check_watch_start(
                    kind,
                    stream.ids,
                    start_revision,
                    settling is not None,
                    first.at.revision,
                    first.at.compacted,
                    (job.job_id for job in first.jobs),
                    GRPC_RESUME,
                )
                del first
                async with contextlib.aclosing(state.batches()) as batches:
                    async for jobs in batches:
                        # Each job goes as soon as it is sent: a stalled stream holds
                        # what is left of one page. Its frame is built for this stream
                        # alone, so it is not kept in the job's renderings.
                        jobs.reverse()
                        while jobs:
                            job = jobs.pop()
                            if start_revision:
                                # Changed after the start: unsettled until its events arrive.
                                if settling is not None:
                                    settling.see(
                                        job.job_id,
                                        job.revision <= start_revision
                                        and job.status in settled_statuses,
                                    )
                                continue
                            frame = framing.job_event(STATE, job.revision, job.renderings)
                            stream.behind = 0
                            stream.sending_since = time.monotonic()
                            await send(frame)
                            stream.sending_since = 0.0
                            if settling is not None:
                                settling.see(job.job_id, job.status in settled_statuses)
        finally:
            self._opening.discard(stream)
            stream.disarm()
        if start_revision:
            stream.sent = stream.cursor = start_revision
            return
        # Before SYNCED the client has no consistent state: a stream ended so far names
        # revision 0 as its resume point (it reads the state again).
        stream.sent = stream.cursor = state.revision
        await send(framing.marker(SYNCED, state.revision))

    @contextlib.asynccontextmanager
    async def _turn(
        self, stream: Stream, start_revision: int, send: Callable[[bytes], Any], framing: Framing
    ) -> AsyncIterator[None]:
        """Hold one of the `snapshot_streams` slots. While the stream waits for it, it gets
        a heartbeat each interval at its resume point (`start_revision`: from 0 it has no
        state yet), so that neither its client nor a proxy takes the quiet for a dead
        connection; a heartbeat waiting on the client counts for the stall rules."""
        slot = asyncio.ensure_future(self._slots.acquire())
        try:
            while not (await asyncio.wait({slot}, timeout=stream.heartbeat))[0]:
                stream.behind = 0
                stream.sending_since = time.monotonic()
                await send(framing.marker(HEARTBEAT, start_revision))
                stream.sending_since = 0.0
        except BaseException:
            if slot.done() and not slot.cancelled():
                self._slots.release()  # the slot came just as the stream ended
            else:
                slot.cancel()  # Semaphore.acquire gives back a slot it got meanwhile
            raise
        try:
            yield
        finally:
            self._slots.release()

    def _arm_stall(self, stream: Stream) -> None:
        """End a stream whose client has not taken an event of its initial state for
        `snapshot_stall` seconds: it holds one of the few `snapshot_streams` slots."""
        budget = self.settings.snapshot_stall
        loop = asyncio.get_running_loop()

        def check() -> None:
            since = stream.sending_since
            now = time.monotonic()
            if since and now - since >= budget:
                self._cut_opening(stream, f"its client took no event for {budget:g} s")
                return
            delay = since + budget - now if since else budget / 2
            stream.timer = loop.call_later(delay, check)

        stream.timer = loop.call_later(budget / 2, check)

    def _cut_opening(self, stream: Stream, why: str) -> None:
        """Cut off a stream stalled in its initial state: it resumes from revision 0."""
        if stream not in self._opening:
            return
        self._opening.discard(stream)
        stream.end(
            ResourceExhausted(
                f"the watcher stopped reading its initial state ({why}); "
                f"watch again from revision {stream.sent}",
                reason="WATCHER_TOO_SLOW",
                metadata={"resume_revision": str(stream.sent)},
            )
        )

    async def _follow(
        self,
        stream: Stream,
        settling: Settling | None,
        send: Callable[[bytes], Any],
        framing: Framing,
    ) -> None:
        """Catch up by cursor, join the fan-out, and send what comes until the end."""
        settled_statuses = stream.kind.settled
        loop = asyncio.get_running_loop()
        while True:
            change = stream.next
            pending: Sequence[Change]
            if change is not None:
                stream.next = None
                stream.cursor = change.revision
                pending = (change,)
            elif stream.lagging or (not stream.live and stream.cursor < self.revision):
                pending = await self._read_on(stream, self.revision)
                if stream.cursor >= self.revision:
                    stream.lagging = False
            elif not stream.live:
                # Caught up: join the fan-out (no await since the cursor reached the hub).
                self._attach(stream)
                stream.last_write = time.monotonic()
                stream.arm()
                continue
            else:
                if stream.beat:
                    stream.beat = False
                    # Nothing pending on a live stream: all up to the hub's revision is sent.
                    stream.sent = max(stream.sent, self.revision)
                    stream.cursor = max(stream.cursor, self.revision)
                    await send(framing.marker(HEARTBEAT, stream.sent))
                    stream.last_write = time.monotonic()
                    continue
                waiter = stream.waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    stream.waiter = None
                continue
            for change in pending:
                if stream.live and change.revision > stream.joined:
                    stream.backlog -= 1
                if change.revision <= stream.sent:
                    continue  # covered by the initial state
                event = DELETED if change.deleted else CHANGE
                frame = change.renderings.watch_frame(framing, event, change.revision)
                stream.sent = change.revision  # before the send (the module's docstring)
                await send(frame)
                stream.last_write = time.monotonic()
                if settling is not None:
                    settling.see(change.job_id, change.deleted or change.status in settled_statuses)
                    if settling.done:
                        return
