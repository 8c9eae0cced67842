"""A process that writes through the real Store as fast as it can, for tests and benchmarks.

    python -m tests.storewriter URL COUNT [CONCURRENCY] [--unheard]

creates COUNT map imports (ids `w<pid>-<n>`), CONCURRENCY transactions in
flight at a time (so the writer thread groups them), and prints one line:
`wrote COUNT revisions FIRST..LAST in SECONDS s`.

`--unheard` (PostgreSQL): each commit's NOTIFY goes to a channel no replica
LISTENs on, as if it were lost: the replicas learn of these commits only by
polling the event log.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import jobstatus_server.state.pg_writer
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.state.store import Store, Tx


async def write(url: str, count: int, concurrency: int) -> tuple[list[int], float]:
    store = Store(url)
    await store.start()
    revisions: list[int] = []
    next_id = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for n in next_id:
            job = mi.MapImport(
                import_request_id=f"w{os.getpid()}-{n}", status=mi.MAP_IMPORT_STATUS_START
            )

            def put(tx: Tx, job: mi.MapImport = job) -> int:
                return int(tx.put(MAP_IMPORT, "default", job, created=True).revision)

            revisions.append(await store.transact(put))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await store.close()
    return revisions, time.perf_counter() - started


UNHEARD = "jobstatus_unheard"  # a NOTIFY channel nobody listens on


def main(argv: list[str]) -> int:
    if "--unheard" in argv:
        argv = [arg for arg in argv if arg != "--unheard"]
        vars(jobstatus_server.state.pg_writer)["CHANNEL"] = (
            UNHEARD  # the channel its commits NOTIFY
        )
    url, count = argv[0], int(argv[1])
    concurrency = int(argv[2]) if len(argv) > 2 else 16
    revisions, seconds = asyncio.run(write(url, count, concurrency))
    print(
        f"wrote {len(revisions)} revisions {min(revisions)}..{max(revisions)} in {seconds:.3f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
