"""Watch events, and the resume logic that the sync and the async client share.

WatchResumer is a pure state machine: it is told each response's type and
revision and each failure's status code, and it says what to yield, which
start_revision the next call uses and how long to wait before it. It does no
I/O and no sleeping, so the clients only drive it and the tests check it alone.
WatchCalls wraps it for one watch of one kind: the request and call options of
each (re)connect, the event of each response, the retry of each failure; the
sync and the async client's loops only do the I/O around it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from jobstatus.errors import JobStatusError
from jobstatus.kinds import Kind, Seconds, Status
from jobstatus.options import CallOptions, Deadline, Session
from jobstatus.v1 import watch_pb2

M = TypeVar("M", bound=Message)


class EventType(enum.Enum):
    """What a WatchEvent carries: the server's four event types, and RESYNC."""

    STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
    SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
    CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
    HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
    # The job was deleted by the server's retention policy; `job` is its last state.
    DELETED = watch_pb2.WATCH_EVENT_TYPE_DELETED
    # Client-side only: forget what the watch told you so far; the current state
    # (STATE events, then SYNCED) follows. Sent when the history the watch
    # would resume from is gone (OUT_OF_RANGE), or when a stream broke in the
    # middle of its initial state.
    RESYNC = -1


@dataclass(frozen=True)
class WatchEvent(Generic[M]):
    """One event of a watch. `job` and `status` (the job's Status, printed as its name)
    are set for STATE, CHANGE and DELETED (the job's last state); RESYNC has revision 0."""

    type: EventType
    revision: int
    job: M | None = None
    status: Status | None = None


# Failures after which a watch reconnects: the server going away or draining
# (UNAVAILABLE), a slow consumer cut off (RESOURCE_EXHAUSTED), a stream reset
# by a proxy or the transport (INTERNAL, UNKNOWN), a stream cancelled by the
# server or the transport (CANCELLED; the caller's own cancellation never
# arrives as a status).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass
class Backoff:
    """Exponential backoff with jitter: a delay in [ceiling/2, ceiling], the ceiling doubling."""

    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier**self.attempt)
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class Retry:
    """Reconnect after `delay` seconds; first yield a RESYNC event when `resync`."""

    delay: float
    resync: bool


class WatchResumer:
    """Where a watch stands, and what to do with each event and each failure.

    - `start_revision` is what the next call asks for: the last revision
      received once the initial state is complete (SYNCED), else 0.
    - `receive()` says which EventType to yield for a response, or None to drop
      it: a CHANGE at or below the last yielded CHANGE revision is a repeat, a
      HEARTBEAT below it is stale, a second SYNCED is a repeat. STATE events of
      an initial state are always yielded.
    - `fail()` says whether and how to reconnect, or None to raise.
    """

    def __init__(self, start_revision: int = 0, backoff: Backoff | None = None) -> None:
        if start_revision < 0:
            raise ValueError(f"start_revision must be 0 or more, not {start_revision}")
        self.revision = start_revision  # the last revision received
        self.synced = start_revision > 0  # a watch from R > 0 has no initial state
        self.last_change = start_revision  # the last CHANGE yielded, or where the watch began
        self.sent_state = False  # STATE events yielded in the current, unfinished initial state
        self.received = False  # any event received yet, on any call
        self.backoff = backoff or Backoff()

    @property
    def start_revision(self) -> int:
        return self.revision if self.synced else 0

    def receive(self, event_type: int, revision: int) -> EventType | None:
        self.received = True
        self.backoff.reset()
        self.revision = max(self.revision, revision)
        if event_type == EventType.STATE.value:
            if self.synced:  # not part of an initial state: treat it as a change
                return self._change(revision, EventType.STATE)
            self.sent_state = True
            return EventType.STATE
        if event_type == EventType.SYNCED.value:
            if self.synced:
                return None
            self.synced = True
            self.sent_state = False
            return EventType.SYNCED
        if event_type in (EventType.CHANGE.value, EventType.DELETED.value):
            return self._change(revision, EventType(event_type))
        if event_type == EventType.HEARTBEAT.value:
            return EventType.HEARTBEAT if revision >= self.last_change else None
        return None  # an event type this client does not know yet

    def _change(self, revision: int, event_type: EventType) -> EventType | None:
        if revision <= self.last_change:
            return None
        self.last_change = revision
        return event_type

    def fail(
        self, code: grpc.StatusCode, retry_delay: float | None = None, reason: str = ""
    ) -> Retry | None:
        if code == grpc.StatusCode.OUT_OF_RANGE:
            if self.start_revision == 0:
                return None  # the state itself is out of range: nothing to fall back to
            if reason == "REVISION_AHEAD" and not self.received:
                return None  # the caller asked for a revision the store has not reached

            self._restart_from_state()
            return Retry(delay=0.0, resync=True)
        if code not in RETRYABLE:
            return None
        delay = max(self.backoff.next_delay(), retry_delay or 0.0)
        resync = False
        if not self.synced:  # broke inside the initial state: start it over, from 0
            resync = self.sent_state
            self._restart_from_state()
        return Retry(delay=delay, resync=resync)

    def _restart_from_state(self) -> None:
        self.synced = False
        self.revision = 0
        self.sent_state = False


class WatchCalls(Generic[M]):
    """One watch of one kind, as the sync and the async client drive it.

    The client loops: call the kind's watch RPC with `request()` and `call_kwargs()`,
    turn each response into `event()` (None: drop it), and on a failure ask `retry()`
    (it raises the JobStatusError when the watch cannot go on), yield a RESYNC event
    when the Retry says so, sleep `pause(retry)` and `check()` the deadline.
    """

    def __init__(
        self,
        kind: Kind[M],
        session: Session,
        ids: Sequence[str],
        start_revision: int,
        until_settled: bool,
        heartbeat_interval: Seconds | None,
        options: CallOptions,
    ) -> None:
        self.kind = kind
        self.session = session
        self.ids = list(ids)
        self.until_settled = until_settled
        self.heartbeat_interval = heartbeat_interval
        self.options = options
        self.resumer = WatchResumer(start_revision)
        self.deadline = Deadline(options.get("timeout"))

    def request(self) -> Message:
        return self.kind.watch_request(
            self.ids, self.resumer.start_revision, self.until_settled, self.heartbeat_interval
        )

    def call_kwargs(self) -> dict[str, Any]:
        return self.session.call_kwargs(self.deadline.options(self.options))

    def event(self, response: Any) -> WatchEvent[M] | None:
        event_type = self.resumer.receive(response.type, response.revision)
        if event_type is None:
            return None
        job = self.kind.event_job_of(response)
        status = None if job is None else self.kind.status(job)
        return WatchEvent(event_type, response.revision, job, status)

    def retry(self, rpc_error: grpc.RpcError) -> Retry:
        error = JobStatusError.from_rpc_error(rpc_error)
        retry = (
            None
            if self.session.closed
            else self.resumer.fail(error.code, error.retry_delay, error.reason)
        )
        if retry is None:
            raise error from rpc_error
        return retry

    def pause(self, retry: Retry) -> float:
        return self.deadline.sleep_time(retry.delay)

    def check(self) -> None:
        self.deadline.check()


def track(job: M | None, event: WatchEvent[M]) -> M | None:
    """The job as a wait() knows it after `event` (None after a RESYNC)."""
    if event.type is EventType.RESYNC:
        return None
    return event.job if event.job is not None else job
