"""The retention policy (--retention-age, off by default): a job settled with no change for
longer than the age is deleted, with its history.

The store finds such jobs through the index on when each settled job last changed
(ix_job_settled: no scan of the job table), oldest first, a small batch at a time; each
batch is one writing transaction that checks every job again (settled, unchanged since
the cutoff) and deletes it (Tx.delete): the job's row goes, its kept events are
erased, and the deletion is a change of its own, with the next revision and the job's
last state, that watchers see as a DELETED event. From then on every read answers as
for an id that never existed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from jobstatus_server.contract.kinds import KINDS
from jobstatus_server.state.store import Store, Tx

BATCH = 100  # jobs per transaction: short enough not to hold up the writes around it


def _last_change(job: Message) -> float:
    stamp: timestamp_pb2.Timestamp = getattr(job, "update_time")  # noqa: B009
    return float(stamp.seconds) + stamp.nanos / 1e9


@dataclass
class Retention:
    store: Store
    age: float  # seconds a job stays once settled and unchanged

    async def delete_expired(self) -> int:
        """Delete every job settled and unchanged for longer than the age, a batch per
        transaction, yielding between batches; return how many were deleted."""
        deleted = 0
        while True:
            cutoff = time.time() - self.age
            keys = await self.store.settled_before(cutoff, BATCH)
            if not keys:
                return deleted
            done = await self.store.transact(partial(_delete, keys=keys, cutoff=cutoff), alone=True)
            deleted += done
            if len(keys) < BATCH or not done:
                return deleted
            await asyncio.sleep(0)


def _delete(tx: Tx, keys: Sequence[tuple[str, str, str]], cutoff: float) -> int:
    """Delete those of `keys` still settled and unchanged since `cutoff`; how many."""
    deleted = 0
    for kind_name, tenant, job_id in keys:
        kind = KINDS.get(kind_name)
        if kind is None:
            continue
        job = tx.load(kind, tenant, job_id)
        if job is None or not kind.is_settled(job) or _last_change(job) > cutoff:
            continue  # changed, or deleted (by another replica) since it was found
        tx.delete(kind, tenant, job)
        deleted += 1
    return deleted
