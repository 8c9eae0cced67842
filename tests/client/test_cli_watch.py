"""`jobstatus watch` in a real terminal (a pseudo-terminal read by the pyte emulator),
`watch --json`, and `jobstatus demo`.

Everything runs against one real server on a fresh database, on SQLite and on
PostgreSQL (conftest's `database_url`).
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pyte
import pytest

from jobstatus import Client
from jobstatus.kinds import KINDS
from jobstatus.live import Outcome, outcome, progress
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from tests.serverproc import ServerProcess

JOBSTATUS = Path(sys.executable).with_name("jobstatus")  # the console script, as users run it
EXIT_FAILED = 4


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


def wait_for(condition: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


# --- map imports, driven as an exporter would -------------------------------------------


def set_progress(client: Client, job_id: str, percent: int) -> mi.MapImport:
    job = mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=percent),
    )
    return client.map_imports.update(job, update_mask=["status", "meta_data.progress"])


def finish(client: Client, job_id: str) -> mi.MapImport:
    job = mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_DONE,
        meta_data=mi.MapImportMetaData(
            package_url=f"https://packages.example.com/{job_id}.gpkg",
            footprint="POLYGON((35 32,35.1 32,35.1 32.1,35 32))",
        ),
    )
    return client.map_imports.update(
        job, update_mask=["status", "meta_data.package_url", "meta_data.footprint"]
    )


def cancel(client: Client, job_id: str) -> mi.MapImport:
    job = mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_CANCEL)
    return client.map_imports.update(job, update_mask=["status"])


# --- a real terminal ----------------------------------------------------------------------


class Terminal:
    """One command on a real pseudo-terminal of fixed size (pexpect), its output read
    by a thread into a terminal emulator (pyte), whose screen the test reads."""

    def __init__(self, env: dict[str, str], width: int = 120, height: int = 30):
        self.env = env
        self.size = (width, height)
        self.emulator = pyte.Screen(width, height)
        self.stream = pyte.ByteStream(self.emulator)
        self.lock = threading.Lock()
        self.child: pexpect.spawn[bytes] | None = None
        self.reader: threading.Thread | None = None

    def run(self, *argv: str) -> None:
        """Start `argv` as the terminal's foreground program (its session leader)."""
        width, height = self.size
        self.child = pexpect.spawn(
            argv[0], list(argv[1:]), env=self.env, dimensions=(height, width), echo=False
        )
        self.reader = threading.Thread(target=self._pump, args=(self.child,), daemon=True)
        self.reader.start()

    def _pump(self, child: pexpect.spawn[bytes]) -> None:
        """Feed everything the program writes to the emulator, until it closes the terminal."""
        while True:
            try:
                data = child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError):
                return
            with self.lock:
                self.stream.feed(data)

    def screen(self) -> str:
        with self.lock:
            return "\n".join(line.rstrip() for line in self.emulator.display)

    def interrupt(self) -> None:
        """Ctrl-C, typed: the terminal sends SIGINT to its foreground program."""
        assert self.child is not None
        self.child.sendintr()

    def wait_for(self, *parts: str, within: float = 20.0) -> str:
        """The screen once it shows every one of `parts`."""

        def shown() -> str:
            screen = self.screen()
            return screen if all(part in screen for part in parts) else ""

        try:
            return str(wait_for(shown, within))
        except AssertionError:
            raise AssertionError(f"the terminal never showed {parts}:\n{self.screen()}") from None

    def exit_status(self, within: float = 20.0) -> int:
        """The program's exit status, as a shell reports it (128 + N for signal N)."""
        assert self.child is not None and self.reader is not None
        self.reader.join(within)  # it ends when the program has closed the terminal
        if self.reader.is_alive():
            raise AssertionError(f"the command never exited:\n{self.screen()}")
        self.child.wait()
        if self.child.signalstatus is not None:
            return 128 + int(self.child.signalstatus)
        return int(self.child.exitstatus or 0)

    def close(self) -> None:
        if self.child is not None:
            self.child.close(force=True)
        if self.reader is not None:
            self.reader.join(5)


@pytest.fixture
def terminal(server: ServerProcess) -> Iterator[Terminal]:
    env = {
        "JOBSTATUS_GRPC_ADDR": server.address,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm-256color",
        "PATH": os.environ.get("PATH", ""),
    }
    term = Terminal(env)
    yield term
    term.close()


