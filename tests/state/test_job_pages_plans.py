"""The dashboard's pages and the counts read through an index on SQLite and PostgreSQL:
every statement they run is explained by the database itself (`EXPLAIN QUERY PLAN`,
`EXPLAIN`) on a job table filled enough for the planner to prefer an index, and no
plan may scan the job table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from jobstatus_server.state.job_counts import tenant_counts, total_counts
from jobstatus_server.state.job_pages import JobFilter, by_id, newest_first
from jobstatus_server.state.migrations import upgrade
from tests.conftest import Databases

JOBS = 20_000
KINDS = ("map_import", "prepared_delivery")
TENANTS = ("acme", "bolt")
STATUSES = (1, 2, 3, 4, 8)
# A plan line that reads the whole job table (or the whole of one of its indexes).
SQLITE_SCAN = re.compile(r"^SCAN job\b")
PG_SCAN = re.compile(r"Seq Scan on job\b(?!_count)")


@pytest.fixture(scope="module")
def engine(databases: Databases) -> Iterator[sa.Engine]:
    url = databases.new("plans")
    upgrade(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO job (tenant, kind, job_id, status, revision, create_revision,"
                " create_time, data) VALUES (:tenant, :kind, :job_id, :status, :n, :n, :time, :d)"
            ),
            [
                {
                    "tenant": TENANTS[n % 2],
                    "kind": KINDS[(n // 2) % 2],
                    "job_id": f"job-{n:06}",
                    "status": STATUSES[n % len(STATUSES)],
                    "n": n,
                    "time": 1_700_000_000.0 + n,
                    "d": b"x" * 40,
                }
                for n in range(1, JOBS + 1)
            ],
        )
        conn.execute(sa.text("ANALYZE"))
    yield engine
    engine.dispose()


def _plans(engine: sa.Engine, read: Callable[[sa.Connection], Any]) -> list[tuple[str, str]]:
    """Each statement `read` runs, with its plan as the database explains it."""
    ran: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.startswith("EXPLAIN"):
            ran.append((statement, parameters))

    with engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        read(conn)
        sa.event.remove(conn, "before_cursor_execute", capture)
        sqlite = conn.dialect.name == "sqlite"
        explained = []
        for statement, parameters in ran:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).fetchall()
            plan = "\n".join(str(row[-1]) for row in rows)
            explained.append((statement, plan))
    assert explained, "the read ran no statement"
    return explained


def _no_scan(engine: sa.Engine, read: Callable[[sa.Connection], Any]) -> None:
    for statement, plan in _plans(engine, read):
        scans = [
            line
            for line in plan.splitlines()
            if SQLITE_SCAN.search(line.strip()) or PG_SCAN.search(line)
        ]
        assert not scans, f"{statement}\nscans the job table:\n{plan}"


FILTERS = {
    "newest": JobFilter("acme", "map_import"),
    "one status": JobFilter("acme", "map_import", (4,)),
    "active statuses": JobFilter("acme", "map_import", (1, 2, 3, 4)),
    "since": JobFilter("acme", "map_import", since=1_700_010_000.0),
    "range and status": JobFilter(
        "acme", "map_import", (8,), since=1_700_005_000.0, until=1_700_006_000.0
    ),
    "prefix": JobFilter("acme", "map_import", prefix="job-01"),
    "prefix and status": JobFilter("acme", "map_import", (2, 3), prefix="job-019"),
}


@pytest.mark.parametrize("name", FILTERS)
def test_a_first_and_a_later_page_read_through_an_index(engine: sa.Engine, name: str) -> None:
    wanted = FILTERS[name]
    if wanted.prefix:
        _no_scan(engine, lambda conn: by_id(conn, wanted, None, 51))
        _no_scan(engine, lambda conn: by_id(conn, wanted, "job-0190", 51))
    else:
        _no_scan(engine, lambda conn: newest_first(conn, wanted, None, 51))
        _no_scan(engine, lambda conn: newest_first(conn, wanted, 12_000, 51))


def test_a_page_has_what_its_filter_asks(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        page = newest_first(conn, JobFilter("acme", "map_import", (4, 8)), 12_000, 5)
        assert [r for r, _, _ in page.rows] == sorted((r for r, _, _ in page.rows), reverse=True)
        assert all(r < 12_000 for r, _, _ in page.rows) and len(page.rows) == 5
        prefixed = by_id(conn, JobFilter("acme", "map_import", prefix="job-0190"), None, 100)
        assert [j for _, j, _ in prefixed.rows] == sorted(j for _, j, _ in prefixed.rows)
        assert prefixed.rows and all(j.startswith("job-0190") for _, j, _ in prefixed.rows)


def test_the_counts_read_no_job_row(engine: sa.Engine) -> None:
    _no_scan(engine, lambda conn: tenant_counts(conn, "acme", ["map_import"]))
    _no_scan(engine, total_counts)
    with engine.connect() as conn:
        counted = tenant_counts(conn, "acme", list(KINDS))
    assert sum(counted.jobs.values()) == JOBS // 2
