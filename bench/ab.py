"""`python -m bench.ab`: two versions of the jobstatus server, A/B, alternating in one run.

    python -m bench.ab --before REF --after DIR-or-REF [--only unary,rest,updates,fanout]

Each version is the `server/` and `client/` of its own source tree: a ref is exported with
`git archive REF server client` into a scratch directory; a directory (a worktree, which
may hold uncommitted work) is copied there once at the start, so edits made to it during
the run do not reach the run. Both servers are `python -m jobstatus_server` with that
tree's server/ and client/ first on the PYTHONPATH (checked before anything is measured),
the same interpreter, the same options and the same kind of database (each its own,
fresh). Everything else, the load generators included, is this checkout's bench/ code.

In every case the two servers run side by side and take turns under the same load in
ABBA order (before, after; after, before; ...), so a noisy neighbour hurts both alike.
Each round gives one paired ratio after / before; per figure the report gives every
round's ratio, their median, the ratio of the two medians, their spread (min-max), and a
distribution-free confidence interval of the median paired ratio (order statistics, at
least 90%): "worse" only when the whole interval is on the worse side of 1.

The cases are the figures of `make bench` that a server-side change can move:

- unary: GetMapImportStatus at concurrency 1 and 16 (calls/s, server CPU per call)
- rest: GET /api/v1/map/import/status/{id}, 16 connections (requests/s, CPU per request)
- updates (updates_sqlite and updates_pg): durable UpdateMapImport, SQLite (synchronous
  FULL, the default) and PostgreSQL (throwaway cluster, fsync on), 1 and 16 writers
- fanout: one change to 1,000 open streams, write to the last receipt (ms)

Writes bench/results/ab-restructure/ab.{md,json} unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench import jobs, workers, wrk
from bench.harness import FULL, Bench, Sizes
from bench.procstat import rss_bytes
from bench.results import Report, machine
from bench.scenarios import (
    Endpoint,
    Fanout,
    RestRun,
    Unary,
    _close,
    _fanout_once,
    _open,
    _rest_once,
    _split,
    mean_group,
    unary_once,
    write_groups,
)
from bench.servers import Writer, create_jobs, http_get
from bench.workers import Pool
from jobstatus.v1 import map_import_pb2 as mi
from tests.serverproc import ROOT, ServerProcess

T = TypeVar("T")
OUT = ROOT / "bench" / "results" / "ab-restructure"
CASES = ("unary", "rest", "updates_sqlite", "updates_pg", "fanout")
GROUPS = {"updates": ("updates_sqlite", "updates_pg")}
LABELS = ("before", "after")
CONFIDENCE = 0.90


# --- the versions --------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One side of the A/B: a source tree holding server/ and client/."""

    label: str  # before / after
    spec: str  # as given on the command line
    tree: Path  # the scratch copy that is run
    source: str  # the commit, and whether uncommitted work was included

    @property
    def pythonpath(self) -> str:
        return f"{self.tree / 'server'}:{self.tree / 'client'}"


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def materialize(label: str, spec: str, scratch: Path) -> Version:
    """Export a ref, or copy a directory's server/ and client/, to scratch/label."""
    tree = scratch / label
    tree.mkdir(parents=True)
    directory = Path(spec)
    if directory.is_dir():
        for part in ("server", "client"):
            shutil.copytree(
                directory / part,
                tree / part,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        commit = _git("rev-parse", "HEAD", cwd=directory)
        dirty = _git("status", "--porcelain", "--", "server", "client", cwd=directory)
        source = f"{directory} at {commit}"
        if dirty:
            diff = subprocess.run(
                ["git", "diff", "HEAD", "--", "server", "client"],
                cwd=directory,
                check=True,
                capture_output=True,
            ).stdout
            untracked = _git(
                *("ls-files", "--others", "--exclude-standard", "--", "server", "client"),
                cwd=directory,
            ).split()
            for name in sorted(untracked):  # new files are part of the version too
                diff += name.encode() + (directory / name).read_bytes()
            digest = hashlib.sha256(diff).hexdigest()[:12]
            changed = len(dirty.splitlines())
            source += f" + uncommitted changes to {changed} files (diff sha256 {digest})"
    else:
        commit = _git("rev-parse", f"{spec}^{{commit}}")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "server", "client"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        source = f"commit {commit}"
    version = Version(label, spec, tree, source)
    _check_imports(version)
    return version


def _check_imports(version: Version) -> None:
    """The server and client modules a process of this version imports come from its tree."""
    probe = (
        "import jobstatus, jobstatus_server; print(jobstatus_server.__file__, jobstatus.__file__)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=_env(version),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in found:
        if not Path(path).resolve().is_relative_to(version.tree.resolve()):
            raise SystemExit(f"{version.label}: {path} is not from {version.tree}")


def _env(version: Version) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": version.pythonpath}


@contextlib.contextmanager
def serving(
    versions: Sequence[Version], workdir: Path, name: str, urls: Sequence[str | None]
) -> Iterator[list[ServerProcess]]:
    """A server of each version on a fresh database of its own (SQLite unless `urls`
    give one per version); quiet logs, the same options for both."""
    servers: list[ServerProcess] = []
    try:
        for version, url in zip(versions, urls, strict=True):
            directory = workdir / f"{name}-{version.label}"
            directory.mkdir(parents=True, exist_ok=True)
            server = ServerProcess(
                url or f"sqlite:///{directory / 'jobstatus.db'}",
                extra_args=["--log-level", "WARNING"],
                extra_env={"PYTHONPATH": version.pythonpath},
            )
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _endpoint(version: Version, server: ServerProcess, address: str | None = None) -> Endpoint:
    assert server.process is not None
    return Endpoint(version.label, address or server.address, server.process.pid)


# --- measuring -----------------------------------------------------------------------


@dataclass(frozen=True)
class AbSizes:
    rounds: int = 12  # ABBA rounds per case: each round measures both versions once
    sessions: int = 3  # fresh servers this many times per case, the rounds shared out
    seconds: float = 2.5  # per measurement, unary and updates
    warmup: float = 0.5
    unary_concurrency: tuple[int, ...] = (1, 16)
    write_concurrency: tuple[int, ...] = (1, 16)
    rest_connections: int = 16
    rest_seconds: int = 3  # the load tool takes whole seconds
    fanout_streams: int = 1_000
    fanout_changes: int = 3  # changes per version per round (the round's figure: median)
    watcher_procs: int = 4


SMOKE = AbSizes(
    rounds=2,
    sessions=2,
    seconds=0.25,
    warmup=0.1,
    unary_concurrency=(1, 4),
    write_concurrency=(1, 4),
    rest_connections=4,
    rest_seconds=1,
    fanout_streams=20,
    fanout_changes=1,
    watcher_procs=2,
)


@dataclass
class Figure:
    """One figure of one case, measured for both versions in the same rounds."""

    case: str
    metric: str
    unit: str
    better: str  # "higher" or "lower"
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)  # per round: "before, after" or reverse
    extra: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> list[float]:
        return [a / b if b else math.nan for a, b in zip(self.after, self.before, strict=True)]

    def summary(self) -> dict[str, Any]:
        ratios = self.ratios()
        finite = [r for r in ratios if math.isfinite(r)]
        low, high, confidence = median_interval(finite)
        median_before = statistics.median(self.before) if self.before else 0.0
        median_after = statistics.median(self.after) if self.after else 0.0
        worse = [r < 1 if self.better == "higher" else r > 1 for r in finite]
        if not finite:
            verdict = "not measured"
        elif confidence < CONFIDENCE:
            verdict = f"too few rounds for {CONFIDENCE:.0%}"
        elif high < 1 if self.better == "higher" else low > 1:
            verdict = "worse"
        elif low > 1 if self.better == "higher" else high < 1:
            verdict = "better"
        else:
            verdict = "within noise"
        return {
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "better": self.better,
            "rounds": len(ratios),
            "orders": self.orders,
            "before": self.before,
            "after": self.after,
            "ratios": ratios,
            "median_before": median_before,
            "median_after": median_after,
            "median_of_ratios": statistics.median(finite) if finite else None,
            "ratio_of_medians": median_after / median_before if median_before else None,
            "min_ratio": min(finite, default=None),
            "max_ratio": max(finite, default=None),
            "rounds_worse": sum(worse),
            "interval": [low, high],
            "interval_confidence": round(confidence, 3),
            "verdict": verdict,
            "extra": self.extra,
        }


def median_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """A distribution-free interval for the median: (x_(k), x_(n-k+1)) of the sorted
    values, with the largest k whose coverage, 1 - 2 P(Binomial(n, 1/2) < k), is at least
    CONFIDENCE; (min, max, its coverage) when n is too small for that."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan, 0.0

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / float(2**n)

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= CONFIDENCE:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


def abba(
    rounds: int, before: Callable[[], T], after: Callable[[], T], start: int = 0
) -> tuple[list[T], list[T], list[str]]:
    """Both versions `rounds` times, ABBA: before first in even rounds, after in odd ones
    (counting from `start`, so that sessions continue the alternation)."""
    ours: dict[str, list[T]] = {"before": [], "after": []}
    run = {"before": before, "after": after}
    orders: list[str] = []
    for index in range(start, start + rounds):
        order = LABELS if index % 2 == 0 else LABELS[::-1]
        for label in order:
            ours[label].append(run[label]())
        orders.append(", ".join(order))
    return ours["before"], ours["after"], orders


@dataclass
class Paired(Generic[T]):
    """One case's raw results, both versions, over all its sessions."""

    before: list[T] = field(default_factory=list)
    after: list[T] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)

    def extend(self, rounds: int, before: Callable[[], T], after: Callable[[], T]) -> None:
        b, a, o = abba(rounds, before, after, start=len(self.orders))
        self.before += b
        self.after += a
        self.orders += o


