"""The scenarios. Each is one function `(bench) -> rows`, registered in suite.scenarios().

jobstatus and its baseline run side by side in every scenario and alternate (ABBA...)
round by round, so that a noisy neighbour hurts both alike; each row is a median
over the rounds.
"""

from __future__ import annotations

import itertools
import re
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import jobs, workers, wrk
from bench.harness import Bench, cpu_window
from bench.procstat import cpu_seconds, rss_bytes
from bench.results import Row, Target, median, percentile
from bench.servers import (
    Writer,
    answer_of_http,
    answer_of_job,
    create_jobs,
    get,
    http_get,
    running_pair,
    running_replicas,
    running_subject,
    subject_pid,
)
from jobstatus.v1 import map_import_pb2 as mi

T = TypeVar("T")
BARE = "bare grpc.aio"
BROADCASTER = "bare broadcaster"


def _split(items: Sequence[T], parts: int) -> list[list[T]]:
    """Round-robin into at most `parts` non-empty lists."""
    split: list[list[T]] = [list(items[index::parts]) for index in range(parts)]
    return [part for part in split if part]


def alternate(
    rounds: int, subject: Callable[[], T], baseline: Callable[[], T]
) -> tuple[list[T], list[T]]:
    """Measure jobstatus and the baseline `rounds` times each, in ABBA order."""
    ours: list[T] = []
    theirs: list[T] = []
    for index in range(rounds):
        if index % 2 == 0:
            ours.append(subject())
            theirs.append(baseline())
        else:
            theirs.append(baseline())
            ours.append(subject())
    return ours, theirs


@dataclass(frozen=True)
class Endpoint:
    """A server under load: its name, where to call it, and which process to measure."""

    name: str
    address: str
    pid: int


# --- unary calls ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unary:
    qps: float
    cpu_per_call: float  # server CPU seconds per call
    server_cores: float
    load_cores: float
    errors: int


def unary_once(
    bench: Bench, server: Endpoint, method: str, slots: list[list[bytes]], seconds: float
) -> Unary:
    parts = _split(slots, bench.sizes.unary_procs)
    start_at = time.monotonic() + 0.3 + bench.sizes.warmup
    stop_at = start_at + seconds
    used = bench.pool.workers[: len(parts)]
    for worker, part in zip(used, parts, strict=True):
        worker.send(
            workers.unary_load,
            address=server.address,
            method=method,
            slots=part,
            start_at=start_at,
            stop_at=stop_at,
        )
    [server_cpu] = cpu_window([server.pid], start_at, stop_at)
    results = [worker.recv() for worker in used]
    calls = sum(int(r["calls"]) for r in results)
    return Unary(
        qps=calls / seconds,
        cpu_per_call=server_cpu / calls if calls else 0.0,
        server_cores=server_cpu / seconds,
        load_cores=sum(float(r["cpu"]) for r in results) / seconds,
        errors=sum(int(r["errors"]) for r in results),
    )


def unary_rows(
    scenario: str,
    case: str,
    ours: list[Unary],
    theirs: list[Unary],
    metric: str,
    qps_target: Target | None,
    cpu_target: Target | None,
) -> list[Row]:
    common: dict[str, Any] = {
        "scenario": scenario,
        "case": case,
        "baseline_name": BARE,
        "load_cpu": median([u.load_cores for u in ours]),
        "baseline_load_cpu": median([u.load_cores for u in theirs]),
        "server_cpu": median([u.server_cores for u in ours]),
        "baseline_server_cpu": median([u.server_cores for u in theirs]),
    }
    rows = [
        Row(
            metric=metric,
            unit="calls/s",
            value=median([u.qps for u in ours]),
            baseline=median([u.qps for u in theirs]),
            target=qps_target,
            extra={
                "rounds": len(ours),
                "jobstatus qps per round": " ".join(f"{u.qps:.0f}" for u in ours),
                "baseline qps per round": " ".join(f"{u.qps:.0f}" for u in theirs),
                "errors": sum(u.errors for u in ours) + sum(u.errors for u in theirs),
            },
            **common,
        )
    ]
    rows.append(
        Row(
            metric="server CPU per call",
            unit="µs",
            value=1e6 * median([u.cpu_per_call for u in ours]),
            baseline=1e6 * median([u.cpu_per_call for u in theirs]),
            target=cpu_target,
            **common,
        )
    )
    return rows


def _unary_cases(
    bench: Bench,
    scenario: str,
    subject: Endpoint,
    baseline: Endpoint,
    method: str,
    cases: Sequence[tuple[str, list[list[bytes]]]],
    metric: str,
    qps_target: Target | None,
    cpu_target: Target | None,
) -> list[Row]:
    """Each case (a name and one request list per concurrent caller) against both servers;
    the most loaded case that missed a target is profiled."""
    sizes = bench.sizes
    rows: list[Row] = []
    missed: list[tuple[str, list[list[bytes]], list[Row]]] = []
    for case, slots in cases:
        ours, theirs = alternate(
            sizes.rounds,
            partial(unary_once, bench, subject, method, slots, sizes.unary_seconds),
            partial(unary_once, bench, baseline, method, slots, sizes.unary_seconds),
        )
        case_rows = unary_rows(scenario, case, ours, theirs, metric, qps_target, cpu_target)
        rows += case_rows
        if any(row.met is False for row in case_rows):
            missed.append((case, slots, case_rows))
    if missed:
        case, slots, case_rows = missed[-1]
        again = partial(unary_once, bench, subject, method, slots, sizes.profile_seconds)
        bench.profile(scenario, case, subject.pid, case_rows, again)
    return rows


