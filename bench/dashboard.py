"""The dashboard's cost on the server: SSE streams of many open pages under steady changes.

Each open dashboard follows the SSE watch of all four kinds (`envelope=true`, from the
current state), so N pages are 4N streams; the changes (UpdateMapImport of random jobs
at a steady rate) reach the N map-import streams, the other 3N get heartbeats. The
baseline, in the same run and with the same writes: one gRPC watch stream of every
map import, the cheapest follower jobstatus has. Rows: the server's CPU, and the
delivery lag from the write's answer (the commit) to the event's arrival in a page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench import jobs, workers
from bench.harness import Bench, cpu_window
from bench.results import Row, percentile
from bench.servers import create_jobs, running_subject, subject_pid

BASELINE = "1 gRPC watch stream"


@dataclass(frozen=True)
class Round:
    commit_to_receipt_ms: list[float]
    writes: int
    seconds: float
    server_cpu: float
    load_cpu: float


def _round(
    bench: Bench,
    address: str,
    http: tuple[str, int],
    pid: int,
    ids: list[str],
    pages: int,
) -> Round:
    """Open the followers (pages > 0: that many dashboards; 0: one gRPC stream), write
    at the steady rate, measure, close."""
    sizes = bench.sizes
    name = "pages" if pages else "grpc"
    procs = min(sizes.watcher_procs, max(pages, 1))
    shares = [pages // procs + (1 if i < pages % procs else 0) for i in range(procs)]
    if pages:
        bench.pool.map(
            workers.open_pages,
            [
                {
                    "name": name,
                    "host": http[0],
                    "port": http[1],
                    "pages": share,
                    "batch": sizes.open_batch,
                }
                for share in shares
            ],
        )
    else:
        bench.pool.map(workers.open_watch_all, [{"name": name, "address": address}])
    bench.pool.map(workers.take_receipts, [{"name": name}] * procs)
    load_before = sum(float(c) for c, _ in bench.pool.map(workers.cpu_now, [{}] * procs))
    writer = bench.pool.workers[sizes.watcher_procs]
    start_at = time.monotonic() + 0.5
    stop_at = start_at + sizes.dashboard_seconds
    writer.send(
        workers.paced_updates,
        address=address,
        job_ids=ids,
        rate=sizes.dashboard_rate,
        start_at=start_at,
        stop_at=stop_at,
    )
    [server_cpu] = cpu_window([pid], start_at, stop_at)
    written = writer.recv()
    time.sleep(0.5)  # the last changes on their way
    taken = bench.pool.map(workers.take_receipts, [{"name": name}] * procs)
    load_cpu = sum(float(c) for c, _ in bench.pool.map(workers.cpu_now, [{}] * procs)) - load_before
    bench.pool.map(workers.close_streams, [{"name": name}] * procs)
    answered = {int(revision): int(done) for revision, _, done in written["samples"]}
    lags = [
        (received - answered[revision]) / 1e6
        for part in taken
        for revision, received in part
        if revision in answered
    ]
    return Round(lags, len(answered), stop_at - start_at, server_cpu, load_cpu)


def dashboard_sse(bench: Bench) -> list[Row]:
    sizes = bench.sizes
    pages = sizes.dashboard_pages
    case = f"{pages} open pages ({4 * pages} SSE streams), {sizes.dashboard_rate:g} changes/s"
    ids = jobs.job_ids("dash", sizes.dashboard_jobs)
    with running_subject(bench.workdir, "dashboard") as server:
        create_jobs(server.address, ids)
        http = ("127.0.0.1", server.http_port)
        once = partial(_round, bench, server.address, http, subject_pid(server), ids)
        ours: list[Round] = []
        theirs: list[Round] = []
        for _ in range(sizes.rounds):  # alternating, so a noisy neighbour hurts both
            ours.append(once(pages))
            theirs.append(once(0))
    lag = [ms for r in ours for ms in r.commit_to_receipt_ms]
    base_lag = [ms for r in theirs for ms in r.commit_to_receipt_ms]
    seconds = sum(r.seconds for r in ours)
    base_seconds = sum(r.seconds for r in theirs)
    common: dict[str, Any] = {
        "scenario": "dashboard_sse",
        "case": case,
        "baseline_name": BASELINE,
        "load_cpu": sum(r.load_cpu for r in ours) / seconds,
        "baseline_load_cpu": sum(r.load_cpu for r in theirs) / base_seconds,
        "server_cpu": sum(r.server_cpu for r in ours) / seconds,
        "baseline_server_cpu": sum(r.server_cpu for r in theirs) / base_seconds,
    }
    writes = sum(r.writes for r in ours)
    extra: dict[str, float | int | str] = {
        "writes pages / baseline": f"{writes} / {sum(r.writes for r in theirs)}",
        "events delivered to pages / expected": f"{len(lag)} / {writes * pages}",
        "commit-to-receipt p50 / p99 ms pages": (
            f"{percentile(lag, 0.5):.2f} / {percentile(lag, 0.99):.2f}"
        ),
    }
    return [
        Row(
            metric="server CPU",
            unit="cores",
            value=common["server_cpu"],
            baseline=common["baseline_server_cpu"],
            extra=extra,
            **common,
        ),
        Row(
            metric="commit-to-receipt p99",
            unit="ms",
            value=percentile(lag, 0.99),
            baseline=percentile(base_lag, 0.99),
            **common,
        ),
        Row(
            metric="commit-to-receipt p50",
            unit="ms",
            value=percentile(lag, 0.5),
            baseline=percentile(base_lag, 0.5),
            **common,
        ),
        Row(
            metric="delivered events per follower",
            unit="events/s",
            value=len(lag) / seconds / pages,
            baseline=len(base_lag) / base_seconds,
            **common,
        ),
    ]