@dataclass
class Ab:
    sizes: AbSizes
    bench: Bench
    versions: list[Version]
    figures: list[Figure] = field(default_factory=list)

    def log(self, message: str) -> None:
        self.bench.log(message)

    def sessions(
        self, name: str, urls: Callable[[], Sequence[str | None]] = lambda: (None, None)
    ) -> Iterator[tuple[int, int, list[ServerProcess], list[Endpoint]]]:
        """Fresh servers (fresh databases) for each session: process-level luck (hash
        seeds, memory layout, thread placement) is part of the noise, not of one side.
        Yields (session, rounds in it, servers, endpoints), before's first."""
        count = max(1, min(self.sizes.sessions, self.sizes.rounds))
        for session in range(count):
            rounds = self.sizes.rounds // count + (session < self.sizes.rounds % count)
            order = [0, 1] if session % 2 == 0 else [1, 0]  # which server starts first
            versions = [self.versions[i] for i in order]
            databases = urls()
            where = [databases[i] for i in order]
            with serving(versions, self.bench.workdir, f"{name}-{session}", where) as started:
                servers = [started[order.index(i)] for i in range(2)]
                endpoints = [_endpoint(v, s) for v, s in zip(self.versions, servers, strict=True)]
                yield session, rounds, servers, endpoints

    def _add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            s = figure.summary()
            ratios = " ".join(_fmt(r) for r in s["ratios"])
            self.log(
                f"{figure.case} / {figure.metric}: median of ratios "
                f"{_fmt(s['median_of_ratios'])}, ratio of medians {_fmt(s['ratio_of_medians'])}"
                f" (rounds {ratios}) {s['verdict']}"
            )

    def _unary_figures(
        self, case: str, metric: str, cpu_metric: str, runs: Paired[Unary]
    ) -> Figure:
        rate = Figure(
            case,
            metric,
            "calls/s",
            "higher",
            [u.qps for u in runs.before],
            [u.qps for u in runs.after],
            runs.orders,
            {"errors": sum(u.errors for u in runs.before + runs.after)},
        )
        cpu = Figure(
            case,
            cpu_metric,
            "µs",
            "lower",
            [1e6 * u.cpu_per_call for u in runs.before],
            [1e6 * u.cpu_per_call for u in runs.after],
            runs.orders,
        )
        self._add(rate, cpu)
        return rate

    # --- the cases ---

    def unary(self) -> None:
        job_id = jobs.job_ids("get", 1)[0]
        raw = mi.GetMapImportStatusRequest(import_request_id=job_id).SerializeToString()
        runs = {c: Paired[Unary]() for c in self.sizes.unary_concurrency}
        sizes: set[int] = set()
        for _, rounds, _, endpoints in self.sessions("unary"):
            sizes |= {create_jobs(e.address, [job_id])[0].ByteSize() for e in endpoints}
            for c, paired in runs.items():
                measure = [
                    partial(unary_once, self.bench, e, workers.GET, [[raw]] * c, self.sizes.seconds)
                    for e in endpoints
                ]
                paired.extend(rounds, *measure)
        for c, paired in runs.items():
            case = f"unary Get, concurrency {c}"
            rate = self._unary_figures(case, "GetMapImportStatus", "server CPU per call", paired)
            rate.extra["job bytes"] = " / ".join(str(n) for n in sorted(sizes))

    def updates(self, database: str) -> None:
        storage = "SQLite WAL, synchronous FULL (the default)"

        def urls() -> Sequence[str | None]:
            if database != "postgresql":
                return (None, None)
            cluster = self.bench.postgres()
            return [cluster.database(f"ab_{v.label}") for v in self.versions]

        if database == "postgresql":
            storage = "PostgreSQL on loopback, fsync on (throwaway cluster)"
        concurrencies = self.sizes.write_concurrency
        ids = jobs.job_ids("upd", max(concurrencies))
        cycle = [*range(2, 100), 0, 1]  # each request moves progress on: each a change
        requests = [
            [jobs.update_request(job_id, p).SerializeToString() for p in cycle] for job_id in ids
        ]
        runs = {c: Paired[Unary]() for c in concurrencies}
        groups: dict[int, list[list[float]]] = {c: [[], []] for c in concurrencies}
        for _, rounds, servers, endpoints in self.sessions(f"upd-{database}", urls):
            for endpoint in endpoints:
                create_jobs(endpoint.address, ids)
            for c, paired in runs.items():
                counts = [write_groups(s) for s in servers]
                measure = [
                    partial(
                        unary_once, self.bench, e, workers.UPDATE, requests[:c], self.sizes.seconds
                    )
                    for e in endpoints
                ]
                paired.extend(rounds, *measure)
                for side, count, server in zip(groups[c], counts, servers, strict=True):
                    side.append(mean_group(count, write_groups(server)))
        for c, paired in runs.items():
            case = f"durable updates {database}, {c} writer{'s' if c > 1 else ''}"
            rate = self._unary_figures(case, "UpdateMapImport", "server CPU per update", paired)
            rate.extra["storage"] = storage
            rate.extra["mean writes per group commit before / after (per session)"] = " / ".join(
                " ".join(f"{g:.2f}" for g in side) for side in groups[c]
            )

    def rest(self) -> None:
        wrk.find()  # no load tool: fail at once, naming the install step
        connections = self.sizes.rest_connections
        seconds = self.sizes.rest_seconds
        job_id = jobs.job_ids("rest", 1)[0]
        path = f"/api/v1/map/import/status/{job_id}"
        runs = Paired[RestRun]()
        bodies: list[bytes] = []
        for _, rounds, servers, _ in self.sessions("rest"):
            endpoints: list[Endpoint] = []
            for version, server in zip(self.versions, servers, strict=True):
                create_jobs(server.address, [job_id])
                status, _, body = http_get(server.http_url + path)
                if status != 200 or not body.startswith(b"{"):
                    raise RuntimeError(f"{version.label} answered {status}: {body[:200]!r}")
                bodies.append(body)
                endpoints.append(_endpoint(version, server, server.http_url + path))
            measure = [partial(_rest_once, self.bench, e, connections, seconds) for e in endpoints]
            runs.extend(rounds, *measure)
        case = f"REST map status, {connections} connections"
        rate = Figure(
            case,
            "GET /api/v1/map/import/status/{id}",
            "requests/s",
            "higher",
            [r.rps for r in runs.before],
            [r.rps for r in runs.after],
            runs.orders,
            {
                "load tool": wrk.describe(),
                "errors": sum(r.errors for r in runs.before + runs.after),
                "body bytes before / after": f"{len(bodies[0])} / {len(bodies[1])}",
                "same body": bodies[0] == bodies[1],
            },
        )
        cpu = Figure(
            case,
            "server CPU per request",
            "µs",
            "lower",
            [1e6 * r.cpu_per_request for r in runs.before],
            [1e6 * r.cpu_per_request for r in runs.after],
            runs.orders,
        )
        self._add(rate, cpu)

    def fanout(self) -> None:
        streams = self.sizes.fanout_streams
        bench = self.bench
        job_id = jobs.job_ids("fan", 1)[0]
        groups = _split([job_id] * streams, min(self.sizes.watcher_procs, streams))
        shares = [len(group) for group in groups]
        changes = self.sizes.fanout_changes
        runs = Paired[list[Fanout]]()
        memory: list[list[float]] = [[], []]
        for _, rounds, _, endpoints in self.sessions("fanout"):
            for endpoint, kib in zip(endpoints, memory, strict=True):
                create_jobs(endpoint.address, [job_id])
                rss = rss_bytes(endpoint.pid)
                _open(bench, endpoint, groups)
                time.sleep(bench.sizes.settle)
                kib.append((rss_bytes(endpoint.pid) - rss) / streams / 1024)
            writers = [Writer(e.address) for e in endpoints]
            progress = itertools.count(2)
            try:
                measure = [
                    partial(_changes, bench, e, w, job_id, progress, shares, changes)
                    for e, w in zip(endpoints, writers, strict=True)
                ]
                runs.extend(rounds, *measure)
            finally:
                for writer in writers:
                    writer.close()
            for endpoint in endpoints:
                _close(bench, endpoint, len(groups))

        def latency(round_: list[Fanout]) -> float:
            return statistics.median(f.to_last_ms for f in round_)

        def cpu(round_: list[Fanout]) -> float:  # the round's changes together: 10 ms ticks
            return 1e6 * sum(f.server_cpu for f in round_) / (streams * len(round_))

        missing = sum(streams - f.received for round_ in runs.before + runs.after for f in round_)
        case = f"watch fan-out, {streams:,} streams"
        self._add(
            Figure(
                case,
                "one change: write to the last receipt",
                "ms",
                "lower",
                [latency(r) for r in runs.before],
                [latency(r) for r in runs.after],
                runs.orders,
                {
                    "changes per version per round (the round's figure: their median)": (
                        self.sizes.fanout_changes
                    ),
                    "receipts missing": missing,
                    "server memory per open stream KiB before / after (per session)": " / ".join(
                        " ".join(f"{k:.1f}" for k in side) for side in memory
                    ),
                },
            ),
            Figure(
                case,
                "server CPU per delivered event",
                "µs",
                "lower",
                [cpu(r) for r in runs.before],
                [cpu(r) for r in runs.after],
                runs.orders,
            ),
        )


