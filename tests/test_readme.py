"""The grpcurl session in README.md, run against a real server with the real grpcurl binary.

Every `$ grpcurl ...` line of a ```console block runs, in order, against one fresh server.
The lines after a command, up to the next `$ ` line or the end of the block, are what the
README shows it prints:

- output starting with `ERROR:` means the call fails: grpcurl must exit with 64 plus that
  gRPC code and print the same Code and Message lines and the same details;
- output starting with `{` is JSON: the same messages, apart from create_time and
  update_time, which must be present where the README shows them;
- any other output must match line for line; no output means only that the call succeeds.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.serverproc import ROOT, ServerProcess

README = ROOT / "README.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
README_ADDRESSES = ("127.0.0.1:50051", "localhost:50051")
TIMESTAMP_KEYS = frozenset({"create_time", "update_time"})
SESSION_METHODS = (
    "CreateMapImport",
    "UpdateMapImport",
    "GetMapImportStatus",
    "WatchMapImportStatus",
)
DETAIL = re.compile(r"^\d+\)\s+(\{.*\})$")


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    expected: list[str]

    @property
    def fails(self) -> bool:
        return bool(self.expected) and self.expected[0] == "ERROR:"


def console_commands(markdown: str) -> list[Command]:
    """Every `$ grpcurl` command of the ```console blocks, with the output shown after it."""
    commands: list[Command] = []
    current: tuple[int, list[str], list[str]] | None = None  # line, command lines, output
    in_console = False

    def flush() -> None:
        nonlocal current
        if current is not None:
            line, parts, output = current
            text = " ".join(parts)
            if shlex.split(text)[0] == "grpcurl":
                while output and not output[-1].strip():
                    output.pop()
                commands.append(Command(line, text, output))
        current = None

    for number, raw in enumerate(markdown.splitlines(), start=1):
        if not in_console:
            in_console = raw.strip() == "```console"
            continue
        if raw.strip() == "```":
            flush()
            in_console = False
        elif raw.startswith("$ "):
            flush()
            current = (number, [raw[2:].rstrip()], [])
        elif current is not None and current[1][-1].endswith("\\") and not current[2]:
            current[1][-1] = current[1][-1][:-1].rstrip()
            current[1].append(raw.strip())
        elif current is not None:
            current[2].append(raw)
    assert not in_console, "README.md has an unclosed ```console block"
    return commands


def json_values(text: str) -> list[Any]:
    """The JSON values printed one after another (grpcurl prints one per message)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def without_timestamps(value: Any) -> Any:
    """`value` with each timestamp replaced by a marker, so only presence is compared."""
    if isinstance(value, dict):
        return {
            key: "<timestamp>" if key in TIMESTAMP_KEYS else without_timestamps(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [without_timestamps(item) for item in value]
    return value


def error_lines(output: list[str]) -> list[Any]:
    """An `ERROR:` block as comparable items: stripped lines, with each detail parsed."""
    items: list[Any] = []
    for raw in output:
        line = raw.strip()
        if not line:
            continue
        detail = DETAIL.match(line)
        items.append(json.loads(detail.group(1)) if detail else line)
    return items


def grpc_code(output: list[str]) -> grpc.StatusCode:
    """The status of an `ERROR:` block's `Code: FailedPrecondition` line."""
    name = next(line.split(":", 1)[1].strip() for line in output if "Code:" in line)
    return grpc.StatusCode[re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()]


def argv(command: Command, address: str) -> list[str]:
    args = shlex.split(command.text)
    return [str(GRPCURL), *(address if arg in README_ADDRESSES else arg for arg in args[1:])]


@pytest.fixture(scope="module")
def readme_server(database_url: str) -> Iterator[ServerProcess]:
    """A server of its own on a fresh database, so revisions match the README's."""
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


COMMANDS = console_commands(README.read_text(encoding="utf-8"))


def test_readme_shows_the_session() -> None:
    texts = [command.text for command in COMMANDS]
    assert any(text.endswith(" list") for text in texts)
    assert any("grpc.health.v1.Health/Check" in text for text in texts)
    for method in SESSION_METHODS:
        assert any(f"MapImportService/{method}" in text for text in texts), method
    assert any(command.fails for command in COMMANDS), "no failed call is shown"
    for command in COMMANDS:
        assert any(address in command.text for address in README_ADDRESSES), command.text


def test_readme_session(readme_server: ServerProcess) -> None:
    assert GRPCURL.exists(), f"{GRPCURL} is missing: run make install"
    last_get: Any = None
    for command in COMMANDS:
        where = f"README.md:{command.line}: {command.text}"
        done = subprocess.run(
            argv(command, readme_server.address),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        context = f"{where}\nexit {done.returncode}\n{output}"
        if command.fails:
            code = grpc_code(command.expected)
            assert done.returncode == 64 + code.value[0], context
            assert error_lines(output.splitlines()) == error_lines(command.expected), context
            continue
        assert done.returncode == 0, context
        if not command.expected:
            continue
        if command.expected[0].startswith("{"):
            actual = without_timestamps(json_values(done.stdout))
            assert actual == without_timestamps(json_values("\n".join(command.expected))), context
            if "GetMapImportStatus" in command.text:
                last_get = actual[-1]
        else:
            assert done.stdout.splitlines() == command.expected, context
    assert last_get is not None, "the README never reads the job back"
    map_import = last_get["map_import"]
    assert map_import["status"] == "MAP_IMPORT_STATUS_DONE"
    assert map_import["meta_data"]["progress"] == 100
    assert map_import["meta_data"]["package_url"]
    assert map_import["meta_data"]["footprint"]