def line_of(screen: str, job_id: str) -> str:
    return next(line for line in screen.splitlines() if f" {job_id} " in line)


def test_watch_in_a_terminal_shows_bars_and_exits_4_when_a_job_fails(
    client: Client, terminal: Terminal, uid: str
) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    for job_id in (a, b):
        client.map_imports.create(mi.MapImport(import_request_id=job_id))
    terminal.run(str(JOBSTATUS), "watch", "map-import", a, b, "--until-settled", "--heartbeat", "1")
    screen = terminal.wait_for(a, b, "Start", "live")
    assert "0/2 settled" in screen

    set_progress(client, a, 40)
    screen = terminal.wait_for("InProgress", "40%")
    row = line_of(screen, a)
    assert "InProgress" in row and "40%" in row
    assert "━" in row  # the progress bar
    assert "Start" in line_of(screen, b) and "0%" in line_of(screen, b)
    assert "heartbeat" in terminal.wait_for("heartbeat")  # the status line follows heartbeats

    finish(client, a)
    screen = terminal.wait_for("Done", "100%", "1/2 settled")
    cancel(client, b)
    status = terminal.exit_status()
    assert status == EXIT_FAILED, f"exit status {status}, the screen:\n{terminal.screen()}"
    screen = terminal.screen()
    assert "Done" in line_of(screen, a) and "100%" in line_of(screen, a)
    assert "Cancel" in line_of(screen, b)
    assert "2/2 settled, 1 failed" in screen
    assert "Traceback" not in screen


def test_watch_in_a_terminal_exits_0_when_every_job_succeeds(
    client: Client, terminal: Terminal, uid: str
) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    for job_id in (a, b):
        client.map_imports.create(mi.MapImport(import_request_id=job_id))
    set_progress(client, a, 75)
    terminal.run(str(JOBSTATUS), "watch", "map-import", a, b, "--until-settled")
    terminal.wait_for(a, b, "75%")
    set_progress(client, b, 10)
    terminal.wait_for("10%")
    finish(client, a)
    finish(client, b)
    status = terminal.exit_status()
    assert status == 0, f"exit status {status}, the screen:\n{terminal.screen()}"
    screen = terminal.screen()
    assert "Done" in line_of(screen, a) and "Done" in line_of(screen, b)
    assert "2/2 settled" in screen and "failed" not in screen


def test_watch_in_a_terminal_stops_on_ctrl_c(client: Client, terminal: Terminal, uid: str) -> None:
    dataset = client.datasets.create(ds.Dataset(name=uid))
    client.datasets.start_import(dataset.dataset_id)
    client.datasets.update_import(
        dataset.dataset_id,
        ds.DATASET_IMPORT_STEP_NAME_FETCH,
        step_status=ds.DATASET_IMPORT_STATUS_SUCCESS,
    )
    terminal.run(str(JOBSTATUS), "watch", "dataset", dataset.dataset_id)
    screen = terminal.wait_for(dataset.dataset_id, "in_progress", "50%", "step import")
    assert "Ctrl-C to stop" in screen
    terminal.interrupt()
    status = terminal.exit_status()
    assert status == 130, f"exit status {status}, the screen:\n{terminal.screen()}"
    assert "Traceback" not in terminal.screen()


# --- watch --json -------------------------------------------------------------------------


