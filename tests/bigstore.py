"""Many jobs in a store, written in process through the real Store (group commit, not an
RPC each), before or beside a server; and a server's resident memory."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.state.store import Store, Tx

BATCH = 200  # writes in flight at once: the writer groups them


def map_job(job_id: str, progress: int = 0, footprint: str = "") -> mi.MapImport:
    return mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_START,
        meta_data=mi.MapImportMetaData(progress=progress, footprint=footprint),
    )


async def put_many(
    store: Store, kind: Any, tenant: str, jobs: Sequence[Any], *, created: bool
) -> list[int]:
    """Commit each of `jobs` as one change of `tenant`'s job (`created`: a new job); their
    revisions, in order."""

    async def put(job: Any) -> int:
        def run(tx: Tx) -> int:
            return int(tx.put(kind, tenant, job, created=created).revision)

        return await store.transact(run)

    revisions: list[int] = []
    for start in range(0, len(jobs), BATCH):
        revisions += await asyncio.gather(*(put(job) for job in jobs[start : start + BATCH]))
    return revisions


async def fill(url: str, kind: Any, jobs: Mapping[str, Sequence[Any]]) -> None:
    """Create `jobs` (by tenant) in the store at `url`, from a store of this process."""
    store = Store(url)
    await store.start()
    try:
        for tenant, made in jobs.items():
            await put_many(store, kind, tenant, made, created=True)
    finally:
        await store.close()


def resident_bytes(pid: int) -> int:
    """The resident memory of process `pid` (Linux: VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")