def unary_get(bench: Bench) -> list[Row]:
    """GetMapImportStatus at each concurrency, against a bare server answering the same bytes."""
    with running_pair(bench.workdir, "unary") as (server, bare):
        subject = Endpoint("jobstatus", server.address, subject_pid(server))
        [job] = create_jobs(subject.address, jobs.job_ids("get", 1))
        bare.answer_with(answer_of_job(job))
        baseline = Endpoint("baseline", bare.address, bare.pid)
        raw = mi.GetMapImportStatusRequest(
            import_request_id=job.import_request_id
        ).SerializeToString()
        sizes = [get(e.address, job.import_request_id).ByteSize() for e in (subject, baseline)]
        rows = _unary_cases(
            bench,
            "unary_get",
            subject,
            baseline,
            workers.GET,
            [(f"concurrency {c}", [[raw]] * c) for c in bench.sizes.unary_concurrency],
            "GetMapImportStatus",
            Target(">=", 0.85),
            Target("<=", 1.25),
        )
    for row in rows[::2]:
        row.extra["response bytes jobstatus / baseline"] = f"{sizes[0]} / {sizes[1]}"
    return rows


def durable_updates(bench: Bench) -> list[Row]:
    """UpdateMapImport (SQLite, synchronous FULL: the server's durable default), each
    writer on a job of its own, against the bare server's constant answer."""
    return _durable(
        bench,
        "durable_updates",
        None,
        "SQLite WAL, synchronous FULL (the default)",
        lambda writers: 0.4 if writers == 1 else 0.6,
    )


def durable_updates_pg(bench: Bench) -> list[Row]:
    """The same on PostgreSQL: a throwaway cluster on loopback with fsync on, so every
    acknowledged update is on disk, as with SQLite's FULL."""
    url = bench.postgres().database("updates")
    return _durable(
        bench,
        "durable_updates_pg",
        url,
        "PostgreSQL on loopback, fsync on, synchronous_commit on (READ COMMITTED writer)",
        lambda writers: 0.5 if writers > 1 else None,
    )


def _durable(
    bench: Bench,
    scenario: str,
    database_url: str | None,
    storage: str,
    target: Callable[[int], float | None],
) -> list[Row]:
    concurrencies = bench.sizes.write_concurrency
    with running_pair(bench.workdir, scenario, database_url=database_url) as (server, bare):
        subject = Endpoint("jobstatus", server.address, subject_pid(server))
        ids = jobs.job_ids("upd", max(concurrencies))
        created = create_jobs(subject.address, ids)
        # create_jobs leaves progress 1: each request moves it on, so each is a change.
        cycle = [*range(2, 100), 0, 1]
        requests = [
            [jobs.update_request(job_id, p).SerializeToString() for p in cycle] for job_id in ids
        ]
        bare.answer_with(answer_of_job(created[0]))
        rows: list[Row] = []
        for c in concurrencies:
            before = write_groups(server)
            case_rows = _unary_cases(
                bench,
                scenario,
                subject,
                Endpoint("baseline", bare.address, bare.pid),
                workers.UPDATE,
                [(f"{c} writer{'s' if c > 1 else ''}", requests[:c])],
                "UpdateMapImport",
                Target(">=", goal) if (goal := target(c)) is not None else None,
                None,
            )
            group = mean_group(before, write_groups(server))
            case_rows[0].extra["mean writes per group commit (whole case)"] = round(group, 2)
            rows += case_rows
    for row in rows[::2]:
        row.extra["storage"] = storage
    return rows


# --- the core's write path, in process -----------------------------------------------


def _core_once(bench: Bench, url: str, synchronous: str, seconds: float) -> dict[str, float]:
    result: dict[str, float] = bench.pool.workers[0].call(
        workers.core_updates,
        database_url=url,
        synchronous=synchronous,
        writers=bench.sizes.core_writers,
        warmup=bench.sizes.warmup,
        seconds=seconds,
    )
    return result


def _raw_once(bench: Bench, directory: Path, synchronous: str) -> dict[str, float]:
    result: dict[str, float] = bench.pool.workers[0].call(
        workers.raw_updates,
        path=str(directory / "raw.db"),
        synchronous=synchronous,
        warmup=bench.sizes.warmup,
        seconds=bench.sizes.core_seconds,
    )
    return result


def _per_update(results: list[dict[str, float]]) -> str:
    return f"{1e6 * median([r['cpu'] / max(r['updates'], 1) for r in results]):.0f}"


def _core_row(
    scenario: str,
    case: str,
    ours: list[dict[str, float]],
    theirs: list[dict[str, float]],
    baseline_name: str,
    extra: dict[str, float | int | str],
) -> Row:
    return Row(
        scenario=scenario,
        case=case,
        metric="updates",
        unit="updates/s",
        value=median([r["updates"] / r["seconds"] for r in ours]),
        baseline=median([r["updates"] / r["seconds"] for r in theirs]),
        baseline_name=baseline_name,
        target=Target(">=", 0.25),
        load_cpu=median([r["cpu"] / r["seconds"] for r in ours]),
        baseline_load_cpu=median([r["cpu"] / r["seconds"] for r in theirs]),
        extra={
            "in process": "load-gen CPU is the one process's: writers and store together",
            "CPU per update µs jobstatus / raw": f"{_per_update(ours)} / {_per_update(theirs)}",
            "updates/s per round jobstatus": " ".join(
                f"{r['updates'] / r['seconds']:.0f}" for r in ours
            ),
            "updates/s per round raw": " ".join(
                f"{r['updates'] / r['seconds']:.0f}" for r in theirs
            ),
            **extra,
        },
    )