def _changes(
    bench: Bench,
    endpoint: Endpoint,
    writer: Writer,
    job_id: str,
    progress: Iterator[int],
    shares: list[int],
    count: int,
) -> list[Fanout]:
    """`count` changes, one after the other, each to every open stream."""
    return [_fanout_once(bench, endpoint, writer, job_id, progress, shares) for _ in range(count)]


# --- the report ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# A/B: the server before and after, alternating in one run (`python -m bench.ab`)",
        "",
        f"Started {data['started']} UTC, {data['seconds']:.0f} s, load average "
        f"{' -> '.join(f'{x:.2f}' for x in data['load'])} "
        f"({data['machine']['cpus']} CPUs, {data['machine']['cpu_model']}), mode {data['mode']}.",
        "",
        f"Command: `{data['command']}`",
        "",
    ]
    for version in data["versions"]:
        lines.append(f"- **{version['label']}**: `{version['spec']}`: {version['source']}")
    lines += [
        "",
        "Ratios are after / before, one per ABBA round (the two versions measured back to "
        "back, the order alternating). *Better* says which way is good: for calls/s a ratio "
        "below 1 is worse, for µs and ms above 1 is. The interval is the distribution-free "
        f"interval of the median paired ratio (order statistics, coverage >= {CONFIDENCE:.0%}"
        " where the rounds allow it); the verdict is *worse* or *better* only when the whole "
        "interval is on that side of 1, else *within noise*.",
        "",
        "| case | figure | better | before (median) | after (median) | median of ratios | "
        "ratio of medians | spread (min-max) | interval | rounds worse | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for s in data["figures"]:
        low, high = s["interval"]
        lines.append(
            f"| {s['case']} | {s['metric']} ({s['unit']}) | {s['better']} "
            f"| {_figure(s['median_before'])} | {_figure(s['median_after'])} "
            f"| {_fmt(s['median_of_ratios'])} | {_fmt(s['ratio_of_medians'])} "
            f"| {_fmt(s['min_ratio'])}-{_fmt(s['max_ratio'])} "
            f"| {_fmt(low)}-{_fmt(high)} ({s['interval_confidence']:.0%}) "
            f"| {s['rounds_worse']}/{s['rounds']} | {s['verdict']} |"
        )
    lines += ["", "## Per round", ""]
    for s in data["figures"]:
        lines.append(f"**{s['case']} / {s['metric']}** ({s['unit']})")
        lines.append("")
        lines.append("| round | order | before | after | after / before |")
        lines.append("|---:|---|---:|---:|---:|")
        for index, (order, b, a, r) in enumerate(
            zip(s["orders"], s["before"], s["after"], s["ratios"], strict=True), 1
        ):
            lines.append(f"| {index} | {order} | {_figure(b)} | {_figure(a)} | {_fmt(r)} |")
        if s["extra"]:
            lines.append("")
            lines += [f"- {key}: {value}" for key, value in s["extra"].items()]
        lines.append("")
    for name, error in data["failed"].items():
        lines += [f"## FAILED: {name}", "", "```", error.rstrip(), "```", ""]
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------


def _cases(only: Sequence[str]) -> list[str]:
    wanted: set[str] = set()
    for item in only:
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name not in CASES and name not in GROUPS:
                raise SystemExit(f"unknown case {name!r}: choose from {CASES} or {tuple(GROUPS)}")
            wanted.update(GROUPS.get(name, (name,)))
    return [case for case in CASES if not wanted or case in wanted]


def default_before() -> str:
    """Where the branch left main: the merge base of HEAD and main."""
    try:
        return _git("merge-base", "HEAD", "main")
    except subprocess.CalledProcessError:
        return "main"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--before", default=None, help="a ref or directory (default: merge-base HEAD main)"
    )
    parser.add_argument(
        "--after", default=str(ROOT), help="a ref or directory (default: this checkout)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CASES",
        help=f"comma-separated, of {', '.join(CASES)} and updates (= both databases)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"default {OUT.relative_to(ROOT)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; needs --out")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sessions", type=int, default=None, help="fresh servers per case")
    parser.add_argument("--seconds", type=float, default=None, help="per unary/update run")
    parser.add_argument("--rest-seconds", type=int, default=None)
    parser.add_argument("--streams", type=int, default=None, help="fan-out streams")
    parser.add_argument("--fanout-changes", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if args.smoke and args.out is None:
        parser.error("--smoke needs --out: a smoke run must not replace the real results")
    sizes = replace(
        SMOKE if args.smoke else AbSizes(),
        **{
            key: value
            for key, value in {
                "rounds": args.rounds,
                "sessions": args.sessions,
                "seconds": args.seconds,
                "rest_seconds": args.rest_seconds,
                "fanout_streams": args.streams,
                "fanout_changes": args.fanout_changes,
            }.items()
            if value is not None
        },
    )
    out: Path = args.out or OUT
    cases = _cases(args.only)
    command = "python -m bench.ab " + shlex.join(sys.argv[1:] if argv is None else argv)
    before = args.before or default_before()
    mode = "smoke" if args.smoke else "ab"
    report = run(sizes, before, args.after, cases, out, args.keep, mode, command)
    return 1 if report["failed"] else 0


def run(
    sizes: AbSizes,
    before: str,
    after: str,
    cases: Sequence[str],
    out: Path,
    keep: bool = False,
    mode: str = "ab",
    command: str = "python -m bench.ab",
) -> dict[str, Any]:
    started = datetime.now(UTC)
    began = time.monotonic()
    load = [os.getloadavg()[0]]
    bench_sizes: Sizes = replace(
        FULL,
        rounds=sizes.rounds,
        warmup=sizes.warmup,
        unary_seconds=sizes.seconds,
        rest_seconds=sizes.rest_seconds,
        watcher_procs=sizes.watcher_procs,
        open_batch=min(FULL.open_batch, max(1, sizes.fanout_streams // sizes.watcher_procs)),
        settle=FULL.settle if sizes.fanout_streams >= 1_000 else 0.2,
    )
    scratch = Path(tempfile.mkdtemp(prefix="jobstatus-ab-"))
    failed: dict[str, str] = {}
    ab: Ab | None = None
    try:
        versions = [
            materialize("before", before, scratch / "trees"),
            materialize("after", after, scratch / "trees"),
        ]
        for version in versions:
            print(f"[ab] {version.label}: {version.source}", flush=True)
        pool = Pool.start(max(sizes.watcher_procs + 2, 3))
        try:
            workdir = scratch / "work"
            workdir.mkdir()
            bench = Bench(bench_sizes, pool, workdir, out, Report("ab", started), False)
            ab = Ab(sizes, bench, versions)
            steps: dict[str, Callable[[], None]] = {
                "unary": ab.unary,
                "rest": ab.rest,
                "updates_sqlite": partial(ab.updates, "sqlite"),
                "updates_pg": partial(ab.updates, "postgresql"),
                "fanout": ab.fanout,
            }
            try:
                for case in cases:
                    begun = time.monotonic()
                    ab.log(f"{case} ...")
                    try:
                        steps[case]()
                    except Exception:
                        failed[case] = traceback.format_exc()
                        print(failed[case], flush=True)
                    ab.log(f"{case} took {time.monotonic() - begun:.0f} s")
            finally:
                if bench.pg is not None:
                    bench.pg.destroy()
        finally:
            pool.close()
    finally:
        if keep:
            print(f"[ab] kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    load.append(os.getloadavg()[0])
    data: dict[str, Any] = {
        "mode": mode,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "load": load,
        "machine": machine(),
        "command": command,
        "sizes": asdict(sizes),
        "versions": [
            {"label": v.label, "spec": v.spec, "source": v.source}
            for v in (ab.versions if ab else [])
        ],
        "cases": list(cases),
        "figures": [f.summary() for f in (ab.figures if ab else [])],
        "failed": failed,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    text = markdown(data)
    (out / "ab.md").write_text(text + "\n")
    print()
    print(text.split("\n## Per round")[0])
    print(f"wrote {out / 'ab.md'} and {out / 'ab.json'}")
    return data


if __name__ == "__main__":
    raise SystemExit(main())
