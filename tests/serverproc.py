"""A real jobstatus server in a subprocess, on a free port, for tests and benchmarks."""

from __future__ import annotations

import fcntl
import functools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"jobstatus: serving gRPC on (\S+)")
ROOT = Path(__file__).resolve().parent.parent


PORT_LOCKS = Path(tempfile.gettempdir()) / "jobstatus-test-ports.lock"
_handed: set[int] = set()  # a process's own locks do not stop it: it remembers


@functools.cache
def _port_locks() -> int:
    """Ports are locked as byte ranges of one file, one byte per port: POSIX record
    locks, the process's while it lives, seen by other processes. Closing any
    descriptor of the file would drop them all, so this one stays open."""
    return os.open(PORT_LOCKS, os.O_RDWR | os.O_CREAT, 0o666)


def port_candidates() -> range:
    """The ports outside the kernel's ephemeral range, the larger side."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    below, above = range(10_000, low), range(high + 1, 65_536)
    return below if len(below) >= len(above) else above


def free_port() -> int:
    """A port no other test process takes while this one lives. Asking the kernel for a
    free port (binding port 0) and passing it on races: until the server binds it,
    another xdist worker, mutant run or benchmark may be handed the same one, and an
    outgoing connection may take it as its own port. So the port lies outside the
    kernel's ephemeral range (which neither hands out), is locked against the other
    test processes on this machine, and is free when checked."""
    candidates = port_candidates()
    for port in random.sample(candidates, min(500, len(candidates))):
        if port in _handed:
            continue
        try:
            fcntl.lockf(_port_locks(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:  # another test process holds it
            continue
        if _bindable(port):
            _handed.add(port)
            return port  # locked until this process exits
        fcntl.lockf(_port_locks(), fcntl.LOCK_UN, 1, port)
    raise RuntimeError(f"no free port in {candidates} after 500 tries")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@dataclass
class ServerProcess:
    """`python -m jobstatus_server` with its own database; start, kill -9, restart."""

    database_url: str
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    pump: threading.Thread | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=500))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobstatus_server",
                "--grpc-addr",
                self.address,
                "--http-addr",
                f"127.0.0.1:{self.http_port}",
                "--database-url",
                self.database_url,
                "--grace",
                "2",
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        ready = threading.Event()
        self.pump = threading.Thread(target=self._pump, args=(self.process, ready), daemon=True)
        self.pump.start()
        # The pump also sets `ready` when the output ends: a server that exited by itself.
        served = ready.wait(timeout) and any(READY.search(line) for line in self.output)
        if not served or self.process.poll() is not None:
            self.stop()
            self._reap()  # it may have exited by itself: close its output too
            raise RuntimeError("server did not start:\n" + "\n".join(self.output))
        return self

    def _pump(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            if READY.search(line):
                ready.set()
        ready.set()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._reap()

    def _reap(self) -> None:
        if self.pump is not None:
            self.pump.join(10)
            self.pump = None
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reap()
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return "\n".join(self.output)
