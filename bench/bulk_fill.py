"""A SQLite store of many jobs, filled by the benchmark's bulk path (not one RPC per job).

The fill writes through the server's own store (`Store.transact`, `Tx.put`): the same
serialization, revisions, rows and indexes as a create over the API, but thousands of
jobs per transaction, with `synchronous=OFF` (a crash mid-fill leaves only a `.part`
file behind). Every `ACTIVE_EVERY`-th job is InProgress, the rest are Done, as in a
store that has run for a while. The event log is then compacted to nothing, as the
server's compaction leaves it once every change is older than the kept history, so a
server started on the file has no compaction to catch up with (and the file is
vacuumed: smaller to copy).

A filled file is cached under the cache directory, keyed by the number of jobs, the
schema's head revision and `FILL_VERSION`: a rerun (or another store size) starts in
seconds. A run copies the cached file and measures the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import ScriptDirectory

from bench import jobs
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from jobstatus_server.state.migrations import config
from jobstatus_server.state.store import Store, Tx

FILL_VERSION = 2  # bump when what a filled store holds changes
ACTIVE_EVERY = 20  # one job in 20 is InProgress, the others Done
BATCH = 20_000  # jobs per transaction
PREFIX = "large"
CACHE = Path(
    os.environ.get("JOBSTATUS_BENCH_CACHE", Path(tempfile.gettempdir()) / "jobstatus-bench-cache")
)


def job_id(index: int) -> str:
    """The id of the store's `index`-th job: the same length in every store size."""
    return f"{PREFIX}-{index:07d}"


def active_ids(count: int, wanted: int) -> list[str]:
    """`wanted` InProgress jobs of a store of `count`, spread evenly over it."""
    active = range(0, count, ACTIVE_EVERY)
    step = max(1, len(active) // wanted)
    return [job_id(index) for index in active[::step][:wanted]]


def spread_ids(count: int, wanted: int) -> list[str]:
    """`wanted` jobs of any status, spread evenly over a store of `count`."""
    step = max(1, count // wanted)
    return [job_id(index) for index in range(0, count, step)[:wanted]]


def schema_head() -> str:
    """The head revision of the server's migrations: a cached store is of one schema."""
    head = ScriptDirectory.from_config(config("sqlite://")).get_current_head()
    assert head is not None
    return head


def cached_store(count: int, cache: Path = CACHE, log: object = print) -> Path:
    """The SQLite file of a store of `count` jobs, filled now unless cached."""
    path = cache / f"{PREFIX}-{count}-schema{schema_head()}-fill{FILL_VERSION}.db"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    for stale in cache.glob(partial.name + "*"):
        stale.unlink()
    started = time.monotonic()
    asyncio.run(_fill(f"sqlite:///{partial}", count))
    with contextlib.closing(sqlite3.connect(partial)) as db:
        db.execute("VACUUM")  # the compacted log's pages: a smaller file to copy per run
    partial.replace(path)
    if callable(log):
        log(f"filled a store of {count:,} jobs in {time.monotonic() - started:.0f} s: {path}")
    return path


def copy_store(source: Path, directory: Path) -> str:
    """A copy of a cached store in `directory`, to be measured (and written to); its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "jobstatus.db"
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"


def _job(index: int) -> mi.MapImport:
    job = jobs.map_import(job_id(index), 1)
    if index % ACTIVE_EVERY == 0:
        job.status = mi.MAP_IMPORT_STATUS_IN_PROGRESS
    else:
        job.status = mi.MAP_IMPORT_STATUS_DONE
        job.meta_data.progress = 100
        job.meta_data.package_url = f"https://packages.example.com/{job_id(index)}.gpkg"
    return job


def _put_all(indexes: Sequence[int], tx: Tx) -> int:
    for index in indexes:
        tx.put(MAP_IMPORT, DEFAULT_TENANT, _job(index), created=True)
    return len(indexes)


async def _fill(url: str, count: int) -> None:
    store = Store(url, sqlite_synchronous="OFF")
    await store.start()
    try:
        for offset in range(0, count, BATCH):
            indexes = range(offset, min(count, offset + BATCH))
            await store.transact(lambda tx, i=indexes: _put_all(i, tx), alone=True)  # type: ignore[misc]
        # Every change older than the kept history: the log compacted to nothing.
        await store.compact(keep_count=0, keep_age=0.0, batch=100_000)
    finally:
        await store.close()


if __name__ == "__main__":  # python -m bench.bulk_fill COUNT: fill (or find) the cached store
    import sys

    print(cached_store(int(sys.argv[1])), datetime.now(UTC).isoformat(timespec="seconds"))
