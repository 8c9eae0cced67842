"""Every test module that starts a server runs on both databases, or says in one line why
it cannot.

A module runs on both when it takes conftest's per-backend fixtures (`server`,
`database_url`, `databases` or `backend`), which run it once on SQLite and once on
PostgreSQL. A module that starts a server on a database of its own choosing
(`sqlite_url`), or on none of those fixtures, must say why in its docstring, on a line
that begins `SQLite only:` (or `PostgreSQL only:`).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PER_BACKEND = {"server", "database_url", "databases", "backend"}
# What starts a server process in this suite.
STARTS = ("ServerProcess(", "keyed_server(", "ServerProcess.start", "bigstore.serve")
REASONS = ("SQLite only:", "PostgreSQL only:")
REASON = REASONS[0]


def _modules() -> list[Path]:
    this = Path(__file__).resolve()
    return sorted(p for p in TESTS.rglob("test_*.py") if "mutants" not in p.parts and p != this)


def _fixture_names(tree: ast.Module) -> set[str]:
    """Every parameter name of a function in the module: the fixtures it asks for."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.update(a.arg for a in node.args.args + node.args.kwonlyargs)
    return names


def _verdict(path: Path, root: Path = TESTS.parent) -> str | None:
    text = path.read_text()
    tree = ast.parse(text)
    per_backend = bool(_fixture_names(tree) & PER_BACKEND)
    starts = any(s in text for s in STARTS) or per_backend
    if not starts:
        return None
    fixed = "sqlite_url(" in text
    if per_backend and not fixed:
        return None
    doc = ast.get_docstring(tree) or ""
    for line in doc.splitlines():
        if any(line.startswith(r) and len(line) > len(r) + 10 for r in REASONS):
            return None
    why = "starts a server on SQLite of its own" if fixed else "uses no per-backend fixture"
    return f"{path.relative_to(root)}: {why}, and its docstring has no '{REASON} <why>' line"


def test_every_module_that_starts_a_server_runs_on_both_databases_or_says_why() -> None:
    found = [v for v in map(_verdict, _modules()) if v is not None]
    assert not found, (
        "every module that starts a server runs on both databases (conftest's server, "
        "database_url, databases or backend fixtures) or says in one line why it cannot:\n"
        + "\n".join(found)
    )


def test_the_rule_sees_a_module_that_starts_a_sqlite_server_without_a_reason(
    tmp_path: Path,
) -> None:
    """The check above is not vacuous: it tells the three kinds of module apart."""
    body = "from tests.serverproc import ServerProcess\n\ndef test_x(tmp_path):\n"
    silent = tmp_path / "test_silent.py"
    silent.write_text(f'"""Keys."""\n{body}    ServerProcess(sqlite_url(tmp_path))\n')
    reasoned = tmp_path / "test_reasoned.py"
    reasoned.write_text(
        f'"""Keys.\n\n{REASON} the module is about SQLite\'s own lock."""\n'
        f"{body}    ServerProcess(sqlite_url(tmp_path))\n"
    )
    both = tmp_path / "test_both.py"
    both.write_text('"""Keys."""\n\ndef test_x(server):\n    assert server\n')

    def verdict(path: Path) -> str | None:
        return _verdict(path, root=tmp_path)

    assert verdict(silent) is not None
    assert verdict(reasoned) is None
    assert verdict(both) is None
