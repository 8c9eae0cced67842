"""mutmut over the server modules whose tests run in-process: `python -m tests.mutants.tool`.

The hand-written catalogue (`python -m tests.mutants`) breaks one guarantee at a time
and runs the tests that hold it, server processes and all. This runs a mutation
testing tool, mutmut, that writes the mutants itself: every operator, constant and
call inside every function of the modules below, each run against the in-process
tests below (they import `jobstatus_server` and start no server, so mutmut can
switch mutants on inside one forked pytest per mutant).

Restricted so that a run takes a few minutes on two cores:

- modules: the contract's kinds.py (lifecycle rules), validation.py, render.py
  (documented JSON) and wire.py (responses and watch events built from a job's
  bytes). mutmut mutates code inside functions only: module-level tables
  (the transition tables, the kinds' settled sets) are the catalogue's business;
- tests: TESTS below, no test that starts a server or a database server.

Two things of mutmut's to know when reading the score. It picks the tests of a mutant
from which tests called the function during one clean run, so a function whose
results are cached (validation.py compiles its checkers once per message type) is
charged only to the test that first filled the cache: tests/contract/test_validation_rules.py
clears those caches before each of its tests. And a call made while a module is
imported runs before any mutant is switched on (kinds._lifecycle, render's Shapes of
rest.py): such mutants survive unless a test makes the call again.

Everything happens in a temporary directory: the package, the tests and bench/jobs.py
are copied there with a pyproject.toml of mutmut's settings, mutmut runs there and
writes its `mutants/` there, and the directory is removed afterwards (unless --keep).
The working tree is never touched, except for the report, tests/mutants/tool-report.md:
the score per module (killed / total; "no tests" counts as not killed) and every
mutant not killed, a line each (module, line, the change).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "tests" / "mutants" / "tool-report.md"
PACKAGE = "jobstatus_server"


@dataclass(frozen=True)
class Module:
    path: str  # from the package's parent, e.g. "jobstatus_server/contract/kinds.py"
    names: tuple[str, ...]  # mutmut mutant name globs to run


MODULES: dict[str, Module] = {
    "kinds": Module("jobstatus_server/contract/kinds.py", ("jobstatus_server.contract.kinds.*",)),
    "validation": Module(
        "jobstatus_server/contract/validation.py", ("jobstatus_server.contract.validation.*",)
    ),
    "render": Module(
        "jobstatus_server/contract/render.py", ("jobstatus_server.contract.render.*",)
    ),
    "wire": Module("jobstatus_server/contract/wire.py", ("jobstatus_server.contract.wire.*",)),
}

TESTS = (
    "tests/contract/test_validation_quick.py",
    "tests/contract/test_watch_wire.py",
    "tests/contract/test_field_masks.py",
    "tests/state/test_hub.py",
    "tests/contract/test_kinds_rules.py",
    "tests/contract/test_kind_lease_rules.py",
    "tests/contract/test_render_shapes.py",
    "tests/contract/test_validation_rules.py",
)

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), grouped.
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass
class Mutant:
    name: str
    module: str
    status: str  # killed | timeout | survived | no tests | other (exit code)
    line: int = 0
    change: str = ""


@dataclass
class Score:
    module: str
    mutants: list[Mutant] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for m in self.mutants if m.status == status)


def status_of(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return f"other ({code})"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def settings(modules: Sequence[Module], tests: Sequence[str], max_children: int) -> str:
    """The scratch directory's pyproject.toml: mutmut's settings and the project's pytest's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_options = dict(project["tool"]["pytest"]["ini_options"])
    pytest_options["testpaths"] = ["tests"]
    mutmut: dict[str, Any] = {
        "source_paths": [PACKAGE],
        "only_mutate": sorted({m.path for m in modules}),
        "pytest_add_cli_args_test_selection": list(tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],
        "also_copy": ["bench", "README.md"],
        "use_git_change_detection": False,
        # Fork each mutant's pytest from a process that has only collected the tests, not
        # from mutmut's own, which has run them all: validation.py compiles its checkers
        # once per message type (functools.cache), and a worker forked with those caches
        # warm would never call the mutated compile step.
        "process_isolation": "forkserver",
    }
    lines = ["[tool.mutmut]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in mutmut.items()]
    lines += ["", "[tool.pytest.ini_options]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in pytest_options.items()]
    return "\n".join(lines) + "\n"


def lay_out(scratch: Path, modules: Sequence[Module], tests: Sequence[str], jobs: int) -> None:
    """Copy what mutmut needs into `scratch`: the package, tests/, bench/jobs.py, the README
    (test_kinds_rules checks its table of what each status needs), settings."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "tool-report.md")
    shutil.copytree(ROOT / "server" / PACKAGE, scratch / PACKAGE, ignore=ignore)
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=ignore)
    (scratch / "bench").mkdir()
    for name in ("__init__.py", "jobs.py"):
        shutil.copy2(ROOT / "bench" / name, scratch / "bench" / name)
    shutil.copy2(ROOT / "README.md", scratch / "README.md")
    (scratch / "pyproject.toml").write_text(settings(modules, tests, jobs))


def _function_lines(source: str) -> dict[tuple[str | None, str], int]:
    """(class or None, function) -> the line of its `def`, for the top-level ones and methods."""
    found: dict[tuple[str | None, str], int] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[(None, node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[(node.name, item.name)] = item.lineno
    return found


def _describe(mutants: Iterable[Mutant], path: str) -> None:
    """Fill in each mutant's line in the original file and its change, from mutmut's copy.

    Runs with the scratch directory as the working directory (mutmut reads it from there).
    """
    import libcst as cst
    from mutmut.mutation.diff_apply import (
        read_functions_from_index,
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    source = Path(path).read_text()
    file_lines = source.splitlines()
    defs = _function_lines(source)
    module: cst.Module | None = None
    for mutant in mutants:
        functions = read_functions_from_index(mutant.name, path)
        if functions is None:
            module = module or read_mutants_module(path)
            functions = (
                read_original_function(module, mutant.name),
                read_mutant_function(module, mutant.name),
            )
        orig, new = (cst.Module([f]).code.strip().split("\n") for f in functions)
        opcodes = [
            op
            for op in difflib.SequenceMatcher(a=orig, b=new, autojunk=False).get_opcodes()
            if op[0] != "equal"
        ]
        if not opcodes:
            mutant.change = "(no textual change)"
            continue
        _, i1, i2, j1, j2 = opcodes[0]
        before = " ".join(s.strip() for s in orig[i1:i2])
        after = " ".join(s.strip() for s in new[j1:j2])
        mutant.change = f"`{before}` -> `{after}`"
        name, class_name = orig_function_and_class_names_from_key(mutant.name)
        start = defs.get((class_name, name.rpartition(".")[-1]))
        def_index = next(
            (i for i, s in enumerate(orig) if s.lstrip().startswith(("def ", "async def "))), 0
        )
        if start is not None:
            guess = start + (i1 - def_index)
            if 0 < guess <= len(file_lines) and file_lines[guess - 1].strip() == orig[i1].strip():
                mutant.line = guess
                continue
        # Fall back to the first line of the file with the same text.
        target = orig[i1].strip() if i1 < len(orig) else ""
        mutant.line = next(
            (n for n, s in enumerate(file_lines, 1) if target and s.strip() == target), 0
        )


def collect(scratch: Path, modules: dict[str, Module]) -> list[Score]:
    """Read mutmut's results in `scratch`, for the mutants the modules name."""
    from mutmut.mutation.data import SourceFileMutationData

    scores: list[Score] = []
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        for label, module in modules.items():
            data = SourceFileMutationData(path=module.path)
            data.load()
            score = Score(label)
            for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: _order(kv[0])):
                if any(fnmatch.fnmatchcase(name, glob) for glob in module.names):
                    score.mutants.append(Mutant(name, label, status_of(code)))
            _describe((m for m in score.mutants if m.status != "killed"), module.path)
            scores.append(score)
    finally:
        os.chdir(cwd)
    return scores


def _order(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def report(scores: Sequence[Score], seconds: float, command: str, tests: Sequence[str]) -> str:
    total = sum(len(s.mutants) for s in scores)
    killed = sum(s.count("killed") + s.count("timeout") for s in scores)
    lines = [
        "# mutmut over the in-process-tested server modules",
        "",
        f"Written by `{command}` (tests/mutants/tool.py; read its docstring for what it",
        "restricts). Killed counts timeouts too; a mutant that no selected test runs",
        '("no tests") counts as not killed.',
        "",
        f"Score: **{killed} / {total}** killed"
        + (f" ({100 * killed / total:.1f}%)" if total else "")
        + f", in {seconds:.0f} s.",
        "",
        "Tests: " + ", ".join(f"`{t}`" for t in tests) + ".",
        "",
        "| module | killed | survived | no tests | timeout | total | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in scores:
        n = len(s.mutants)
        k = s.count("killed") + s.count("timeout")
        lines.append(
            f"| {s.module} | {s.count('killed')} | {s.count('survived')} | {s.count('no tests')}"
            f" | {s.count('timeout')} | {n} | {k}/{n}"
            + (f" ({100 * k / n:.0f}%)" if n else "")
            + " |"
        )
    lines += ["", "## Mutants not killed", ""]
    left = [m for s in scores for m in s.mutants if m.status not in ("killed", "timeout")]
    if not left:
        lines.append("None.")
    for s in scores:
        mine = [m for m in s.mutants if m.status not in ("killed", "timeout")]
        if not mine:
            continue
        lines += [f"### {s.module} ({len(mine)})", ""]
        for m in sorted(mine, key=lambda m: (m.line, m.name)):
            short = m.name.rpartition(".")[-1]
            lines.append(f"- line {m.line}, {m.status}: {m.change} ({short})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2, help="mutmut's --max-children (2)")
    parser.add_argument(
        "--only", action="append", choices=sorted(MODULES), help="these modules only"
    )
    parser.add_argument(
        "--tests", action="append", metavar="PATH", help="these test files instead of TESTS"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)

    import importlib.util

    if importlib.util.find_spec("mutmut") is None:
        print(
            "mutmut is not installed: pip install -e '.[dev]' -c constraints.txt", file=sys.stderr
        )
        return 2
    modules = {k: v for k, v in MODULES.items() if not args.only or k in args.only}
    tests = [t for t in args.tests or TESTS if (ROOT / t).exists()]
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="jobstatus-mutmut-"))
    try:
        lay_out(scratch, list(modules.values()), tests, args.jobs)
        names = [glob for m in modules.values() for glob in m.names]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTHONPATH", None)
        log = scratch / "mutmut.log"
        print(f"mutmut in {scratch} ({len(names)} name globs, {len(tests)} test files) ...")
        with log.open("w") as out:
            done = subprocess.run(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *names],
                cwd=scratch,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            print(log.read_text()[-6000:], file=sys.stderr)
            print(f"mutmut run exited {done.returncode}; its log: {log}", file=sys.stderr)
            args.keep = True
            return 2
        scores = collect(scratch, modules)
        seconds = time.monotonic() - started
        command = "python -m tests.mutants.tool" + "".join(
            f" --only '{o}'" for o in args.only or ()
        )
        command += "".join(f" --tests {t}" for t in args.tests or ())
        text = report(scores, seconds, command, tests)
        args.report.write_text(text)
        print(text.split("## Mutants not killed")[0].rstrip())
        print(f"\nreport: {args.report}")
        return 0
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
