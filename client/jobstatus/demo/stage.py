"""The demo's stage: its clock, the line it prints per action, the jobs still running
(settled when it is interrupted) and its summary."""

from __future__ import annotations

import heapq
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from rich.console import Console
from rich.text import Text

from jobstatus.errors import JobStatusError
from jobstatus.kinds import KINDS, Kind
from jobstatus.live import Outcome, outcome, progress, status_text
from jobstatus.sync import Client

# A scenario is a generator: it acts, then yields how many (nominal) seconds to wait.
Scenario = Iterator[float]


@dataclass
class Demo:
    """One run of the demo: the client, the clock, and the jobs still running."""

    client: Client
    out: Console
    speed: float
    as_json: bool
    timeout: float
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    rng: random.Random = field(default_factory=random.Random)
    started: float = field(default_factory=time.monotonic)
    # What to do with each job that is not settled yet if the demo is interrupted.
    running: dict[tuple[str, str], Callable[[], Message]] = field(default_factory=dict)
    finished: dict[tuple[str, str], Message] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def show(self, kind: Kind[Any], job: Message, note: str = "") -> Message:
        """Print what happened to `job`, and note whether it is settled now."""
        key = (kind.name, kind.job_id(job))
        if kind.is_settled(job):
            self.running.pop(key, None)
            self.finished[key] = job
        elapsed = time.monotonic() - self.started
        status = status_text(kind, job)
        how_far = progress(kind, job)
        percent = f"{how_far.percent:.0f}%" if how_far.percent is not None else ""
        detail = "  ".join(part for part in (note, how_far.detail) if part)
        if self.as_json:
            line = {
                "elapsed": round(elapsed, 2),
                "kind": kind.name,
                "id": key[1],
                "status": status,
                "revision": int(getattr(job, "revision")),  # noqa: B009
                "note": note,
            }
            print(json.dumps(line, ensure_ascii=False), flush=True)
            return job
        style = {Outcome.RUNNING: "yellow", Outcome.SUCCEEDED: "green", Outcome.FAILED: "red"}
        text = Text(f"{elapsed:6.1f}s  ")
        text.append(f"{kind.name.replace('_', ' '):<17} ")
        text.append(f"{key[1]:<36} ", style="bold")
        text.append(f"{status:<12}", style=style[outcome(kind, job)])
        text.append(f"{percent:>5}  ")
        text.append(detail, style="dim")
        self.out.print(text, soft_wrap=True)
        return job

    def track(self, kind: Kind[Any], job: Message, abort: Callable[[], Message]) -> None:
        self.running[(kind.name, kind.job_id(job))] = abort

    # --- the clock --------------------------------------------------------------------

    def play(self, scenarios: list[tuple[float, str, Scenario]]) -> None:
        """Run the scenarios side by side, each step at its time (scaled by the speed)."""
        queue = [(start / self.speed, n, name, s) for n, (start, name, s) in enumerate(scenarios)]
        heapq.heapify(queue)
        while queue:
            due, n, name, scenario = heapq.heappop(queue)
            wait = self.started + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                delay = next(scenario)
            except StopIteration:
                continue
            except JobStatusError as error:
                self.errors.append(f"{name}: {error}")
                self.out.print(Text(f"{name}: {error}", style="red"), soft_wrap=True)
                continue
            jitter = self.rng.uniform(0.8, 1.2)
            heapq.heappush(queue, (due + delay * jitter / self.speed, n, name, scenario))

    def settle_the_rest(self, why: str) -> None:
        """Settle every job still running, as its runner would when it is stopped."""
        if not self.running:
            return
        if not self.as_json:
            self.out.print(f"\n{why}: settling the {len(self.running)} jobs still running")
        for (kind_name, _), abort in list(self.running.items()):
            try:
                self.show(KINDS[kind_name], abort(), f"demo {why}")
            except JobStatusError as error:
                self.out.print(Text(str(error), style="red"), soft_wrap=True)
        self.running.clear()

    # --- the scenarios ----------------------------------------------------------------

    def summary(self) -> None:
        by_kind: dict[str, Counter[str]] = {name: Counter() for name in KINDS}
        for (kind_name, _), job in self.finished.items():
            by_kind[kind_name][status_text(KINDS[kind_name], job)] += 1
        elapsed = time.monotonic() - self.started
        if self.as_json:
            summary = {"summary": {k: dict(v) for k, v in by_kind.items()}, "elapsed": elapsed}
            print(json.dumps(summary), flush=True)
            return
        self.out.print(f"\ndemo run {self.tag} finished in {elapsed:.1f} s:")
        for kind_name, counts in by_kind.items():
            if not counts:
                continue
            line = ", ".join(f"{count} {status}" for status, count in counts.items())
            self.out.print(f"  {kind_name.replace('_', ' ')}: {line}")
