"""The statements a process sends to its database, recorded, and the database's own plan
for each: does any read a growing table whole?

`Recorder` records, while it is `active`, every statement sent on a connection that
SQLAlchemy's pools open while it is installed (the store's, the readers', and the
writer's, which runs its statements on the driver's own cursor, past SQLAlchemy's
`before_cursor_execute`): on SQLite through the driver's trace callback (the
statement with its values in place), on PostgreSQL through the connection's
`cursor_factory` (the statement and its parameters). `Recorder.statements()` gives one
example of each distinct statement (values and the length of value lists aside), with
the paths (`Recorder.path`) that sent it.

`plan(url, statement)` asks the database for its plan (`EXPLAIN QUERY PLAN` on SQLite,
`EXPLAIN (FORMAT JSON)` on PostgreSQL, its index searches with the leading columns of
the index they bound, as SQLite says them) and `table_reads(...)` names what in it
reads a growing table whole: a scan, or an index search bounded only by a partition of
the table (tenant and kind, which every job of a tenant's kind shares).
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool

# Statements with a plan; the rest (BEGIN, COMMIT, PRAGMA, ...) read no table.
_PLANNED = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
# Columns every job of a tenant's kind shares: an index search bounded by nothing
# else reads that whole partition, which grows with the store.
PARTITION = frozenset({"tenant", "kind"})


@dataclass(frozen=True)
class Statement:
    """One statement as it was sent: its text and its parameters (None on SQLite, whose
    trace gives the text with the values in place)."""

    text: str
    params: Any = None


def shape(text: str) -> str:
    """The statement with values, parameter markers and lists of them each as one `?`:
    statements that differ only in their values have the same shape."""
    text = re.sub(r"[xX]'[0-9a-fA-F]*'", "?", text)
    text = re.sub(r"'(?:[^']|'')*'", "?", text)
    text = re.sub(r"%\(\w+\)s|%[sb]|\?", "?", text)
    text = re.sub(r"\?::\w+(?:\[\])?", "?", text)  # a marker's cast (PostgreSQL's)
    text = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b", "?", text)
    text = re.sub(r"\?(?:\s*,\s*\?)+", "?", text)
    text = re.sub(r"\(\?\)(?:\s*,\s*\(\?\))+", "(?)", text)
    return " ".join(text.split())


class _RecordingCursor(psycopg.Cursor[Any]):
    recorder: Recorder

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.recorder.record(str(query), params)
        return super().execute(query, params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        rows = list(params_seq)
        for params in rows[:1]:
            self.recorder.record(str(query), params)
        super().executemany(query, rows, **kwargs)


@dataclass
class Recorder:
    """Records the statements sent while `active`, each under the current `path`."""

    active: bool = False
    path: str = ""
    sent: list[tuple[str, Statement]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, text: str, params: Any = None) -> None:
        if self.active and _PLANNED.match(text):
            with self._lock:
                self.sent.append((self.path, Statement(text, params)))

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(self.record)
        elif isinstance(dbapi_connection, psycopg.Connection):
            recorder = self

            class Cursor(_RecordingCursor):
                pass

            Cursor.recorder = recorder
            dbapi_connection.cursor_factory = Cursor

    @contextmanager
    def installed(self) -> Iterator[Recorder]:
        """Record on every connection SQLAlchemy's pools open meanwhile."""
        event.listen(Pool, "connect", self._on_connect)
        try:
            yield self
        finally:
            event.remove(Pool, "connect", self._on_connect)

    def statements(self) -> dict[str, tuple[Statement, list[str]]]:
        """By shape: the first statement of that shape sent, and the paths that sent it."""
        found: dict[str, tuple[Statement, list[str]]] = {}
        with self._lock:
            sent = list(self.sent)
        for path, statement in sent:
            paths = found.setdefault(shape(statement.text), (statement, []))[1]
            if path not in paths:
                paths.append(path)
        return found


def plan(url: str, statement: Statement) -> list[str]:
    """The database's plan of `statement` on the database at `url`, one line per step:
    SQLite's `EXPLAIN QUERY PLAN` details; on PostgreSQL each node of `EXPLAIN (FORMAT
    JSON)` (see `_pg_steps`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database or "") as conn:
            return [
                str(row[3])
                for row in conn.execute(f"EXPLAIN QUERY PLAN {statement.text}").fetchall()
            ]
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {statement.text}", statement.params).fetchone()
        assert row is not None
        columns = {
            str(name): list(keys)
            for name, keys in conn.execute(
                "SELECT c.relname, array_agg(a.attname ORDER BY k.n)"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid,"
                " unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, n)"
                " JOIN pg_attribute a ON a.attnum = k.attnum"
                " WHERE a.attrelid = i.indrelid GROUP BY c.relname"
            )
        }
        return list(_pg_steps(row[0][0]["Plan"], None, columns))


def _pg_steps(
    node: dict[str, Any], table: str | None, columns: dict[str, list[str]]
) -> Iterator[str]:
    """Each node as `<node type> on <table> using <index> (<the leading columns of the
    index its condition names>) [<condition>]`."""
    # A Bitmap Index Scan names its index; its table is its parent's (Bitmap Heap Scan).
    table = node.get("Relation Name", table)
    step = node["Node Type"]
    if "Relation Name" in node or "Index Name" in node:
        step += f" on {table}"
    if "Index Name" in node:
        condition = str(node.get("Index Cond", ""))
        named = set(re.findall(r"\w+", re.sub(r"'(?:[^']|'')*'", "", condition)))
        prefix = list(itertools.takewhile(named.__contains__, columns[node["Index Name"]]))
        step += f" using {node['Index Name']} ({', '.join(prefix)}) [{condition}]"
    yield step
    for child in node.get("Plans", ()):
        yield from _pg_steps(child, table, columns)


_SQLITE_SCAN = re.compile(r"^SCAN (\w+)\b")
_SQLITE_SEARCH = re.compile(r"^SEARCH (\w+) USING .*?INDEX \w+ \((.*)\)$")
_PG_SCAN = re.compile(r"^Seq Scan on (\w+)")
_PG_SEARCH = re.compile(
    r"^(?:Index Scan|Index Only Scan|Bitmap Index Scan) on (\w+) using \w+ \(([^)]*)\)"
)


def table_reads(steps: Sequence[str], growing: dict[str, frozenset[str]]) -> list[str]:
    """The steps of a plan that read a table of `growing` (table name: its columns)
    whole: a scan, or an index search whose bounds (the leading columns of the index
    it constrains) are PARTITION columns at most. A skip-scan's `ANY(column)` bounds
    nothing."""
    found = []
    for step in steps:
        scan = _SQLITE_SCAN.match(step) or _PG_SCAN.match(step)
        if scan and scan.group(1) in growing:
            found.append(step)
            continue
        search = _SQLITE_SEARCH.match(step) or _PG_SEARCH.match(step)
        if search and search.group(1) in growing:
            bounds = re.sub(r"ANY\(\w+\)", "", search.group(2))
            if set(re.findall(r"\w+", bounds)) & growing[search.group(1)] <= PARTITION:
                found.append(step)
    return found
