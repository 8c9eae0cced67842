"""Compaction: deleting the events beyond the kept window, in short batches that never
touch the revision counter, so writers are not held up.

Where a batch runs differs by database (the writer's `compaction_batch`): on SQLite in
a writing transaction of its own (`delete_events`), on PostgreSQL in a short
transaction of the reader pool that first takes an advisory lock, so one replica at a
time compacts (`delete_events_locked`). The compaction point only moves forward.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, select, text, update

from jobstatus_server.state.readers import Readers
from jobstatus_server.state.sql import COUNTER, EVENT

COMPACT_LOCK = 0x6A6F6273_00000002  # pg advisory lock: one replica compacts at a time


def delete_events(conn: Connection, step: int) -> bool:
    """Delete the events up to revision `step` and move the compaction point there."""
    conn.execute(EVENT.delete().where(EVENT.c.revision <= step))
    conn.execute(
        update(COUNTER)
        .where(COUNTER.c.name == "compacted", COUNTER.c.value < step)
        .values(value=step)
    )
    return True


def delete_events_locked(conn: Connection, step: int) -> bool:
    """`delete_events` once this replica holds the compaction lock; False (nothing
    deleted) while another replica is compacting."""
    locked = conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": COMPACT_LOCK}
    ).scalar_one()
    if not locked:
        return False  # another replica is compacting
    return delete_events(conn, step)


async def compact(
    readers: Readers,
    run_batch: Callable[[int], Awaitable[bool]],
    keep_count: int,
    keep_age: float,
    batch: int,
) -> int:
    """Delete events beyond the kept window (the newest `keep_count`, younger than
    `keep_age` seconds), `batch` revisions at a time through `run_batch(step)`; return
    the new compaction point."""
    cutoff = datetime.now(UTC).timestamp() - keep_age

    def cut_point(conn: Connection) -> tuple[int, int]:
        counters = {
            str(name): int(value)
            for name, value in conn.execute(select(COUNTER.c.name, COUNTER.c.value))
        }
        # The newest event older than the cutoff, found in the index by age. Revisions
        # are handed out in commit order and stamped as their group commits, so it is
        # the newest such revision; were a clock to step back, an older one, and less
        # is deleted, never more.
        by_age = conn.execute(
            select(EVENT.c.revision)
            .where(EVENT.c.created_at < cutoff)
            .order_by(EVENT.c.created_at.desc(), EVENT.c.revision.desc())
            .limit(1)
        ).scalar_one_or_none()
        cut = max(counters["revision"] - keep_count, int(by_age or 0))
        return cut, counters["compacted"]

    cut, compacted = await readers.read(cut_point)
    while compacted < cut:
        step = min(cut, compacted + batch)
        if not await run_batch(step):
            return await readers.counter("compacted")
        compacted = step
    return compacted
