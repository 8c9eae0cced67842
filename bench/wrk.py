"""wrk, the HTTP load tool from Debian's packages: run it, read its figures and its CPU.

The REST scenario drives jobstatus and the bare ASGI app with the same wrk command. wrk
is a C program with its own event loop, far cheaper per request than a Python client;
its CPU (from the kernel's accounting of the finished child) is reported next to each
figure, so a saturated load tool shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

INSTALL_HINT = (
    "wrk (the HTTP load tool of the REST benchmark) is not installed: "
    "`apt-get install -y wrk` (Debian's package; .ci/run installs it in CI)"
)


class WrkMissing(RuntimeError):
    pass


def find() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkMissing(INSTALL_HINT)
    return binary


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


def run(url: str, connections: int, seconds: int, threads: int = 1) -> WrkResult:
    """`wrk -t threads -c connections -d seconds --latency url` (wrk takes whole seconds)."""
    command = [
        find(),
        *("-t", str(min(threads, connections)), "-c", str(connections)),
        *("-d", f"{max(1, int(seconds))}s", "--latency", url),
    ]
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    process.stdout.close()
    # wait4 reaps the child and gives its own resource usage (not all children's).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{output}")
    requests, measured, rps, p50, p99, errors = parse(output)
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
