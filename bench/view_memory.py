"""The view's memory against its count, in a real server on a large store.

A server on the bulk-filled store of `large_jobs` jobs (bulk_fill.py), with a view
budget that holds every job read, answers one gRPC Get of each of `large_view_reads`
jobs spread over the store (none read before: each fills the view from the database).
The row: the server's RSS growth against the growth of the bytes its view counts
(`jobstatus_view_bytes`); the budget's promise is within 25%.
"""

from __future__ import annotations

import re
import urllib.request

from bench import bulk_fill, large_store_load
from bench.harness import Bench
from bench.large_store import MB, Store, serving
from bench.procstat import rss_bytes
from bench.results import Row, Target

BUDGET = 4 * 1024**3  # holds every job read
WITHIN = 1.25


def _view_bytes(store: Store) -> float:
    with urllib.request.urlopen(f"{store.server.http_url}/metrics", timeout=30) as response:
        found = re.search(r"^jobstatus_view_bytes (\S+)$", response.read().decode(), re.MULTILINE)
    assert found is not None, "no jobstatus_view_bytes in /metrics"
    return float(found.group(1))


def view_memory(bench: Bench) -> list[Row]:
    reads = bench.sizes.large_view_reads
    count = bench.sizes.large_jobs
    with serving(bench, count, ("--view-budget", str(BUDGET))) as store:
        pid = store.endpoint.pid
        before_rss, before_view = rss_bytes(pid), _view_bytes(store)
        bench.pool.workers[0].call(
            large_store_load.read_each,
            address=store.server.address,
            job_ids=bulk_fill.spread_ids(count, reads),
            concurrency=16,
        )
        grown, counted = rss_bytes(pid) - before_rss, _view_bytes(store) - before_view
    return [
        Row(
            scenario="view_memory",
            case=f"Gets of {reads:,} jobs not read before, on {count:,} jobs "
            f"(view budget {BUDGET / 1024**3:g} GiB)",
            metric="server RSS growth against the view's counted bytes",
            unit="MB",
            value=grown / MB,
            baseline=counted / MB,
            baseline_name="jobstatus_view_bytes growth",
            target=Target("<=", WITHIN),
        )
    ]