def core_write(bench: Bench) -> list[Row]:
    """N asyncio tasks calling Core.update on a Store in one worker process, against one
    writer doing the same row update and event insert with plain sqlite3, one
    transaction each, at the same synchronous setting."""
    sizes = bench.sizes
    rows: list[Row] = []
    for synchronous in sizes.core_synchronous:
        directory = bench.workdir / f"core-{synchronous.lower()}"
        directory.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{directory / 'core.db'}"
        ours, theirs = alternate(
            sizes.rounds,
            partial(_core_once, bench, url, synchronous, sizes.core_seconds),
            partial(_raw_once, bench, directory, synchronous),
        )
        case = f"{sizes.core_writers} writers, synchronous {synchronous}"
        row = _core_row("core_write", case, ours, theirs, "raw sqlite3, 1 writer", {})
        rows.append(row)
        again = partial(_core_once, bench, url, synchronous, sizes.profile_seconds)
        bench.profile("core_write", row.case, bench.pool.workers[0].pid, [row], again)
    return rows


def _raw_pg_once(bench: Bench, url: str) -> dict[str, float]:
    result: dict[str, float] = bench.pool.workers[0].call(
        workers.raw_pg_updates,
        database_url=url,
        warmup=bench.sizes.warmup,
        seconds=bench.sizes.core_seconds,
    )
    return result


def core_write_pg(bench: Bench) -> list[Row]:
    """N asyncio tasks calling Core.update on a PostgreSQL Store in one worker process,
    against one psycopg writer doing the same row update and event insert, one
    transaction each (fsync on for both, each on a database of its own)."""
    sizes = bench.sizes
    cluster = bench.postgres()
    core_url, raw_url = cluster.database("core"), cluster.database("raw")
    ours, theirs = alternate(
        sizes.rounds,
        partial(_core_once, bench, core_url, "FULL", sizes.core_seconds),
        partial(_raw_pg_once, bench, raw_url),
    )
    case = f"{sizes.core_writers} writers"
    row = _core_row(
        "core_write_pg",
        case,
        ours,
        theirs,
        "raw psycopg, 1 writer",
        {
            "CPU": "the client process's only (PostgreSQL's backends are not counted)",
            "jobstatus also": "locks and bumps the revision counter and sends a NOTIFY per group",
        },
    )
    again = partial(_core_once, bench, core_url, "FULL", sizes.profile_seconds)
    bench.profile("core_write_pg", case, bench.pool.workers[0].pid, [row], again)
    return [row]


# --- watch ---------------------------------------------------------------------------


def _open(bench: Bench, server: Endpoint, groups: list[list[str]]) -> None:
    """Open one stream per id in each group, a watcher process per group."""
    bench.pool.map(
        workers.open_streams,
        [
            {
                "name": server.name,
                "address": server.address,
                "job_ids": ids,
                "batch": bench.sizes.open_batch,
                "per_channel": bench.sizes.streams_per_channel,
            }
            for ids in groups
        ],
    )


def _close(bench: Bench, server: Endpoint, groups: int) -> None:
    bench.pool.map(workers.close_streams, [{"name": server.name}] * groups)


def _watcher_cpu(bench: Bench, groups: int) -> float:
    return sum(float(cpu) for cpu, _ in bench.pool.map(workers.cpu_now, [{}] * groups))


@dataclass(frozen=True)
class Fanout:
    to_last_ms: float  # from the write being sent (commit included) to the last receipt
    to_first_ms: float
    commit_to_last_ms: float  # from the write's answer (the commit) to the last receipt
    commit_ms: float  # from the write being sent to its answer
    received: int
    server_cpu: float  # seconds
    load_cpu: float  # seconds
    seconds: float


def _fanout_once(
    bench: Bench,
    server: Endpoint,
    writer: Writer,
    job_id: str,
    progress: Iterator[int],
    shares: list[int],
) -> Fanout:
    time.sleep(0.2)  # let the previous change's traffic die down
    load_before = _watcher_cpu(bench, len(shares))
    server_before = cpu_seconds(server.pid)
    began = time.monotonic()
    sent = time.monotonic_ns()
    revision = writer.update(job_id, next(progress) % 100)
    answered = time.monotonic_ns()
    results = bench.pool.map(
        workers.wait_revision,
        [{"name": server.name, "revision": revision, "expected": share} for share in shares],
    )
    seconds = time.monotonic() - began
    server_cpu = cpu_seconds(server.pid) - server_before
    load_cpu = _watcher_cpu(bench, len(shares)) - load_before
    last = max(int(r["last_ns"]) for r in results)
    first = min((int(r["first_ns"]) for r in results if r["received"]), default=last)
    return Fanout(
        to_last_ms=(last - sent) / 1e6,
        to_first_ms=(first - sent) / 1e6,
        commit_to_last_ms=(last - answered) / 1e6,
        commit_ms=(answered - sent) / 1e6,
        received=sum(int(r["received"]) for r in results),
        server_cpu=server_cpu,
        load_cpu=load_cpu,
        seconds=seconds,
    )


def watch_fanout(bench: Bench) -> list[Row]:
    """One change to N open streams (all watching the job), opened from several client
    processes: from the write being sent (jobstatus's commit included) to the last
    stream's receipt, and server memory per open stream (VmRSS delta / streams)."""
    return [row for streams in bench.sizes.fanout_streams for row in _fanout_case(bench, streams)]


