"""The servers a scenario measures: jobstatus (the subject) and the bare baseline."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import READY, jobs
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from tests.serverproc import ROOT, ServerProcess, free_port


@dataclass
class BaselineProcess:
    """`python -m MODULE --port PORT --answer FILE` (bench.baseline or bench.asgi_baseline).

    It reads its answer from FILE on its first request, so that it can start (seconds of
    imports) beside jobstatus, before jobstatus has made the job whose bytes it answers:
    `answer_with()` writes the file before anything calls the baseline."""

    module: str
    answer: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self) -> BaselineProcess:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", self.module),
                *("--port", str(self.port), "--answer", str(self.answer)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> BaselineProcess:
        assert self.process is not None
        if not self.ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("baseline did not start:\n" + "\n".join(self.output))
        return self

    def answer_with(self, data: bytes) -> None:
        partial = self.answer.with_name(self.answer.name + ".part")
        partial.write_bytes(data)
        partial.replace(self.answer)

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            if READY in line:
                self.ready.set()
        self.ready.set()

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
    workdir: Path, name: str, extra_args: Sequence[str] = (), database_url: str | None = None
) -> Iterator[ServerProcess]:
    """A jobstatus server on a fresh SQLite file (or on `database_url`); quiet logs."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        database_url or f"sqlite:///{directory / 'jobstatus.db'}",
        extra_args=["--log-level", "WARNING", *extra_args],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_replicas(database_url: str, count: int) -> Iterator[list[ServerProcess]]:
    """`count` jobstatus servers on one (PostgreSQL) database, started at once (each
    migrates under the advisory lock at start); quiet logs."""
    servers = [
        ServerProcess(database_url, extra_args=["--log-level", "WARNING"]) for _ in range(count)
    ]
    try:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda server: server.start(), servers))
        yield servers
    finally:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda server: server.stop(), servers))


@contextlib.contextmanager
def running_pair(
    workdir: Path, name: str, baseline: str = "bench.baseline", database_url: str | None = None
) -> Iterator[tuple[ServerProcess, BaselineProcess]]:
    """jobstatus (running_subject) and its baseline (the module `baseline`), started side
    by side; give the baseline its answer with `answer_with()` before calling it."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    bare = BaselineProcess(baseline, directory / "baseline.answer").launch()
    try:
        with running_subject(workdir, name, database_url=database_url) as server:
            bare.wait_ready()
            yield server, bare
    finally:
        bare.stop()


def answer_of_job(template: mi.MapImport) -> bytes:
    """bench.baseline's answer: the job jobstatus answers, serialized."""
    return template.SerializeToString()


def answer_of_http(body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """bench.asgi_baseline's answer: the body and headers jobstatus answered."""
    return json.dumps({"headers": [list(h) for h in headers], "body_hex": body.hex()}).encode()


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


def http_get(url: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """One GET: status, headers, body."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.status), list(response.getheaders()), response.read()
