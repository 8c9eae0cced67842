"""The view's budget bounds the process's memory for the view: what it counts (`size`)
is what the process holds for it, measured, within 25%.

The view is filled through a real store (SQLite; the view's memory is the process's own,
the same whichever database feeds it): jobs written in large transactions reach it by
the change feed, past its budget so that it evicts, then evicted jobs are read back
through it (fills from the database); every held job's Get response is built, and half
of them a gRPC and an SSE watch frame, as streams and readers would. Then the memory
the process gained is compared with the view's count: the Python allocations
(tracemalloc: every object the view keeps, as sys.getsizeof counts them) and the
resident set (/proc/self/statm, after a full collection: the allocator's rounding and
the fragmentation of evictions included).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.jobs import map_import
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.grpc_api.services import GRPC_EVENTS
from jobstatus_server.http_api.sse import FRAMINGS
from jobstatus_server.state.store import Store, Tx
from jobstatus_server.state.view import View

BUDGET = 64 * 1024 * 1024
BATCH = 2_000  # jobs per transaction
READ_BACK = 4_000  # evicted jobs read again through the view
TOLERANCE = 0.25
PAGE = os.sysconf("SC_PAGE_SIZE")
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
SSE_ENVELOPED = FRAMINGS[(MAP_IMPORT.name, True)]  # the dashboard's SSE watch


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def _job_id(index: int) -> str:
    return f"memory-{index:07d}"


def _use(view: View, job_id: str, index: int) -> None:
    """What the readers and streams of a job build: its Get response; for every other
    job a gRPC and an SSE watch frame too."""
    entry = view.lookup((MAP_IMPORT.name, "default", job_id))
    if entry is None:
        return
    entry.renderings.response_bytes()
    if index % 2 == 0:
        entry.renderings.watch_frame(GRPC_EVENTS, CHANGE, entry.revision)
        entry.renderings.watch_frame(SSE_ENVELOPED, CHANGE, entry.revision)


async def _write(store: Store, view: View, first: int, count: int) -> None:
    def put(tx: Tx) -> None:
        for index in range(first, first + count):
            tx.put(MAP_IMPORT, "default", map_import(_job_id(index), index % 100), created=True)

    await store.transact(put, alone=True)
    for index in range(first, first + count):
        _use(view, _job_id(index), index)


async def _measured_fill(directory: Path, measure: Callable[[], int]) -> tuple[int, int]:
    """Fill a view to its budget and past it: the growth `measure()` saw, and the view's
    count."""
    store = Store(f"sqlite:///{directory / 'jobs.db'}", sqlite_synchronous="OFF")
    await store.start()
    try:
        view = View(store, budget=BUDGET)
        view.start(store.revision)
        store.on_changes(view.apply)
        await _write(store, view, 0, BATCH)  # the store's and the statements' first costs
        view.clear()
        gc.collect()
        before = measure()
        written = BATCH
        while view.size < BUDGET:
            await _write(store, view, written, BATCH)
            written += BATCH
        held = len(view)
        for _ in range(max(1, held // 4 // BATCH)):  # a quarter more: evictions
            await _write(store, view, written, BATCH)
            written += BATCH
        step = max(1, (written - held) // READ_BACK)
        for index in range(BATCH, written - held, step):  # evicted: read from the database
            entry = await view.get(MAP_IMPORT, "default", _job_id(index))
            assert entry is not None
            _use(view, _job_id(index), index)
        gc.collect()
        return measure() - before, view.size
    finally:
        await store.close()


def measure_in_this_process(directory: Path, traced: bool) -> tuple[int, int]:
    """Run in a fresh process (what earlier tests freed would be reused, and hide the
    growth): (bytes the process gained, bytes the view counts)."""
    if not traced:
        return asyncio.run(_measured_fill(directory, _rss))
    tracemalloc.start()
    try:
        return asyncio.run(_measured_fill(directory, lambda: tracemalloc.get_traced_memory()[0]))
    finally:
        tracemalloc.stop()


def _measure(directory: Path, traced: bool) -> tuple[int, int]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
        return fresh.submit(measure_in_this_process, directory, traced).result(timeout=240)


def _within(measured: int, counted: int) -> None:
    assert BUDGET * 0.95 <= counted <= BUDGET * 1.05  # full: at its budget
    ratio = measured / counted
    print(f"grew {measured / 2**20:.1f} MiB, counted {counted / 2**20:.1f} MiB: {ratio:.3f}x")
    assert abs(ratio - 1) <= TOLERANCE, (
        f"the process gained {measured / 2**20:.1f} MiB for a view that counts "
        f"{counted / 2**20:.1f} MiB: {ratio:.3f}x"
    )


def test_the_count_is_the_python_memory_the_view_holds(tmp_path: Path) -> None:
    """tracemalloc: every Python object the process gained while the view filled."""
    _within(*_measure(tmp_path, traced=True))


def test_the_budget_bounds_the_resident_memory_of_the_view(tmp_path: Path) -> None:
    """The resident set: the allocator's rounding and the holes evictions leave too."""
    _within(*_measure(tmp_path, traced=False))