class Lines:
    """The stdout lines of a running process, read by a thread, with a timeout per line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, within: float = 20.0) -> dict[str, Any]:
        line = self.queue.get(timeout=within)
        assert line is not None, "the process ended early"
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def rest(self, within: float = 20.0) -> list[dict[str, Any]]:
        lines = []
        while (line := self.queue.get(timeout=within)) is not None:
            lines.append(json.loads(line))
        return lines


def cli(server: ServerProcess, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    # Into a pipe, as a user's script runs it: no terminal size in the environment (a
    # COLUMNS inherited from whatever runs the tests would narrow the tables).
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["JOBSTATUS_GRPC_ADDR"] = server.address
    return subprocess.Popen(
        [str(JOBSTATUS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    with process:
        stdout, stderr = process.communicate(timeout=30)
    return process.returncode, stdout, stderr


def test_watch_json_prints_one_line_per_event_in_order(
    server: ServerProcess, client: Client, uid: str
) -> None:
    created = client.map_imports.create(mi.MapImport(import_request_id=uid))
    with cli(server, "watch", "map-import", uid, "--until-settled", "--json") as process:
        lines = Lines(process)
        state = lines.next()
        assert state["type"] == "STATE"
        assert (state["id"], state["status"], state["outcome"]) == (uid, "Start", "running")
        assert state["revision"] == created.revision
        assert state["job"]["importRequestId"] == uid  # the job as protobuf JSON
        assert lines.next()["type"] == "SYNCED"

        revisions = [set_progress(client, uid, p).revision for p in (10, 60)]
        revisions.append(finish(client, uid).revision)
        changes = lines.rest()
        assert process.wait(30) == 0
    assert [c["type"] for c in changes] == ["CHANGE"] * 3
    assert [c["revision"] for c in changes] == revisions
    assert [c["status"] for c in changes] == ["InProgress", "InProgress", "Done"]
    assert [c["job"]["metaData"]["progress"] for c in changes] == [10, 60, 100]
    assert changes[-1]["outcome"] == "succeeded"

    # From a revision: exactly the changes after it, then the exit once settled.
    code, stdout, stderr = finished(
        cli(server, "watch", "map-import", uid, "--from-revision", str(revisions[0]),
            "--until-settled", "--json")
    )  # fmt: skip
    assert code == 0, stderr
    replayed = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["type"], e["revision"]) for e in replayed] == [
        ("CHANGE", revisions[1]),
        ("CHANGE", revisions[2]),
    ]


def test_watch_json_exit_codes(server: ServerProcess, client: Client, uid: str) -> None:
    # A catalog import that fails: FAILURE, exit 4.
    job = client.catalog_imports.create(cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PANELS))
    with cli(server, "watch", "catalog-import", job.id, "--until-settled", "--json") as process:
        lines = Lines(process)
        assert lines.next()["status"] in ("WAITING", "BLOCKED")
        assert lines.next()["type"] == "SYNCED"
        for status in (cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, cat.CATALOG_IMPORT_STATUS_FAILURE):
            change = cat.CatalogImport(id=job.id, status=status, message="bad feed")
            client.catalog_imports.update(change, update_mask=["status", "message"])
        events = lines.rest()
        assert process.wait(30) == EXIT_FAILED
    assert [e["status"] for e in events] == ["IN_PROGRESS", "FAILURE"]
    assert events[-1]["outcome"] == "failed"

    # Already settled: the state, SYNCED, and the exit at once.
    code, stdout, _ = finished(
        cli(server, "watch", "catalog-import", job.id, "--until-settled", "--json")
    )
    assert code == EXIT_FAILED
    assert [json.loads(line)["type"] for line in stdout.splitlines()] == ["STATE", "SYNCED"]

    # An id that does not exist: NOT_FOUND, exit 3, one line on stderr, as `get` does.
    code, stdout, stderr = finished(cli(server, "watch", "map-import", uid, "--until-settled"))
    assert code == 3
    assert stdout == ""
    assert len(stderr.splitlines()) == 1 and "NOT_FOUND" in stderr and uid in stderr

    # Into a pipe without --json: the jobs as they ended, once.
    code, stdout, stderr = finished(
        cli(server, "watch", "catalog-import", job.id, "--until-settled")
    )
    assert code == EXIT_FAILED, stderr
    assert job.id in stdout and "FAILURE" in stdout and "bad feed" in stdout


# --- what a watch shows of each kind ------------------------------------------------------


def test_progress_of_every_kind(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    assert progress(KINDS["map_import"], set_progress(client, uid, 40)).percent == 40

    delivery = client.deliveries.create(dl.PreparedDelivery(catalog_id=uid))
    delivery = client.deliveries.update(
        dl.PreparedDelivery(
            catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS, progress=30
        ),
        update_mask=["status", "progress"],
    )
    assert progress(KINDS["prepared_delivery"], delivery).percent == 30

    dataset_id = client.datasets.create(ds.Dataset(name=uid)).dataset_id
    no_run = client.datasets.get(dataset_id)
    assert progress(KINDS["dataset"], no_run).percent is None
    running = client.datasets.start_import(dataset_id)
    assert progress(KINDS["dataset"], running).percent == 0
    fetched = client.datasets.update_import(
        dataset_id, ds.DATASET_IMPORT_STEP_NAME_FETCH, step_status=ds.DATASET_IMPORT_STATUS_SUCCESS
    )
    halfway = progress(KINDS["dataset"], fetched)
    assert halfway.percent == 50 and "step import" in halfway.detail

    catalog = client.catalog_imports.create(cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS))
    assert progress(KINDS["catalog_import"], catalog).percent is None
    assert outcome(KINDS["catalog_import"], catalog) is Outcome.RUNNING
    aborted = client.catalog_imports.update(
        cat.CatalogImport(id=catalog.id, status=cat.CATALOG_IMPORT_STATUS_ABORTED),
        update_mask=["status"],
    )
    assert outcome(KINDS["catalog_import"], aborted) is Outcome.FAILED


# --- the demo -----------------------------------------------------------------------------


def test_demo_drives_every_kind_to_a_settled_end(server: ServerProcess, client: Client) -> None:
    # `finished` waits 30 s at most: the demo's minute, played 20 times faster, fits.
    code, stdout, stderr = finished(cli(server, "demo", "--speed", "20"))
    assert code == 0, stderr
    assert "for about 3 s" in stdout, "demo --speed 20 plays its minute in about 3 s"
    assert "stopped early" not in stdout, "every step of the demo went through"
    assert "Traceback" not in stderr
    tag = re.search(r"run ([0-9a-f]{6})", stdout)
    assert tag is not None, stdout
    prefix = f"demo-{tag[1]}-"
    catalog_ids = set(re.findall(r"^\s*[\d.]+s\s+catalog import\s+(\d+)\s", stdout, re.M))
    assert "BLOCKED" in stdout  # the second PRODUCTS import queued behind the first

    run = f"({tag[1]})"
    mine: dict[str, Callable[[Any], bool]] = {
        "map_import": lambda job: job.import_request_id.startswith(prefix),
        "prepared_delivery": lambda job: job.catalog_id.startswith(prefix),
        "dataset": lambda job: job.name.endswith(run),
        "catalog_import": lambda job: job.id in catalog_ids,
    }
    demo_jobs = {
        name: [job for job in client.kinds[name].list() if keep(job)] for name, keep in mine.items()
    }
    for name, jobs in demo_jobs.items():
        kind = KINDS[name]
        assert len(jobs) == 4, name  # --jobs defaults to 4 of each kind
        results = [outcome(kind, job) for job in jobs]
        assert Outcome.RUNNING not in results, name  # every job settled
        assert Outcome.SUCCEEDED in results and Outcome.FAILED in results, name

    maps = {j.status for j in demo_jobs["map_import"]}
    assert {
        mi.MAP_IMPORT_STATUS_DONE,
        mi.MAP_IMPORT_STATUS_ERROR,
        mi.MAP_IMPORT_STATUS_CANCEL,
    } <= maps
    for job in demo_jobs["map_import"]:
        if job.status == mi.MAP_IMPORT_STATUS_DONE:
            assert job.meta_data.package_url and job.meta_data.footprint
        if job.status == mi.MAP_IMPORT_STATUS_ERROR:
            assert job.error.message
    for delivery in demo_jobs["prepared_delivery"]:
        if delivery.status == dl.PREPARED_DELIVERY_STATUS_DONE:
            types = {a.artifact_type for a in delivery.artifacts}
            assert types == {"gpkg", "json"}
            gpkg = next(a for a in delivery.artifacts if a.artifact_type == "gpkg")
            assert gpkg.hash.algorithm == dl.HASH_ALGORITHM_SHA256_HEX
            assert re.fullmatch(r"[0-9a-f]{64}", gpkg.hash.hash)
        else:
            assert delivery.error.error_code == errors_pb2.ERROR_CODE_DELIVERY_UNABLE_CLEAR_CACHE
    failed = [
        d for d in demo_jobs["dataset"] if d.latest_run.status == ds.DATASET_IMPORT_STATUS_FAILED
    ]
    entries = [e for step in failed[0].latest_run.steps for e in step.entries]
    assert {e.level for e in entries} >= {ds.DATASET_LOG_LEVEL_INFO, ds.DATASET_LOG_LEVEL_ERROR}
    failures = [
        c for c in demo_jobs["catalog_import"] if c.status == cat.CATALOG_IMPORT_STATUS_FAILURE
    ]
    assert failures and failures[0].message