def _fanout_case(bench: Bench, streams: int) -> list[Row]:
    sizes = bench.sizes
    case = f"{streams:,} streams"
    with running_pair(bench.workdir, f"fanout-{streams}") as (server, bare):
        subject = Endpoint("jobstatus", server.address, subject_pid(server))
        [job] = create_jobs(subject.address, jobs.job_ids("fan", 1))
        job_id = job.import_request_id
        bare.answer_with(answer_of_job(job))
        baseline = Endpoint("baseline", bare.address, bare.pid)
        groups = _split([job_id] * streams, min(sizes.watcher_procs, streams))
        shares = [len(group) for group in groups]
        memory: list[float] = []
        opening: list[float] = []
        for endpoint in (subject, baseline):
            before = rss_bytes(endpoint.pid)
            began = time.monotonic()
            _open(bench, endpoint, groups)
            opening.append(time.monotonic() - began)
            time.sleep(sizes.settle)
            memory.append((rss_bytes(endpoint.pid) - before) / streams / 1024)
        ours_writer, their_writer = Writer(subject.address), Writer(baseline.address)
        progress = itertools.count(2)
        try:
            change = partial(_fanout_once, bench, job_id=job_id, progress=progress, shares=shares)
            again = partial(change, subject, ours_writer)
            ours, theirs = alternate(
                sizes.fanout_changes, again, partial(change, baseline, their_writer)
            )
            rows = _fanout_rows(case, streams, ours, theirs, memory, opening)
            bench.profile(
                "watch_fanout",
                case,
                subject.pid,
                rows,
                lambda: [again() for _ in range(max(2, sizes.fanout_changes))],
            )
        finally:
            ours_writer.close()
            their_writer.close()
        _close(bench, subject, len(groups))
        _close(bench, baseline, len(groups))
    return rows


def _fanout_rows(
    case: str,
    streams: int,
    ours: list[Fanout],
    theirs: list[Fanout],
    memory: list[float],
    opening: list[float],
) -> list[Row]:
    def both(figure: Callable[[Fanout], float], scale: float = 1.0) -> str:
        return (
            f"{scale * median([figure(f) for f in ours]):.1f} / "
            f"{scale * median([figure(f) for f in theirs]):.1f}"
        )

    common: dict[str, Any] = {
        "scenario": "watch_fanout",
        "case": case,
        "baseline_name": BROADCASTER,
        "load_cpu": median([f.load_cpu / f.seconds for f in ours]),
        "baseline_load_cpu": median([f.load_cpu / f.seconds for f in theirs]),
        "server_cpu": median([f.server_cpu / f.seconds for f in ours]),
        "baseline_server_cpu": median([f.server_cpu / f.seconds for f in theirs]),
    }
    to_last = median([f.to_last_ms for f in ours])
    latency = Row(
        metric="one change: write to the last receipt",
        unit="ms",
        value=to_last,
        baseline=median([f.to_last_ms for f in theirs]),
        target=Target("<=", 1.2),
        extra={
            "changes": len(ours),
            "jobstatus ms per change": " ".join(f"{f.to_last_ms:.1f}" for f in ours),
            "baseline ms per change": " ".join(f"{f.to_last_ms:.1f}" for f in theirs),
            "to the first receipt ms jobstatus / baseline": both(lambda f: f.to_first_ms),
            "commit (write answered) to the last receipt ms jobstatus / baseline": both(
                lambda f: f.commit_to_last_ms
            ),
            "write answered after ms jobstatus / baseline": both(lambda f: f.commit_ms),
            "delivered events/s jobstatus": round(streams / (to_last / 1000)) if to_last > 0 else 0,
            "server CPU µs per delivered event jobstatus / baseline": both(
                lambda f: f.server_cpu / streams, 1e6
            ),
            "receipts missing": sum(streams - f.received for f in ours + theirs),
        },
        **common,
    )
    memory_row = Row(
        metric="server memory per open stream",
        unit="KiB",
        value=memory[0],
        baseline=memory[1],
        target=Target("<=", 1.1),
        extra={
            "seconds to open jobstatus / baseline": f"{opening[0]:.1f} / {opening[1]:.1f}",
            "streams opened per second jobstatus": round(streams / opening[0]),
        },
        **common,
    )
    return [latency, memory_row]


@dataclass(frozen=True)
class Sustained:
    commit_to_receipt_ms: list[float]
    send_to_receipt_ms: list[float]
    writes: int
    receipts: int
    seconds: float
    server_cpu: float
    watcher_cpu: float
    writer_cpu: float


def _sustained_once(
    bench: Bench, server: Endpoint, ids: list[str], groups: int, seconds: float
) -> Sustained:
    """One paced run: the writer is the worker after the `groups` watcher processes."""
    sizes = bench.sizes
    writer = bench.pool.workers[groups]
    bench.pool.map(workers.take_receipts, [{"name": server.name}] * groups)
    watchers_before = _watcher_cpu(bench, groups)
    start_at = time.monotonic() + 0.5
    stop_at = start_at + seconds
    writer.send(
        workers.paced_updates,
        address=server.address,
        job_ids=ids,
        rate=sizes.sustained_rate,
        start_at=start_at,
        stop_at=stop_at,
    )
    [server_cpu] = cpu_window([server.pid], start_at, stop_at)
    written = writer.recv()
    time.sleep(0.5)  # the last changes on their way
    taken = bench.pool.map(workers.take_receipts, [{"name": server.name}] * groups)
    receipts = [receipt for part in taken for receipt in part]
    watcher_cpu = _watcher_cpu(bench, groups) - watchers_before
    writes = {
        int(revision): (int(sent), int(answered)) for revision, sent, answered in written["samples"]
    }
    commit: list[float] = []
    send: list[float] = []
    for revision, received in receipts:
        if revision in writes:
            sent, answered = writes[revision]
            commit.append((received - answered) / 1e6)
            send.append((received - sent) / 1e6)
    return Sustained(
        commit_to_receipt_ms=commit,
        send_to_receipt_ms=send,
        writes=len(written["samples"]),
        receipts=len(commit),
        seconds=seconds,
        server_cpu=server_cpu,
        watcher_cpu=watcher_cpu,
        writer_cpu=float(written["cpu"]),
    )


