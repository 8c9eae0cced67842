"""The suite: sizes, the table of scenarios, and the run that writes the report.

A scenario is one function `run(bench) -> list[Row]`, registered in SCENARIOS with a
name and a title. A scenario that cannot be measured yet is registered with `todo`: it
is skipped with its reason printed and listed in the report, never silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import FULL, SMOKE, Bench, Sizes
from bench.results import Report, Row, Skipped, markdown_table, render, write
from bench.workers import Pool

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FINDINGS = ROOT / "bench" / "findings.md"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Bench], list[Row]] | None
    todo: str | None = None  # why it is not measured yet


def todo(name: str, title: str, reason: str) -> Scenario:
    return Scenario(name, title, None, reason)


def scenarios() -> list[Scenario]:
    from bench import dashboard, large_store, tracing, view_memory
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
        Scenario(
            "large_store",
            "Get, durable updates, a watch of every job and the dashboard's first load "
            "on 1,000,000 stored jobs vs on 10,000",
            large_store.large_store,
        ),
        Scenario(
            "view_memory",
            "the server's RSS growth against the bytes its view counts, on 1,000,000 jobs",
            view_memory.view_memory,
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
