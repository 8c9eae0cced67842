"""The Python examples of docs/client.md and README.md, run as they are (each ```python
block a program of its own, in order) against a real server on both databases, so a
renamed option or method breaks the build, not a newcomer.

A block after the line `<!-- test: in the background ... -->` runs beside the next ones,
which start once it printed a line; it must exit 0 by the end of its document too.
README's history snippet reads `catalog-42`, the job of README's grpcurl session: it is
created first.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from jobstatus import Client
from jobstatus.v1 import map_import_pb2 as mi
from tests.serverproc import ROOT, ServerProcess

BACKGROUND = "<!-- test: in the background"
BOUND = 120.0  # seconds a program may run


@dataclass(frozen=True)
class Example:
    path: Path
    line: int  # where the block starts
    code: str
    background: bool

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def examples(path: Path) -> list[Example]:
    """Every ```python block of a markdown file, in order."""
    found: list[Example] = []
    lines = path.read_text().splitlines()
    start: int | None = None
    for number, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            before = [text for text in lines[: start - 1] if text.strip()]
            background = bool(before) and before[-1].startswith(BACKGROUND)
            found.append(Example(path, start, "\n".join(lines[start : number - 1]), background))
            start = None
    return found


@dataclass
class Running:
    example: Example
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    output: list[str]

    def first_line(self) -> None:
        try:
            line = self.lines.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"{self.example} printed nothing within {BOUND:g} s") from None
        assert line is not None, f"{self.example} ended without a line: {self.finish()}"
        self.output.append(line)

    def finish(self) -> str:
        self.process.wait(BOUND)
        while (line := self.lines.get(timeout=BOUND)) is not None:
            self.output.append(line)
        return "\n".join(self.output)


def start(example: Example, address: str) -> Running:
    env = {**os.environ, "JOBSTATUS_GRPC_ADDR": address, "PYTHONUNBUFFERED": "1"}
    env.pop("JOBSTATUS_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-c", example.code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return Running(example, process, lines, [])


def run_all(path: Path, address: str) -> dict[str, str]:
    """Run a document's examples; the output of each, by its place (file:line)."""
    outputs: dict[str, str] = {}
    beside: list[Running] = []
    try:
        for example in examples(path):
            running = start(example, address)
            if example.background:
                running.first_line()
                beside.append(running)
                continue
            outputs[str(example)] = output = running.finish()
            assert running.process.returncode == 0, f"{example} failed:\n{output}"
        for running in beside:
            outputs[str(running.example)] = output = running.finish()
            assert running.process.returncode == 0, f"{running.example} failed:\n{output}"
    finally:
        for running in beside:
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait(BOUND)
    return outputs


def test_the_documents_have_examples() -> None:
    guide = examples(ROOT / "docs" / "client.md")
    assert len(guide) >= 4
    assert [e.background for e in guide].count(True) == 1
    assert any("from jobstatus import" in e.code for e in examples(ROOT / "README.md"))


def test_the_guide_runs(server: ServerProcess, client: Client) -> None:
    outputs = run_all(ROOT / "docs" / "client.md", server.address)
    printed = "\n".join(outputs.values())
    # The tour: a refused stale write, and statuses by name, never as numbers.
    assert "refused: ABORTED" in printed
    assert "MAP_IMPORT_STATUS_IN_PROGRESS 10%" in printed
    # The runner ran catalog-7 to Done, and the waiting service saw it get there.
    assert "catalog-7 MAP_IMPORT_STATUS_DONE" in printed
    assert "ready: https://packages.example.com/catalog-7.gpkg" in printed
    done = client.map_imports.get("catalog-7")
    assert done.status == mi.MAP_IMPORT_STATUS_DONE
    changes = client.map_imports.history("catalog-7").changes
    progress = [c.job.meta_data.progress for c in changes]
    assert progress == sorted(progress) and progress[-1] == 100


def test_the_readme_examples_run(server: ServerProcess, client: Client) -> None:
    client.map_imports.create(mi.MapImport(import_request_id="catalog-42"))
    outputs = run_all(ROOT / "README.md", server.address)
    printed = "\n".join(outputs.values())
    assert " MAP_IMPORT_STATUS_START" in printed  # the history snippet, by name
    assert "catalog-9 MAP_IMPORT_STATUS_DONE" in printed  # the Python client section's runner