def watch_sustained(bench: Bench) -> list[Row]:
    """A steady stream of changes (sustained_rate per second, to random jobs) into N
    watchers, each watching one job; commit (the write's answer reaching the writer
    process) to receipt (in a watcher process), on one machine clock. Both servers hand
    a change to the streams before the writer's answer leaves, so a watcher may hold it
    before the writer has its answer: at low rates the figures can be below zero. The
    row details give send-to-receipt too, which cannot."""
    sizes = bench.sizes
    streams = sizes.sustained_watchers
    case = f"{sizes.sustained_rate:g} changes/s into {streams:,} watchers"
    ids = jobs.job_ids("sus", streams)
    with running_pair(bench.workdir, "sustained") as (server, bare):
        subject = Endpoint("jobstatus", server.address, subject_pid(server))
        created = create_jobs(subject.address, ids)
        bare.answer_with(answer_of_job(created[0]))
        baseline = Endpoint("baseline", bare.address, bare.pid)
        procs = min(sizes.watcher_procs, streams)
        groups = _split(ids, procs)
        _open(bench, subject, groups)
        _open(bench, baseline, groups)
        half = sizes.sustained_seconds / 2
        ours, theirs = alternate(
            2,
            partial(_sustained_once, bench, subject, ids, procs, half),
            partial(_sustained_once, bench, baseline, ids, procs, half),
        )

        def pooled(results: list[Sustained]) -> tuple[list[float], list[float]]:
            return (
                [ms for r in results for ms in r.commit_to_receipt_ms],
                [ms for r in results for ms in r.send_to_receipt_ms],
            )

        (commit, send), (base_commit, base_send) = pooled(ours), pooled(theirs)
        seconds = sum(r.seconds for r in ours)
        base_seconds = sum(r.seconds for r in theirs)
        common: dict[str, Any] = {
            "scenario": "watch_sustained",
            "case": case,
            "baseline_name": BROADCASTER,
            "load_cpu": sum(r.watcher_cpu + r.writer_cpu for r in ours) / seconds,
            "baseline_load_cpu": sum(r.watcher_cpu + r.writer_cpu for r in theirs) / base_seconds,
            "server_cpu": sum(r.server_cpu for r in ours) / seconds,
            "baseline_server_cpu": sum(r.server_cpu for r in theirs) / base_seconds,
        }
        detail: dict[str, float | int | str] = {
            "writes jobstatus / baseline": (
                f"{sum(r.writes for r in ours)} / {sum(r.writes for r in theirs)}"
            ),
            "receipts matched jobstatus / baseline": f"{len(commit)} / {len(base_commit)}",
            "send-to-receipt p50 / p99 ms jobstatus": (
                f"{percentile(send, 0.5):.2f} / {percentile(send, 0.99):.2f}"
            ),
            "send-to-receipt p50 / p99 ms baseline": (
                f"{percentile(base_send, 0.5):.2f} / {percentile(base_send, 0.99):.2f}"
            ),
            "writer CPU cores jobstatus": round(sum(r.writer_cpu for r in ours) / seconds, 2),
        }
        p99 = Row(
            metric="commit-to-receipt p99",
            unit="ms",
            value=percentile(commit, 0.99),
            baseline=percentile(base_commit, 0.99),
            target=Target("<=", 2.0),
            extra=detail,
            **common,
        )
        p50 = Row(
            metric="commit-to-receipt p50",
            unit="ms",
            value=percentile(commit, 0.5),
            baseline=percentile(base_commit, 0.5),
            **common,
        )
        delivered = Row(
            metric="delivered events",
            unit="events/s",
            value=len(commit) / seconds,
            baseline=len(base_commit) / base_seconds,
            **common,
        )
        rows = [p99, p50, delivered]
        again = partial(_sustained_once, bench, subject, ids, procs, sizes.profile_seconds)
        bench.profile("watch_sustained", case, subject.pid, rows, again)
        _close(bench, subject, procs)
        _close(bench, baseline, procs)
    return rows


def awareness(bench: Bench) -> list[Row]:
    """How long after a commit a client knows: one watcher, and one client polling at
    the documented rate (1 request per poll_interval seconds), on the same changes."""
    sizes = bench.sizes
    with running_subject(bench.workdir, "awareness") as subject:
        [job] = create_jobs(subject.address, jobs.job_ids("aware", 1))
        job_id = job.import_request_id
        watcher, poller, writer = bench.pool.workers[:3]
        watcher.call(
            workers.open_streams,
            name="awareness",
            address=subject.address,
            job_ids=[job_id],
            batch=1,
            per_channel=1,
        )
        watcher.call(workers.take_receipts, name="awareness")
        start_at = time.monotonic() + 0.5
        stop_at = start_at + sizes.awareness_seconds
        poller.send(
            workers.poll_status,
            address=subject.address,
            job_id=job_id,
            interval=sizes.poll_interval,
            start_at=start_at,
            stop_at=stop_at,
        )
        writer.send(
            workers.paced_updates,
            address=subject.address,
            job_ids=[job_id],
            rate=sizes.awareness_rate,
            start_at=start_at,
            stop_at=stop_at,
        )
        written = writer.recv()
        polled = poller.recv()
        time.sleep(0.2)
        receipts: list[tuple[int, int]] = watcher.call(workers.take_receipts, name="awareness")
        watcher.call(workers.close_streams, name="awareness")
    commits = {int(revision): int(answered) for revision, _, answered in written["samples"]}
    watched = [(t - commits[r]) / 1e6 for r, t in receipts if r in commits]
    polls = sorted((int(t), int(r)) for t, r in polled["polls"])
    polling: list[float] = []
    for revision, committed in commits.items():
        seen = next((t for t, r in polls if t >= committed and r >= revision), None)
        if seen is not None:
            polling.append((seen - committed) / 1e6)
    common: dict[str, Any] = {
        "scenario": "awareness",
        "case": f"{sizes.awareness_rate:g} changes/s for {sizes.awareness_seconds:g} s",
        "baseline_name": f"polling every {sizes.poll_interval:g} s",
        "load_cpu": (float(written["cpu"]) + float(polled["cpu"])) / float(written["seconds"]),
    }
    detail: dict[str, float | int | str] = {
        "changes": len(commits),
        "watcher receipts": len(watched),
        "polls": len(polls),
        "changes seen by a poll": len(polling),
    }
    return [
        Row(
            metric="change-to-awareness p99",
            unit="ms",
            value=percentile(watched, 0.99),
            baseline=percentile(polling, 0.99),
            extra=detail,
            **common,
        ),
        Row(
            metric="change-to-awareness p50",
            unit="ms",
            value=percentile(watched, 0.5),
            baseline=percentile(polling, 0.5),
            **common,
        ),
    ]


