"""When a watch may start: the preconditions checked before a stream's first event,
the same for the gRPC Watch RPCs (state/watch.py) and the SSE watch (http_api/sse.py).

A start revision ahead of the store, or older than the kept history, is OUT_OF_RANGE;
an until_settled watch of a job that does not exist is NOT_FOUND (it would never end).
The transports differ only in what they advise a client whose resume point was
compacted (`ResumeAdvice`): a gRPC client reads the current state and watches from
there; an SSE client reconnects without Last-Event-ID.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from jobstatus_server.contract.errors import OutOfRange
from jobstatus_server.contract.kinds import Kind


@dataclass(frozen=True)
class ResumeAdvice:
    """What a transport tells a client whose resume point was compacted."""

    then: str  # what to do instead, ending the error's message
    with_compact_revision: bool  # whether the metadata names the last compacted revision


GRPC_RESUME = ResumeAdvice("read the current state and watch from there", True)
SSE_RESUME = ResumeAdvice("watch again without a resume point", False)


def revision_compacted(
    revision: int, compacted: int, advice: ResumeAdvice = GRPC_RESUME
) -> OutOfRange:
    """The error of a resume point (`revision`) older than the kept history, which
    starts after revision `compacted`."""
    metadata = {"oldest_revision": str(compacted + 1)}
    if advice.with_compact_revision:
        metadata["compact_revision"] = str(compacted)
    return OutOfRange(
        f"revision {revision} is older than the kept history, which starts after "
        f"revision {compacted}: {advice.then}",
        reason="REVISION_COMPACTED",
        metadata=metadata,
    )


def check_watch_start(
    kind: Kind[Any],
    ids: Collection[str],
    start: int,
    until_settled: bool,
    current: int,
    compacted: int,
    existing: Iterable[str],
    advice: ResumeAdvice,
) -> None:
    """Raise the error of a watch of `ids` from `start` that cannot start, given the
    store's `current` and `compacted` revisions and the watched jobs that exist
    (`existing`, read only for an until_settled watch of named jobs)."""
    if start > current:
        raise OutOfRange(
            f"revision {start} is ahead of the store (at {current})",
            reason="REVISION_AHEAD",
            metadata={"current_revision": str(current)},
        )
    if start and start < compacted:
        raise revision_compacted(start, compacted, advice)
    if until_settled and ids:
        missing = sorted(set(ids).difference(existing))
        if missing:  # waiting for a job that does not exist would never end
            raise kind.not_found(*missing)
