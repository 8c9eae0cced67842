"""Result rows, their targets, and the JSON and markdown they are written as."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Extra = dict[str, float | int | str]


@dataclass(frozen=True)
class Target:
    """A bound on a row's ratio (or, for a few rows, on its jobstatus value)."""

    op: Literal[">=", "<="]
    bound: float
    on: Literal["ratio", "value"] = "ratio"

    def met(self, row: Row) -> bool:
        figure = row.ratio if self.on == "ratio" else row.value
        return figure >= self.bound if self.op == ">=" else figure <= self.bound

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        return f"{self.on} {sign} {self.bound:g}"


@dataclass
class Row:
    """One figure: jobstatus against its baseline from the same run."""

    scenario: str
    case: str
    metric: str
    unit: str
    value: float  # jobstatus
    baseline: float  # the baseline, measured in the same run
    baseline_name: str
    target: Target | None = None
    load_cpu: float | None = None  # cores the load generators used while measuring jobstatus
    baseline_load_cpu: float | None = None  # ... while measuring the baseline
    server_cpu: float | None = None  # cores the jobstatus server used
    baseline_server_cpu: float | None = None
    extra: Extra = field(default_factory=dict)
    profile: str | None = None  # the key of a profile summary, when a target was missed

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.inf

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else str(self.target)
        data["target_spec"] = None if self.target is None else asdict(self.target)
        data["ratio"] = self.ratio if math.isfinite(self.ratio) else None
        data["met"] = self.met
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        fields = {k: v for k, v in data.items() if k not in {"target_spec", "ratio", "met"}}
        spec = data.get("target_spec")
        fields["target"] = None if spec is None else Target(**spec)
        return cls(**fields)


@dataclass
class Skipped:
    scenario: str
    title: str
    reason: str


@dataclass
class Report:
    mode: str
    started: datetime
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # scenario -> error
    profiles: dict[str, str] = field(default_factory=dict)  # key -> markdown
    seconds: float = 0.0
    # The machine's 1-minute load average as the run started and ended: the machine is
    # shared, and a busy neighbour shows here.
    load: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 1),
            "load": self.load,
            "machine": machine(),
            "rows": [row.to_json() for row in self.rows],
            "skipped": [asdict(s) for s in self.skipped],
            "failed": self.failed,
            "profiles": self.profiles,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(
            mode=data["mode"],
            started=datetime.fromisoformat(data["started"]),
            rows=[Row.from_json(row) for row in data["rows"]],
            skipped=[Skipped(**s) for s in data["skipped"]],
            failed=data["failed"],
            profiles=data["profiles"],
            seconds=data["seconds"],
            load=data.get("load", []),
        )


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import grpc

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 < fraction <= 1)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _figure(value: float, unit: str) -> str:
    if unit in {"µs", "ms", "KiB"} or abs(value) < 100:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| scenario | case | metric | jobstatus | baseline | ratio | target | met "
        "| load-gen CPU (cores) js / base | server CPU (cores) js / base |",
        "|---|---|---|---:|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**NO**", None: "-"}[row.met]
        ratio = f"{row.ratio:.2f}" if math.isfinite(row.ratio) else "∞"
        lines.append(
            f"| {row.scenario} | {row.case} | {row.metric} ({row.unit}) "
            f"| {_figure(row.value, row.unit)} | {_figure(row.baseline, row.unit)} "
            f"({row.baseline_name}) | {ratio} | {row.target or '-'} | {met} "
            f"| {_cores(row.load_cpu)} / {_cores(row.baseline_load_cpu)} "
            f"| {_cores(row.server_cpu)} / {_cores(row.baseline_server_cpu)} |"
        )
    return "\n".join(lines)


def markdown(report: Report, findings: str | None) -> str:
    info = machine()
    parts = [
        "# jobstatus benchmarks",
        "",
        f"Run of {report.started:%Y-%m-%d %H:%M} UTC, mode **{report.mode}**, "
        f"{report.seconds:.0f} s; {info['cpus']} x {info['cpu_model'] or 'CPU'}, "
        f"Python {info['python']}, grpcio {info['grpcio']}; load average "
        f"{' -> '.join(f'{x:.1f}' for x in report.load) or '?'} (start -> end: other work "
        "on the machine shows here). Produced by `make bench` (`python -m bench`); "
        "re-measure rather than trust one run.",
        "",
        "Each figure is jobstatus against a baseline measured in the same run; the ratio "
        "is jobstatus / baseline and the target applies to it (or, where it says *value*, "
        "to jobstatus's own figure). Load comes from separate worker processes; "
        "*load-gen CPU* is the cores those processes used while measuring (near 1.0 for "
        "one process means the load generator, not the server, may be the limit); "
        "*server CPU* is the cores the server process used, from /proc/<pid>/stat.",
        "",
        markdown_table(report.rows),
        "",
    ]
    extras = [row for row in report.rows if row.extra]
    if extras:
        parts += ["<details><summary>Details per row</summary>", ""]
        for row in extras:
            detail = ", ".join(f"{key} {value}" for key, value in row.extra.items())
            parts.append(f"- {row.scenario} / {row.case} / {row.metric}: {detail}")
        parts += ["", "</details>", ""]
    if report.failed:
        parts += ["## Failed scenarios", ""]
        parts += [
            f"- **{name}**: {error.strip().splitlines()[-1]}"
            for name, error in report.failed.items()
        ]
        parts.append("")
    if report.skipped:
        parts += ["## Not measured yet (TODO)", ""]
        parts += [f"- **{s.scenario}** ({s.title}): {s.reason}" for s in report.skipped]
        parts.append("")
    if report.profiles:
        parts += [
            "## Profiles of missed targets (py-spy)",
            "",
            "The jobstatus server re-run under `py-spy record` for the case that missed; "
            "share of the samples in which a function is on the stack (*total*) or is the "
            "innermost frame (*self*). The full profiles are speedscope JSON files beside "
            "this one (not committed).",
            "",
        ]
        for key, text in report.profiles.items():
            parts += [f"### {key}", "", text, ""]
    if findings:
        parts += [findings.strip(), ""]
    return "\n".join(parts)


def write(report: Report, out: Path, findings: str | None) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
    stamp = report.started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"bench-{stamp}.json").write_text(data + "\n")
    json_path = out / "bench.json"
    json_path.write_text(data + "\n")
    return json_path, render(report, out, findings)


def render(report: Report, out: Path, findings: str | None) -> Path:
    md_path = out / "bench.md"
    md_path.write_text(markdown(report, findings))
    return md_path