# --- REST ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestRun:
    rps: float
    cpu_per_request: float  # server CPU seconds per request
    server_cores: float
    load_cores: float  # wrk's
    p50_ms: float
    p99_ms: float
    errors: int


def _rest_once(bench: Bench, server: Endpoint, connections: int, seconds: int) -> RestRun:
    """One wrk run (after a one-second warm-up run in full mode) against `server.address`
    (a URL here); the server's CPU over the measured run's lifetime."""
    if bench.sizes.warmup >= 0.5:
        wrk.run(server.address, connections, 1)
    before = cpu_seconds(server.pid)
    result = wrk.run(server.address, connections, seconds)
    server_cpu = cpu_seconds(server.pid) - before
    return RestRun(
        rps=result.rps,
        cpu_per_request=server_cpu / result.requests if result.requests else 0.0,
        server_cores=server_cpu / result.wall,
        load_cores=result.cores,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
    )


def _rest_rows(case: str, ours: list[RestRun], theirs: list[RestRun], size: int) -> list[Row]:
    def both(figure: Callable[[RestRun], float]) -> str:
        return (
            f"{median([figure(r) for r in ours]):.2f} / {median([figure(r) for r in theirs]):.2f}"
        )

    common: dict[str, Any] = {
        "scenario": "rest_map_status",
        "case": case,
        "baseline_name": "bare ASGI app, uvicorn",
        "load_cpu": median([r.load_cores for r in ours]),
        "baseline_load_cpu": median([r.load_cores for r in theirs]),
        "server_cpu": median([r.server_cores for r in ours]),
        "baseline_server_cpu": median([r.server_cores for r in theirs]),
    }
    return [
        Row(
            metric="GET /api/v1/map/import/status/{id}",
            unit="requests/s",
            value=median([r.rps for r in ours]),
            baseline=median([r.rps for r in theirs]),
            target=Target(">=", 0.75),
            extra={
                "rounds": len(ours),
                "load tool": wrk.describe(),
                "jobstatus requests/s per round": " ".join(f"{r.rps:.0f}" for r in ours),
                "baseline requests/s per round": " ".join(f"{r.rps:.0f}" for r in theirs),
                "latency p50 ms jobstatus / baseline": both(lambda r: r.p50_ms),
                "latency p99 ms jobstatus / baseline": both(lambda r: r.p99_ms),
                "errors": sum(r.errors for r in ours + theirs),
                "body bytes (both)": size,
            },
            **common,
        ),
        Row(
            metric="server CPU per request",
            unit="µs",
            value=1e6 * median([r.cpu_per_request for r in ours]),
            baseline=1e6 * median([r.cpu_per_request for r in theirs]),
            **common,
        ),
    ]


def rest_map_status(bench: Bench) -> list[Row]:
    """GET /api/v1/map/import/status/{id} on jobstatus's HTTP listener (open mode: no API
    key; it shares the event loop with gRPC) against a bare ASGI app answering the same
    body and headers from the same uvicorn setup, both driven by the same command of the
    same load tool (bench/wrk.py)."""
    sizes = bench.sizes
    wrk.find()  # no load tool: fail at once, naming the install step
    with running_pair(bench.workdir, "rest", baseline="bench.asgi_baseline") as (server, bare):
        [job] = create_jobs(server.address, jobs.job_ids("rest", 1))
        path = f"/api/v1/map/import/status/{job.import_request_id}"
        status, headers, body = http_get(server.http_url + path)
        if status != 200 or not body.startswith(b"{"):
            raise RuntimeError(f"jobstatus answered {status}: {body[:200]!r}")
        # The bare app sends the same headers; uvicorn adds date and server to both. Not
        # `connection`: urllib asked this one GET to close, and uvicorn said so; copied, it
        # would make the baseline close every keep-alive connection of the load tool.
        hop = {"date", "server", "content-length", "connection"}
        same = [(k, v) for k, v in headers if k.lower() not in hop]
        bare.answer_with(answer_of_http(body, same))
        _, _, bare_body = http_get(bare.http_url + path)
        if bare_body != body:
            raise RuntimeError("the bare ASGI app does not answer jobstatus's bytes")
        subject = Endpoint("jobstatus", server.http_url + path, subject_pid(server))
        baseline = Endpoint("baseline", bare.http_url + path, bare.pid)
        rows: list[Row] = []
        missed: list[tuple[int, list[Row]]] = []
        for connections in sizes.rest_connections:
            ours, theirs = alternate(
                sizes.rounds,
                partial(_rest_once, bench, subject, connections, sizes.rest_seconds),
                partial(_rest_once, bench, baseline, connections, sizes.rest_seconds),
            )
            case = f"{connections} connection{'s' if connections > 1 else ''}"
            case_rows = _rest_rows(case, ours, theirs, len(body))
            rows += case_rows
            if any(row.met is False for row in case_rows):
                missed.append((connections, case_rows))
        if missed:
            connections, case_rows = missed[-1]
            seconds = max(1, round(sizes.profile_seconds))
            again = partial(wrk.run, subject.address, connections, seconds)
            bench.profile("rest_map_status", case_rows[0].case, subject.pid, case_rows, again)
    return rows


# --- replicas on PostgreSQL ----------------------------------------------------------


