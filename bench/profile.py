"""py-spy on the jobstatus server while a missed case runs again; a short summary."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def recording(pid: int, out: Path, rate: int = 200) -> Iterator[None]:
    """Sample `pid` (every thread, Python frames) until the block ends."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (it is a dev dependency)")
    process = subprocess.Popen(
        [
            *(binary, "record", "--pid", str(pid), "--rate", str(rate), "--duration", "3600"),
            *("--format", "speedscope", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if not out.exists():
            raise RuntimeError(f"py-spy wrote no profile:\n{output}")


def _ours_or_a_library(frame: dict[str, object]) -> bool:
    """Frames worth a line in the *total* table: jobstatus's own and its libraries', not
    the interpreter's plumbing (threading, asyncio's loop, runpy) that every stack has."""
    file = str(frame.get("file") or "")
    if frame.get("name") in {"main", "<module>"}:
        return False
    return "site-packages/" in file or "jobstatus_server/" in file


def _label(frame: dict[str, object]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("site-packages/", "jobstatus_server/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "lib/python3.":
                file = file.split("/", 1)[-1]
            elif marker == "jobstatus_server/":
                file = "jobstatus_server/" + file
            break
    return f"`{frame.get('name')}` ({file})"


def summarize(path: Path, top: int = 15) -> str:
    """Markdown: each thread's share of the samples, then the functions (jobstatus's and
    its libraries') most often on the stack, then the innermost frames of all samples.
    Time inside C extensions (grpc's Cython core, sqlite3) counts as the self time of
    the Python frame that called it."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    labels = [_label(frame) for frame in frames]
    shown = {labels[i] for i, frame in enumerate(frames) if _ours_or_a_library(frame)}
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    weight_sum = 0.0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            weight_sum += weight
            threads[str(profile["name"])] += weight
            if stack:
                own[labels[stack[-1]]] += weight
            for label in {labels[index] for index in stack}:
                total[label] += weight
    if not weight_sum:
        return "(no samples)"

    def share(value: float) -> str:
        return f"{100 * value / weight_sum:.1f}%"

    lines = [
        "Threads: " + ", ".join(f"{name} {share(w)}" for name, w in threads.most_common(6)),
        "",
        "| total | function |",
        "|---:|---|",
    ]
    ranked = [(label, w) for label, w in total.most_common() if label in shown][:top]
    lines += [f"| {share(w)} | {label} |" for label, w in ranked]
    lines += ["", "| self | function |", "|---:|---|"]
    lines += [f"| {share(w)} | {label} |" for label, w in own.most_common(top)]
    return "\n".join(lines)
