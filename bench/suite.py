"""The suite: sizes, the table of scenarios, and the run that writes the report.

A scenario is one function `run(bench) -> list[Row]`, registered in SCENARIOS with a
name and a title. A scenario that cannot be measured yet is registered with `todo`: it
is skipped with its reason printed and listed in the report, never silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import profile
from bench.procstat import cpu_seconds
from bench.results import Report, Row, Skipped, markdown_table, render, write
from bench.workers import Pool
from tests.pg import PgCluster

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FINDINGS = ROOT / "bench" / "findings.md"


@dataclass(frozen=True)
class Sizes:
    """How big and how long. `make bench` runs FULL (the issue's sizes); the test
    suite runs SMOKE, which only proves every scenario still works."""

    rounds: int = 5  # jobstatus and baseline alternate this many times per case (ABBA)
    warmup: float = 0.5
    unary_concurrency: tuple[int, ...] = (1, 16, 64)
    unary_seconds: float = 2.5
    unary_procs: int = 1  # load processes for unary calls (they use raw bytes: cheap)
    write_concurrency: tuple[int, ...] = (1, 16)
    core_writers: int = 16
    core_seconds: float = 2.0
    core_synchronous: tuple[str, ...] = ("NORMAL", "FULL")
    fanout_streams: tuple[int, ...] = (1_000, 10_000)
    fanout_changes: int = 5
    watcher_procs: int = 4
    open_batch: int = 250  # streams a watcher process opens at once
    streams_per_channel: int = 500
    settle: float = 1.0  # seconds after opening streams before memory is read
    sustained_watchers: int = 1_000
    sustained_rate: float = 200.0
    sustained_seconds: float = 10.0
    poll_interval: float = 5.0  # the documented rate limit: 1 request per 5 s
    awareness_rate: float = 5.0
    awareness_seconds: float = 40.0
    profile_seconds: float = 6.0
    rest_connections: tuple[int, ...] = (1, 16, 64)  # wrk connections (one wrk thread)
    rest_seconds: int = 3  # wrk takes whole seconds
    replica_watchers: int = 100  # per replica, each watching a job of its own
    replica_rate: float = 100.0
    replica_seconds: float = 10.0
    mix_watchers: int = 1_000  # one stream per job
    mix_writers: int = 50
    mix_rate: float = 500.0  # changes/s, all writers together
    mix_gets: float = 2_000.0  # Gets/s
    mix_seconds: float = 10.0
    dashboard_pages: int = 100  # open dashboards, 4 SSE streams each
    dashboard_rate: float = 200.0
    dashboard_seconds: float = 5.0  # per round
    dashboard_jobs: int = 1_000


FULL = Sizes()
SMOKE = Sizes(
    rounds=1,
    warmup=0.1,
    unary_concurrency=(1, 4),
    unary_seconds=0.25,
    write_concurrency=(1, 4),
    core_writers=4,
    core_seconds=0.25,
    core_synchronous=("NORMAL",),
    fanout_streams=(10,),
    fanout_changes=2,
    watcher_procs=2,
    open_batch=5,
    settle=0.2,
    sustained_watchers=10,
    sustained_rate=50.0,
    sustained_seconds=0.6,
    poll_interval=0.2,
    awareness_rate=20.0,
    awareness_seconds=1.0,
    profile_seconds=0.5,
    rest_connections=(4,),
    rest_seconds=1,
    replica_watchers=4,
    replica_rate=40.0,
    replica_seconds=1.0,
    mix_watchers=10,
    mix_writers=4,
    mix_rate=40.0,
    mix_gets=80.0,
    mix_seconds=0.6,
    dashboard_pages=3,
    dashboard_rate=40.0,
    dashboard_seconds=0.6,
    dashboard_jobs=20,
)


@dataclass
class Bench:
    """What a scenario gets: the sizes, the load processes, a scratch directory."""

    sizes: Sizes
    pool: Pool
    workdir: Path
    out: Path
    report: Report
    profiling: bool
    pg: PgCluster | None = None

    def postgres(self) -> PgCluster:
        """The run's throwaway PostgreSQL cluster (tests/pg.py), started on first use,
        durable (fsync on): the PostgreSQL scenarios measure durable commits. Without
        PostgreSQL's server binaries this raises, naming the install step."""
        if self.pg is None:
            self.log("starting a throwaway PostgreSQL cluster (fsync on) ...")
            self.pg = PgCluster.create(durable=True)
        return self.pg

    def log(self, message: str) -> None:
        print(f"[bench] {message}", flush=True)

    def profile(
        self, scenario: str, case: str, pid: int, rows: Sequence[Row], again: Callable[[], object]
    ) -> None:
        """When one of `rows` missed its target, run `again` (the jobstatus side of the
        case) under py-spy and attach a summary of where the time went."""
        missed = [row for row in rows if row.met is False]
        if not missed or not self.profiling:
            return
        key = f"{scenario}, {case}"
        path = self.out / f"profile-{re.sub(r'[^a-z0-9]+', '-', key.lower()).strip('-')}.json"
        self.log(f"profiling {key} (target missed) ...")
        try:
            with profile.recording(pid, path):
                again()
            self.report.profiles[key] = profile.summarize(path)
        except Exception as error:  # a profile is a bonus: never lose the figures for it
            self.log(f"profile failed: {error}")
            return
        for row in missed:
            row.profile = key


def cpu_window(pids: Sequence[int], start_at: float, stop_at: float) -> list[float]:
    """CPU seconds each process used between two monotonic instants (sleeps till then)."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    before = [cpu_seconds(pid) for pid in pids]
    time.sleep(max(0.0, stop_at - time.monotonic()))
    return [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Bench], list[Row]] | None
    todo: str | None = None  # why it is not measured yet


def todo(name: str, title: str, reason: str) -> Scenario:
    return Scenario(name, title, None, reason)


def scenarios() -> list[Scenario]:
    from bench import dashboard, tracing
    from bench import scenarios as s

    return [
        Scenario("unary_get", "unary GetMapImportStatus vs a bare grpc.aio server", s.unary_get),
        Scenario(
            "unary_get_traced",
            "unary GetMapImportStatus with OpenTelemetry tracing on vs off",
            tracing.unary_get_traced,
        ),
        Scenario(
            "durable_updates",
            "durable UpdateMapImport/s (SQLite) vs the bare server",
            s.durable_updates,
        ),
        Scenario("core_write", "the core's write path in process vs raw sqlite3", s.core_write),
        Scenario(
            "watch_fanout", "one change to many streams vs a bare broadcaster", s.watch_fanout
        ),
        Scenario(
            "watch_sustained",
            "sustained changes into many watchers vs a bare broadcaster",
            s.watch_sustained,
        ),
        Scenario("awareness", "change-to-awareness: a watcher vs polling every 5 s", s.awareness),
        Scenario(
            "rest_map_status",
            "map-import status over REST vs a bare ASGI app (uvicorn, wrk or autocannon)",
            s.rest_map_status,
        ),
        Scenario(
            "durable_updates_pg",
            "durable UpdateMapImport/s (PostgreSQL) vs the bare server",
            s.durable_updates_pg,
        ),
        Scenario(
            "core_write_pg",
            "the core's write path in process on PostgreSQL vs raw psycopg",
            s.core_write_pg,
        ),
        Scenario(
            "production_mix",
            "production-like on SQLite: watchers, writers and Gets at once vs the bare server",
            s.production_mix,
        ),
        Scenario(
            "production_mix_pg",
            "production-like on PostgreSQL: watchers, writers and Gets at once vs the bare server",
            s.production_mix_pg,
        ),
        Scenario(
            "cross_replica_latency",
            "commit-to-receipt across two replicas on one PostgreSQL vs on the writer's replica",
            s.cross_replica_latency,
        ),
        Scenario(
            "dashboard_sse",
            "the dashboard's SSE streams: 100 open pages under 200 changes/s vs 1 gRPC watcher",
            dashboard.dashboard_sse,
        ),
    ]


@contextlib.contextmanager
def _scratch(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jobstatus-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(
    sizes: Sizes,
    mode: str,
    out: Path,
    only: Sequence[str] = (),
    profiling: bool = True,
    keep: bool = False,
) -> Report:
    table = scenarios()
    unknown = set(only) - {s.name for s in table}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    chosen = [s for s in table if not only or s.name in only]
    report = Report(mode=mode, started=datetime.now(UTC), load=[os.getloadavg()[0]])
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    pool = Pool.start(max(sizes.watcher_procs + 2, sizes.unary_procs, 3))
    try:
        with _scratch(keep) as workdir:
            bench = Bench(sizes, pool, workdir, out, report, profiling)
            try:
                for scenario in chosen:
                    _run_one(bench, scenario)
            finally:
                if bench.pg is not None:
                    bench.pg.destroy()
    finally:
        pool.close()
    report.seconds = time.monotonic() - started
    report.load.append(os.getloadavg()[0])
    findings = FINDINGS.read_text() if mode == "full" and FINDINGS.exists() else None
    json_path, md_path = write(report, out, findings)
    print()
    print(markdown_table(report.rows))
    for skipped in report.skipped:
        print(f"skipped {skipped.scenario}: {skipped.reason}")
    for name in report.failed:
        print(f"FAILED {name}")
    print(f"\nwrote {md_path} and {json_path}")
    return report


def _run_one(bench: Bench, scenario: Scenario) -> None:
    report = bench.report
    if scenario.run is None:
        reason = scenario.todo or "TODO"
        bench.log(f"SKIP {scenario.name}: {reason}")
        report.skipped.append(Skipped(scenario.name, scenario.title, reason))
        return
    bench.log(f"{scenario.name}: {scenario.title}")
    begun = time.monotonic()
    try:
        rows = scenario.run(bench)
    except Exception:
        bench.log(f"FAILED {scenario.name}")
        report.failed[scenario.name] = traceback.format_exc()
        print(report.failed[scenario.name], flush=True)
        return
    report.rows.extend(rows)
    print(markdown_table(rows), flush=True)
    bench.log(f"{scenario.name} took {time.monotonic() - begun:.0f} s")


def sizes_for(mode: str, **overrides: object) -> Sizes:
    base = SMOKE if mode == "smoke" else FULL
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def rerender(out: Path) -> Path:
    """Write bench.md again from bench.json and the current findings, measuring nothing
    (after editing bench/findings.md)."""
    report = Report.from_json(json.loads((out / "bench.json").read_text()))
    findings = FINDINGS.read_text() if report.mode == "full" and FINDINGS.exists() else None
    return render(report, out, findings)