def cross_replica_latency(bench: Bench) -> list[Row]:
    """Two jobstatus processes (replicas A and B) on one PostgreSQL database. A paced
    writer updates random jobs through A; each watcher process holds one stream per job on
    A and one on B. Commit (A's answer reaching the writer) to receipt, on one machine
    clock: on B (the change crosses replicas: NOTIFY wakes B's hub, which reads the
    events from the table) against on A (the writer's own replica: the single-replica
    latency), the same changes at the same moment."""
    sizes = bench.sizes
    url = bench.postgres().database("replicas")
    ids = jobs.job_ids("rep", sizes.replica_watchers)
    with running_replicas(url, 2) as (server_a, server_b):
        a = Endpoint("replica-a", server_a.address, subject_pid(server_a))
        b = Endpoint("replica-b", server_b.address, subject_pid(server_b))
        create_jobs(a.address, ids)
        procs = min(sizes.watcher_procs, len(ids))
        groups = _split(ids, procs)
        _open(bench, a, groups)
        _open(bench, b, groups)
        writer = bench.pool.workers[procs]
        for endpoint in (a, b):
            bench.pool.map(workers.take_receipts, [{"name": endpoint.name}] * procs)
        watchers_before = _watcher_cpu(bench, procs)
        start_at = time.monotonic() + 0.5
        stop_at = start_at + sizes.replica_seconds
        writer.send(
            workers.paced_updates,
            address=a.address,
            job_ids=ids,
            rate=sizes.replica_rate,
            start_at=start_at,
            stop_at=stop_at,
        )
        cpu_a, cpu_b = cpu_window([a.pid, b.pid], start_at, stop_at)
        written = writer.recv()
        time.sleep(0.5)  # the last changes on their way
        taken = {
            endpoint.name: [
                receipt
                for part in bench.pool.map(workers.take_receipts, [{"name": endpoint.name}] * procs)
                for receipt in part
            ]
            for endpoint in (a, b)
        }
        watcher_cpu = _watcher_cpu(bench, procs) - watchers_before
        _close(bench, a, procs)
        _close(bench, b, procs)
    answered = {int(revision): int(done) for revision, _, done in written["samples"]}

    def latencies(name: str) -> dict[int, float]:
        return {r: (t - answered[r]) / 1e6 for r, t in taken[name] if r in answered}

    local, remote = latencies(a.name), latencies(b.name)
    paired = [remote[r] - local[r] for r in remote if r in local]
    seconds = sizes.replica_seconds
    common: dict[str, Any] = {
        "scenario": "cross_replica_latency",
        "case": (
            f"{sizes.replica_rate:g} changes/s on A, {len(ids):,} watchers on each of A and B"
        ),
        "baseline_name": "on the writer's replica A, same changes",
        "load_cpu": (watcher_cpu + float(written["cpu"])) / seconds,
        # One run measures both: the server CPU columns are replica B / replica A.
        "server_cpu": cpu_b / seconds,
        "baseline_server_cpu": cpu_a / seconds,
    }
    detail: dict[str, float | int | str] = {
        "writes": len(answered),
        "write errors": int(written["errors"]),
        "receipts matched on B / on A": f"{len(remote)} / {len(local)}",
        "B minus A per change p50 / p99 ms": (
            f"{percentile(paired, 0.5):.2f} / {percentile(paired, 0.99):.2f}"
        ),
        "server CPU columns": "replica B (watchers only) / replica A (writer and watchers)",
        "storage": "PostgreSQL on loopback, fsync on",
    }
    cross, single = list(remote.values()), list(local.values())
    return [
        Row(
            metric="commit-to-receipt p99",
            unit="ms",
            value=percentile(cross, 0.99),
            baseline=percentile(single, 0.99),
            extra=detail,
            **common,
        ),
        Row(
            metric="commit-to-receipt p50",
            unit="ms",
            value=percentile(cross, 0.5),
            baseline=percentile(single, 0.5),
            **common,
        ),
    ]


# --- production-like: watchers, writers and readers at once ---------------------------


def write_groups(server: Any) -> tuple[float, float]:
    """(groups, writes) the server's writer has committed so far, from its /metrics."""
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = {
        name: float(value)
        for name, value in re.findall(
            r"^(jobstatus_write_groups_total|jobstatus_write_group_writes_total) (\S+)$",
            text,
            re.MULTILINE,
        )
    }
    return (
        found.get("jobstatus_write_groups_total", 0.0),
        found.get("jobstatus_write_group_writes_total", 0.0),
    )


def mean_group(before: tuple[float, float], after: tuple[float, float]) -> float:
    groups = after[0] - before[0]
    return (after[1] - before[1]) / groups if groups else 0.0


@dataclass(frozen=True)
class Mix:
    update_ms: list[float]
    get_ms: list[float]
    receipt_ms: list[float]  # commit (the write's answer) to a watcher's receipt
    writes: int
    gets: int
    receipts: int
    errors: int
    server_cpu: float  # seconds
    load_cpu: float  # seconds
    seconds: float
    group: float  # mean writes per group commit (jobstatus only)


