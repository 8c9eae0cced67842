"""The HTTP load tool of the REST scenario: run it, read its figures and its CPU.

The REST scenario drives jobstatus and the bare ASGI app with the same command of the
same tool, so the ratio is honest whichever tool ran. The tool is wrk where it is on
the PATH (a C program with its own event loop, the cheapest per request), else
autocannon from node_modules (npm, installed by `make install`; Node.js, one worker
thread), so nothing from the system's package manager is needed. JOBSTATUS_BENCH_LOAD
(`wrk` or `autocannon`) picks one. The tool's CPU (from the kernel's accounting of the
finished child) is reported next to each figure, so a saturated load tool shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUTOCANNON = ROOT / "node_modules" / ".bin" / "autocannon"
INSTALL_HINT = (
    "no HTTP load tool for the REST benchmark: autocannon comes with `make install` "
    "(npm, into node_modules); wrk, where it is on the PATH, is used first"
)


class WrkMissing(RuntimeError):
    pass


def find() -> str:
    """The load tool's program: wrk on the PATH, else node_modules' autocannon."""
    wanted = os.environ.get("JOBSTATUS_BENCH_LOAD", "")
    if wanted not in ("", "wrk", "autocannon"):
        raise WrkMissing(f"JOBSTATUS_BENCH_LOAD must be wrk or autocannon, not {wanted!r}")
    if wanted in ("", "wrk") and (binary := shutil.which("wrk")):
        return binary
    if wanted in ("", "autocannon") and os.access(AUTOCANNON, os.X_OK):
        return str(AUTOCANNON)
    raise WrkMissing(INSTALL_HINT)


def describe() -> str:
    """What drives the load, for the results."""
    if Path(find()).name == "wrk":
        return "wrk, 1 thread (load-gen CPU is wrk's)"
    return "autocannon (Node.js), 1 thread (load-gen CPU is autocannon's)"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float  # as wrk measured its run
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    cpu: float  # wrk's CPU seconds (user + system, every thread)
    wall: float  # wall seconds of the wrk process

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> tuple[int, float, float, float, float, int]:
    """(requests, seconds, requests/s, p50 ms, p99 ms, errors) from `wrk --latency`."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.M)
    if done is None or rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors = 0
    if socket := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(n) for n in socket.groups())
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non2xx.group(1))
    seconds = _ms(done.group(2) + done.group(3)) / 1e3
    return (
        int(done.group(1)),
        seconds,
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        errors,
    )


def parse_autocannon(output: str) -> tuple[int, float, float, float, float, int]:
    """(requests, seconds, requests/s, p50 ms, p99 ms, errors) from `autocannon --json`."""
    try:
        report = json.loads(output.strip().splitlines()[-1])
        requests = int(report["requests"]["total"])
        seconds = float(report["duration"])
        latency = report["latency"]
        errors = sum(int(report[k]) for k in ("errors", "timeouts", "non2xx"))
        p50, p99 = float(latency["p50"]), float(latency["p99"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise RuntimeError(f"cannot read autocannon's output:\n{output}") from None
    return requests, seconds, requests / seconds if seconds else 0.0, p50, p99, errors


def run(url: str, connections: int, seconds: int, threads: int = 1) -> WrkResult:
    """`wrk -t threads -c connections -d seconds --latency url` (wrk takes whole seconds),
    or autocannon's like (one thread: `threads` is wrk's only)."""
    program = find()
    duration = max(1, int(seconds))
    autocannon = Path(program).name != "wrk"
    if autocannon:
        command = [program, "-c", str(connections), "-d", str(duration), "-j", "-n", url]
    else:
        command = [
            program,
            *("-t", str(min(threads, connections)), "-c", str(connections)),
            *("-d", f"{duration}s", "--latency", url),
        ]
    began = time.monotonic()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if autocannon else subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    process.stdout.close()
    # wait4 reaps the child and gives its own resource usage (not all children's).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{output}")
    figures = parse_autocannon(output) if autocannon else parse(output)
    requests, measured, rps, p50, p99, errors = figures
    return WrkResult(
        requests=requests,
        seconds=measured,
        rps=rps,
        p50_ms=p50,
        p99_ms=p99,
        errors=errors,
        cpu=usage.ru_utime + usage.ru_stime,
        wall=wall,
    )
