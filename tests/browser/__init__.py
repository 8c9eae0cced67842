"""A real headless Chromium for the dashboard tests, driven through driver.mjs.

The browser is the one the npm package @sparticuz/chromium ships (node_modules,
installed by `make test`); playwright-core drives it. JOBSTATUS_CHROMIUM may name a
Chromium of the system instead.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DRIVER = Path(__file__).resolve().parent / "driver.mjs"


class BrowserError(Exception):
    """A command the browser could not carry out (the message is playwright's)."""


class Browser:
    """One browser with one page; commands run one at a time."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        node = shutil.which("node")
        if node is None:
            raise BrowserError("node is not on PATH: the dashboard tests need Node.js")
        if not (ROOT / "node_modules" / "playwright-core").is_dir():
            raise BrowserError("node_modules lacks playwright-core: run `make install`")
        self.profile = tempfile.mkdtemp(prefix="jobstatus-chromium-")
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in close())
        self.process = subprocess.Popen(
            [node, str(DRIVER), self.profile, str(width), str(height)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
        )
        self.answers: queue.Queue[str | None] = queue.Queue()
        self.next_id = 0
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(line)
        self.answers.put(None)

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        assert self.process.stdin is not None
        self.next_id += 1
        command = {"id": self.next_id, "op": op, **args}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        while True:
            try:
                line = self.answers.get(timeout=timeout + 120)  # the first call unpacks Chromium
            except queue.Empty:
                raise BrowserError(f"no answer to {op}: {self.log()}") from None
            if line is None:
                raise BrowserError(f"the browser driver exited: {self.log()}")
            answer = json.loads(line)
            if answer.get("id") != self.next_id:
                continue
            if not answer["ok"]:
                raise BrowserError(answer["error"])
            return answer["result"]

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    def goto(self, url: str) -> Any:
        return self.call("goto", url=url)

    def evaluate(self, expression: str) -> Any:
        return self.call("evaluate", expression=expression)

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Wait until the page's `expression` is truthy; its value."""
        return self.call("waitFor", timeout=timeout, expression=expression, ms=timeout * 1000)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.process.stdin.close()
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(30)
        self.pump.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