def _mix_once(bench: Bench, server: Endpoint, ids: list[str], procs: int, http: Any) -> Mix:
    sizes = bench.sizes
    writer, reader = bench.pool.workers[procs], bench.pool.workers[procs + 1]
    bench.pool.map(workers.take_receipts, [{"name": server.name}] * procs)
    watchers_before = _watcher_cpu(bench, procs)
    groups_before = write_groups(http) if http is not None else (0.0, 0.0)
    start_at = time.monotonic() + 0.5
    stop_at = start_at + sizes.mix_seconds
    writer.send(
        workers.paced_writers,
        address=server.address,
        job_ids=ids,
        writers=sizes.mix_writers,
        rate=sizes.mix_rate,
        start_at=start_at,
        stop_at=stop_at,
    )
    reader.send(
        workers.paced_gets,
        address=server.address,
        job_ids=ids,
        rate=sizes.mix_gets,
        start_at=start_at,
        stop_at=stop_at,
    )
    [server_cpu] = cpu_window([server.pid], start_at, stop_at)
    written, read = writer.recv(), reader.recv()
    time.sleep(0.3)  # the last changes on their way
    receipts = [
        receipt
        for part in bench.pool.map(workers.take_receipts, [{"name": server.name}] * procs)
        for receipt in part
    ]
    watcher_cpu = _watcher_cpu(bench, procs) - watchers_before
    group = mean_group(groups_before, write_groups(http)) if http is not None else 0.0
    answered = {int(revision): int(done) for revision, _, done in written["samples"]}
    return Mix(
        update_ms=[(done - sent) / 1e6 for _, sent, done in written["samples"]],
        get_ms=[float(ms) for ms in read["latencies"]],
        receipt_ms=[(t - answered[r]) / 1e6 for r, t in receipts if r in answered],
        writes=len(answered),
        gets=len(read["latencies"]),
        receipts=len(receipts),
        errors=int(written["errors"]) + int(read["errors"]),
        server_cpu=server_cpu,
        load_cpu=watcher_cpu + float(written["cpu"]) + float(read["cpu"]),
        seconds=sizes.mix_seconds,
        group=group,
    )


def _mix(bench: Bench, scenario: str, database_url: str | None, storage: str) -> list[Row]:
    sizes = bench.sizes
    case = (
        f"{storage}: {sizes.mix_watchers:,} watchers, {sizes.mix_writers} writers at "
        f"{sizes.mix_rate:g} changes/s, {sizes.mix_gets:g} Gets/s"
    )
    ids = jobs.job_ids("mix", sizes.mix_watchers)
    with running_pair(bench.workdir, scenario, database_url=database_url) as (server, bare):
        subject = Endpoint("jobstatus", server.address, subject_pid(server))
        [first, *_] = create_jobs(subject.address, ids)
        bare.answer_with(answer_of_job(first))
        baseline = Endpoint("baseline", bare.address, bare.pid)
        procs = min(sizes.watcher_procs, len(ids))
        groups = _split(ids, procs)  # one stream per job
        _open(bench, subject, groups)
        _open(bench, baseline, groups)
        ours = _mix_once(bench, subject, ids, procs, server)
        theirs = _mix_once(bench, baseline, ids, procs, None)
        rows = _mix_rows(scenario, case, ours, theirs)
        again = partial(_mix_once, bench, subject, ids, procs, server)
        bench.profile(scenario, case, subject.pid, rows, again)
        _close(bench, subject, procs)
        _close(bench, baseline, procs)
    return rows


def _mix_rows(scenario: str, case: str, ours: Mix, theirs: Mix) -> list[Row]:
    common: dict[str, Any] = {
        "scenario": scenario,
        "case": case,
        "baseline_name": "bare grpc.aio + broadcaster, same load",
        "load_cpu": ours.load_cpu / ours.seconds,
        "baseline_load_cpu": theirs.load_cpu / theirs.seconds,
        "server_cpu": ours.server_cpu / ours.seconds,
        "baseline_server_cpu": theirs.server_cpu / theirs.seconds,
    }

    def p(values: list[float], q: float) -> float:
        return percentile(values, q) if values else 0.0

    detail: dict[str, float | int | str] = {
        "writes / Gets / receipts jobstatus": f"{ours.writes} / {ours.gets} / {ours.receipts}",
        "writes / Gets / receipts baseline": f"{theirs.writes} / {theirs.gets} / {theirs.receipts}",
        "errors jobstatus / baseline": f"{ours.errors} / {theirs.errors}",
        "p50 ms update / Get / receipt jobstatus": (
            f"{p(ours.update_ms, 0.5):.2f} / {p(ours.get_ms, 0.5):.2f} / "
            f"{p(ours.receipt_ms, 0.5):.2f}"
        ),
        "p50 ms update / Get / receipt baseline": (
            f"{p(theirs.update_ms, 0.5):.2f} / {p(theirs.get_ms, 0.5):.2f} / "
            f"{p(theirs.receipt_ms, 0.5):.2f}"
        ),
        "mean writes per group commit jobstatus": round(ours.group, 2),
    }
    return [
        Row(
            metric="UpdateMapImport p99",
            unit="ms",
            value=p(ours.update_ms, 0.99),
            baseline=p(theirs.update_ms, 0.99),
            extra=detail,
            **common,
        ),
        Row(
            metric="GetMapImportStatus p99",
            unit="ms",
            value=p(ours.get_ms, 0.99),
            baseline=p(theirs.get_ms, 0.99),
            **common,
        ),
        Row(
            metric="commit-to-receipt p99",
            unit="ms",
            value=p(ours.receipt_ms, 0.99),
            baseline=p(theirs.receipt_ms, 0.99),
            **common,
        ),
        Row(
            metric="delivered events",
            unit="events/s",
            value=ours.receipts / ours.seconds,
            baseline=theirs.receipts / theirs.seconds,
            **common,
        ),
        Row(
            metric="server CPU",
            unit="cores",
            value=ours.server_cpu / ours.seconds,
            baseline=theirs.server_cpu / theirs.seconds,
            **common,
        ),
    ]


def production_mix(bench: Bench) -> list[Row]:
    """Production-like on SQLite (synchronous FULL): watchers on every job, paced writers
    and paced Gets at once, against the bare server under the same load (report)."""
    return _mix(bench, "production_mix", None, "SQLite")


def production_mix_pg(bench: Bench) -> list[Row]:
    """The same on PostgreSQL (fsync on)."""
    return _mix(bench, "production_mix_pg", bench.postgres().database("mix"), "PostgreSQL")
