"""Run the mutant catalogue: `python -m tests.mutants [--only GLOB] [--jobs N]`.

Each worker copies the checkout once (the files git knows, plus new ones not yet
committed; `.venv` and the `node_modules` folders are linked, not copied) and puts
the copy's `server/` and `client/` first on PYTHONPATH, so the server processes the
tests start import the mutated code. The working tree is never touched. Per mutant:
apply the one change, run its tests with `pytest -x`, restore the file.

- killed: the tests failed (pytest exit 1); the report quotes the first failure;
- survived: the tests passed: no test holds that guarantee;
- timeout: the tests neither passed nor failed within --timeout seconds;
- error: pytest could not run them (a mutant that does not parse, a missing test).

Before the mutants, the same tests run once on the unchanged copy (the baseline): a
mutant is only "killed" by tests that pass without it. Exit status 0 when every
mutant was killed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.mutants import Mutant
from tests.mutants.catalogue import load

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "tests" / "mutants" / "report.md"
LINKED = (".venv", "node_modules", "examples/node/node_modules")


@dataclass
class Outcome:
    mutant: Mutant
    result: str  # killed | survived | timeout | error
    seconds: float
    message: str


def check(mutants: list[Mutant]) -> list[str]:
    """What is wrong with the catalogue itself: duplicate names, a `find` not found once."""
    problems: list[str] = []
    seen: set[str] = set()
    for mutant in mutants:
        if mutant.name in seen:
            problems.append(f"{mutant.name}: name used twice")
        seen.add(mutant.name)
        path = ROOT / mutant.file
        if not path.is_file():
            problems.append(f"{mutant.name}: no file {mutant.file}")
            continue
        count = path.read_text().count(mutant.find)
        if count != 1:
            problems.append(f"{mutant.name}: `find` occurs {count} times in {mutant.file}")
        if mutant.find == mutant.replace:
            problems.append(f"{mutant.name}: `replace` equals `find`")
        for test in mutant.tests:
            if not (ROOT / test.split("::")[0]).is_file():
                problems.append(f"{mutant.name}: no test file {test}")
    return problems


def copy_checkout(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    for name in LINKED:
        if (ROOT / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).symlink_to(ROOT / name)


# pytest's short summary names a test (path::name); a captured log line does not.
FAILED = re.compile(r"^(FAILED|ERROR) tests/\S+.*$|^E\s+.+$", re.MULTILINE)


def first_failure(output: str) -> str:
    """The short summary line of the first failed test, else its first `E` line."""
    lines = [m.group(0) for m in FAILED.finditer(output)]
    summary = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    text = (summary or lines or output.strip().splitlines()[-1:] or [""])[0]
    text = re.sub(r"\s+", " ", text).strip()
    return text[:300]


def pytest(
    copy: Path, tests: tuple[str, ...], databases: tuple[str, ...], timeout: float
) -> tuple[int | None, str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(copy / p) for p in ("server", "client", "."))
    env["JOBSTATUS_TEST_DATABASES"] = ",".join(databases)
    env["COLUMNS"] = "1000"  # pytest's summary line keeps the assertion's message whole
    command = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={int(timeout)}",
        *tests,
    ]
    began = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout + 30
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout if isinstance(expired.stdout, str) else ""
        return None, out, time.monotonic() - began
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def run_one(copy: Path, mutant: Mutant, timeout: float) -> Outcome:
    path = copy / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.find, mutant.replace, 1))
    try:
        code, output, seconds = pytest(copy, mutant.tests, mutant.databases, timeout)
    finally:
        path.write_text(original)
    if code == 1 and "Timeout" in first_failure(output):
        return Outcome(mutant, "timeout", seconds, first_failure(output))
    if code == 1:
        return Outcome(mutant, "killed", seconds, first_failure(output))
    if code == 0:
        return Outcome(mutant, "survived", seconds, "all its tests passed")
    if code is None:
        return Outcome(mutant, "timeout", seconds, f"no verdict in {timeout:.0f} s")
    return Outcome(mutant, "error", seconds, f"pytest exit {code}: {first_failure(output)}")


def baseline(copy: Path, mutants: list[Mutant], timeout: float) -> list[str]:
    """Run every named test once, unchanged, per database set; return failures."""
    groups: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for mutant in mutants:
        groups[mutant.databases].update(mutant.tests)
    failures: list[str] = []
    for databases, tests in groups.items():
        code, output, seconds = pytest(copy, tuple(sorted(tests)), databases, timeout * 4)
        where = ",".join(databases)
        print(f"baseline on {where}: {len(tests)} tests, exit {code}, {seconds:.0f} s")
        if code != 0:
            failures.append(f"{','.join(databases)}: {first_failure(output)}")
    return failures


def report(outcomes: list[Outcome], total_seconds: float, jobs: int) -> str:
    killed = sum(o.result == "killed" for o in outcomes)
    lines = [
        "# Mutation testing: the hand-written catalogue",
        "",
        "Made by `make mutants` (`python -m tests.mutants`); do not edit by hand.",
        "Each mutant is one small change to the server that breaks one guarantee; the",
        "tests beside it ran against the changed server and must fail.",
        "",
        f"**{killed} of {len(outcomes)} mutants killed** in {total_seconds / 60:.1f} min "
        f"with {jobs} workers on {os.cpu_count()} cores.",
        "",
        "| # | mutant | guarantee | file | result | s | first failure |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, outcome in enumerate(outcomes, 1):
        mutant = outcome.mutant
        cells = [
            str(number),
            f"`{mutant.name}`",
            mutant.guarantee,
            f"`{mutant.file.removeprefix('server/jobstatus_server/')}`",
            outcome.result,
            f"{outcome.seconds:.0f}",
            outcome.message.replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="glob on mutant names")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per mutant's tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unchanged run")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--report", type=Path, help=f"where to write (full runs: {REPORT})")
    args = parser.parse_args(argv)

    catalogue = load()
    problems = check(catalogue)
    if problems:
        print("the catalogue is broken:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    chosen = [
        m for m in catalogue if not args.only or any(fnmatch.fnmatch(m.name, g) for g in args.only)
    ]
    if args.list:
        for mutant in catalogue:
            print(f"{mutant.name:40} {mutant.file:40} {mutant.guarantee}")
        print(f"{len(catalogue)} mutants")
        return 0
    if not chosen:
        print("no mutant matches", file=sys.stderr)
        return 2

    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="jobstatus-mutants-"))
    try:
        copies = []
        for worker in range(max(1, min(args.jobs, len(chosen)))):
            copy = scratch / f"w{worker}"
            copy_checkout(copy)
            copies.append(copy)
        if not args.no_baseline:
            failing = baseline(copies[0], chosen, args.timeout)
            if failing:
                print("the tests fail without any mutant:\n  " + "\n  ".join(failing))
                return 2

        todo: queue.Queue[tuple[int, Mutant]] = queue.Queue()
        for index, mutant in enumerate(chosen):
            todo.put((index, mutant))
        results: dict[int, Outcome] = {}
        lock = threading.Lock()

        def work(copy: Path) -> None:
            while True:
                try:
                    index, mutant = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = run_one(copy, mutant, args.timeout)
                with lock:
                    results[index] = outcome
                    print(
                        f"[{len(results)}/{len(chosen)}] {outcome.result:8} "
                        f"{outcome.seconds:5.0f}s {mutant.name}: {outcome.message}",
                        flush=True,
                    )

        threads = [threading.Thread(target=work, args=(copy,)) for copy in copies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    outcomes = [results[i] for i in sorted(results)]
    text = report(outcomes, time.monotonic() - began, len(copies))
    target = args.report or (None if args.only else REPORT)
    if target is not None:
        target.write_text(text)
        print(f"report: {target}")
    killed = sum(o.result == "killed" for o in outcomes)
    print(f"{killed} of {len(outcomes)} mutants killed")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
