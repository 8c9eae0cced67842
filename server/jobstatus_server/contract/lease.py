"""A job's lease: a deadline a runner's writes push forward, past which a job that is
not settled fails by itself, so a runner that dies without a word (kill -9, a lost
machine) does not leave its job looking in progress.

A write's request may carry `lease_duration` (`requested` checks its range). The job
keeps the lease as `lease_expire_time` (now + the duration) and `lease_duration`;
`renew` sets both, `clear` drops them once the job no longer holds a lease (the kind
table says which states hold one: kinds.Kind.holds_lease). The deadline is one of the
job's due times (kinds.Kind.due), stored with the job where the server's timer looks
for time-driven transitions, so it is kept across restarts; the timer then moves the
job to its kind's failed status with `reason` (usecases/jobs.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from jobstatus_server.contract.errors import invalid

FIELD = "lease_duration"  # in a write's request, and in the job: the lease's duration
EXPIRE_FIELD = "lease_expire_time"  # in the job: when the lease runs out
MIN = timedelta(seconds=1)  # a shorter lease would run out between two reports
MAX = timedelta(days=7)  # a longer one would not catch a lost runner in useful time
_NANOS = 1_000_000_000


def _nanos(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _NANOS + delta.microseconds * 1_000


def requested(request: Message) -> duration_pb2.Duration | None:
    """The lease a write's request asks for; None for none (unset or 0). A duration
    outside MIN..MAX is INVALID_ARGUMENT, before anything is written."""
    if not request.HasField(FIELD):
        return None
    duration: duration_pb2.Duration = getattr(request, FIELD)
    nanos = duration.ToNanoseconds()
    if nanos == 0:
        return None
    if not _nanos(MIN) <= nanos <= _nanos(MAX):
        raise invalid(
            FIELD,
            f"must be from {spell(_duration(MIN))} to {spell(_duration(MAX))} "
            f"(0 or unset keeps the job's lease), not {spell(duration)}",
            "OUT_OF_RANGE",
        )
    return duration


def _duration(delta: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(delta)
    return duration


def spell(duration: duration_pb2.Duration) -> str:
    """A duration as protobuf's JSON spells it: 30s, 1.500s, -2s."""
    return str(duration.ToJsonString())


def renew(job: Message, duration: duration_pb2.Duration, now: datetime) -> None:
    """Give `job` a lease of `duration` from `now`."""
    getattr(job, EXPIRE_FIELD).FromDatetime(now + duration.ToTimedelta())
    getattr(job, FIELD).CopyFrom(duration)


def clear(job: Message) -> None:
    job.ClearField(EXPIRE_FIELD)
    job.ClearField(FIELD)


def has_lease(job: Message) -> bool:
    return job.HasField(EXPIRE_FIELD)


def deadline(job: Message) -> float | None:
    """When the job's lease runs out, as a POSIX time; None without a lease."""
    if not job.HasField(EXPIRE_FIELD):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(job, EXPIRE_FIELD)
    return float(stamp.seconds) + stamp.nanos / 1e9


def reason(job: Message) -> str:
    """The error message of a job whose lease ran out."""
    return f"lease expired: no report from the runner within {spell(getattr(job, FIELD))}"
