"""A real jobstatus server in a subprocess, on a free port, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"jobstatus: serving gRPC on (\S+)")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
