"""What every scenario is handed: the sizes of a run and the Bench (load processes,
scratch directory, report, the throwaway PostgreSQL cluster, profiling on a miss)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import profile
from bench.procstat import cpu_seconds
from bench.results import Report, Row
from bench.workers import Pool
from tests.pg import PgCluster


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
    large_jobs: int = 1_000_000  # the large store (bench/large_store.py)
    large_small: int = 10_000  # the store it is compared with
    large_cold_gets: int = 500  # per round and store: Gets of jobs not read before
    large_other_gets: float = 100.0  # another caller's Gets/s while a watch starts
    large_view_reads: int = 200_000  # Gets that fill the view whose memory is measured
    large_patience: float = 300.0  # the longest a watch's start or a page load may take


FULL = Sizes()
SMOKE = Sizes(
    rounds=1,
    warmup=0.1,
    unary_concurrency=(1, 4),
    unary_seconds=0.25,
    write_concurrency=(1, 4),
    core_writers=4,
    # A count of the updates that finish inside the window: at 0.25 s a loaded machine
    # (the suite runs on two workers) now and then finished none, and the row read 0.
    core_seconds=1.0,
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
    large_jobs=3_000,
    large_small=300,
    large_cold_gets=20,
    large_other_gets=20.0,
    large_view_reads=1_000,
    large_patience=120.0,
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
