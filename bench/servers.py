"""The servers a scenario measures: jobstatus (the subject) and the bare baseline."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import jobs
from bench.baseline import READY
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from tests.serverproc import ROOT, ServerProcess, free_port


@dataclass
class BaselineProcess:
    """`python -m bench.baseline` on a free port."""

    template: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> BaselineProcess:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.baseline"),
                *("--port", str(self.port), "--template", str(self.template)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("baseline did not start:\n" + "\n".join(self.output))
        return self

    def _pump(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            if READY in line:
                ready.set()
        ready.set()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def subject_pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


@contextlib.contextmanager
def running_subject(
    workdir: Path, name: str, extra_args: Sequence[str] = ()
) -> Iterator[ServerProcess]:
    """A jobstatus server on a fresh SQLite file; quiet logs, no timers in the way."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        f"sqlite:///{directory / 'jobstatus.db'}",
        extra_args=["--log-level", "WARNING", *extra_args],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_baseline(template: mi.MapImport, workdir: Path, name: str) -> Iterator[BaselineProcess]:
    path = workdir / f"{name}.template.bin"
    path.write_bytes(template.SerializeToString())
    baseline = BaselineProcess(path).start()
    try:
        yield baseline
    finally:
        baseline.stop()


def create_jobs(address: str, ids: Sequence[str], window: int = 64) -> list[mi.MapImport]:
    """Create the map imports and move each to InProgress; returns them as stored."""
    created: list[mi.MapImport] = []
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = mi_grpc.MapImportServiceStub(channel)
        for offset in range(0, len(ids), window):
            chunk = ids[offset : offset + window]
            creates = [
                stub.CreateMapImport.future(
                    mi.CreateMapImportRequest(map_import=jobs.map_import(job_id, 0))
                )
                for job_id in chunk
            ]
            for future in creates:
                future.result(timeout=60)
            updates = [
                stub.UpdateMapImport.future(jobs.update_request(job_id, 1)) for job_id in chunk
            ]
            created.extend(future.result(timeout=60).map_import for future in updates)
    return created


class Writer:
    """A client that keeps its connection, so a timed write pays no connection set-up."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = mi_grpc.MapImportServiceStub(self.channel)

    def update(self, job_id: str, progress: int) -> int:
        """One UpdateMapImport; returns the revision it answered."""
        response = self.stub.UpdateMapImport(jobs.update_request(job_id, progress), timeout=60)
        return int(response.map_import.revision)

    def close(self) -> None:
        self.channel.close()


def get(address: str, job_id: str) -> mi.GetMapImportStatusResponse:
    with grpc.insecure_channel(address) as channel:
        stub = mi_grpc.MapImportServiceStub(channel)
        return stub.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id=job_id), timeout=60
        )
