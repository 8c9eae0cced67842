"""The SQL text of the store's hot paths: every write's and point read's statement,
compiled once per dialect and run straight on the driver's cursor.

`Sql` is one statement compiled once; `Statements` holds the statements of every
write and point read, with a subclass per database where the text differs
(`SqliteStatements`: one executemany per table; `PostgresStatements`: a group's
changes as arrays in one statement, `PG_WRITE`). The guarded counter bump of a
group run from the view's state (`PG_GUESSED_BUMP`) and the counter bump with its
NOTIFY (`PG_BUMP_AND_NOTIFY`) are here too, so every statement a write sends is in
this one file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from jobstatus_server.state.models import Counter, Event, Job

JOB = Job.__table__  # type: ignore[attr-defined]
EVENT = Event.__table__  # type: ignore[attr-defined]
COUNTER = Counter.__table__  # type: ignore[attr-defined]

# A change as `Tx.put` made it and `Statements.write` sends it, in this order:
# (revision, tenant, kind, job id, status, due_at, settled_at, the job's bytes, existing), where
# `existing` says whether the job's row was there before the change (else its INSERT
# went out at once). A plain tuple, not a NamedTuple: building a NamedTuple of nine
# fields costs about 0.2 us more per write (timeit: 0.43 us against 0.08 us), and
# `PostgresStatements.write` transposes the rows with zip either way.
ChangeRow = tuple[int, str, str, str, int, float | None, float | None, bytes, bool]

# PostgresStatements.write: a group's changes as columns (arrays, one element per
# change, in revision order, sent in binary: no quoting per element), then the events'
# created_at. A job changed more than once in the group takes its last change.
PG_WRITE = """
WITH v AS (
    SELECT * FROM UNNEST(
        %b::bigint[], %b::text[], %b::text[], %b::text[], %b::integer[],
        %b::double precision[], %b::double precision[], %b::bytea[], %b::boolean[]
    ) AS v (revision, tenant, kind, job_id, status, due_at, settled_at, data, existing)
), logged AS (
    INSERT INTO event (revision, tenant, kind, job_id, status, created_at, data)
    SELECT revision, tenant, kind, job_id, status, %s, data FROM v
)
UPDATE job
SET status = last.status, revision = last.revision, due_at = last.due_at,
    settled_at = last.settled_at, data = last.data
FROM (
    SELECT DISTINCT ON (tenant, kind, job_id) * FROM v WHERE existing
    ORDER BY tenant, kind, job_id, revision DESC
) AS last
WHERE job.tenant = last.tenant AND job.kind = last.kind AND job.job_id = last.job_id
"""

# A group run from the view's state (PostgresWriter._commit_from_view) bumps the
# counter first, and only from the revision its jobs were read at: when another replica
# has committed since, nothing is updated and the division by zero ends the transaction
# (the group then runs the usual way).
PG_GUESSED_BUMP = """
WITH bumped AS (
    UPDATE counter SET value = %s WHERE name = 'revision' AND value = %s
    RETURNING pg_notify(%s, %s)
)
SELECT 1 / count(*) FROM bumped
"""

# A group's counter bump on PostgreSQL, with the NOTIFY that is delivered at commit to
# the other replicas' listeners.
PG_BUMP_AND_NOTIFY = (
    "UPDATE counter SET value = %s WHERE name = 'revision' RETURNING pg_notify(%s, %s)"
)


@dataclass(frozen=True)
class Sql:
    """A statement compiled once for a dialect, run through the driver: the hot paths
    skip SQLAlchemy's per-call construction, compilation lookup and type processing."""

    text: str
    names: tuple[str, ...] | None  # parameter order for positional paramstyles
    fixed: dict[str, Any]  # the values the statement itself carries

    @classmethod
    def of(cls, statement: Any, dialect: Any) -> Sql:
        compiled = statement.compile(dialect=dialect)
        names = compiled.positiontup
        fixed = {name: value for name, value in compiled.params.items() if value is not None}
        return cls(str(compiled), tuple(names) if names is not None else None, fixed)

    def run(self, conn: Connection, **params: Any) -> Any:
        values = {**self.fixed, **params}
        if self.names is None:
            return conn.exec_driver_sql(self.text, values)
        return conn.exec_driver_sql(self.text, tuple(values[name] for name in self.names))

    def execute(self, cursor: Any, **params: Any) -> Any:
        """Run on a DB-API cursor: no SQLAlchemy on the way at all."""
        cursor.execute(self.text, self.row(**params))
        return cursor

    def row(self, **params: Any) -> Any:
        """The driver's parameters for one run of the statement (for `execute_many`)."""
        values = {**self.fixed, **params} if self.fixed else params
        if self.names is None:
            return values
        return tuple(values[name] for name in self.names)

    def execute_many(self, cursor: Any, rows: Sequence[Any]) -> None:
        """Run once per row of `rows` (each from `row`), in order, in one driver call."""
        cursor.executemany(self.text, rows)


def _key(prefix: str = "") -> Any:
    return (
        (JOB.c.tenant == bindparam(f"{prefix}tenant"))
        & (JOB.c.kind == bindparam(f"{prefix}kind"))
        & (JOB.c.job_id == bindparam(f"{prefix}job_id"))
    )


@dataclass(frozen=True)
class Statements:
    """The statements of every write and point read, for one dialect (`for_dialect`
    picks the subclass of its database)."""

    load: Sql
    insert_job: Sql
    update_job: Sql
    insert_event: Sql
    lock_revision: Sql
    set_revision: Sql
    load_by_request: Sql
    delete_job: Sql
    erase_events: Sql
    mark: str  # the driver's parameter marker: `?` (SQLite) or `%s` (psycopg)

    def write(self, cur: Any, rows: Sequence[ChangeRow], seconds: float) -> None:
        """Log each change of `rows` as an event and update the jobs that already had a
        row (a new job's INSERT went out when it was made), in revision order; `seconds`:
        the events' `created_at`."""
        raise NotImplementedError

    def select_in_statuses(self, cur: Any, tenant: str, kind: str, statuses: Sequence[int]) -> None:
        """Run on `cur` the read of the data of a tenant's jobs of `kind` in `statuses`."""
        raise NotImplementedError

    def load_many(self, keys: Sequence[tuple[str, str, str]]) -> tuple[str, tuple[str, ...]]:
        """A statement (and its parameters) reading the jobs with these keys."""
        mark = self.mark
        rows = ", ".join([f"({mark}, {mark}, {mark})"] * len(keys))
        return (
            "SELECT tenant, kind, job_id, data FROM job"
            f" WHERE (tenant, kind, job_id) IN (VALUES {rows})",
            tuple(part for key in keys for part in key),
        )

    @classmethod
    def for_dialect(cls, dialect: Any) -> Statements:
        positional = dialect.paramstyle == "qmark"
        kind: type[Statements] = SqliteStatements if positional else PostgresStatements
        return kind(
            load=Sql.of(select(JOB.c.data).where(_key()), dialect),
            insert_job=Sql.of(insert(JOB), dialect),
            update_job=Sql.of(
                update(JOB)
                .where(_key("w_"))
                .values(
                    status=bindparam("status"),
                    revision=bindparam("revision"),
                    due_at=bindparam("due_at"),
                    settled_at=bindparam("settled_at"),
                    data=bindparam("data"),
                ),
                dialect,
            ),
            insert_event=Sql.of(insert(EVENT), dialect),
            lock_revision=Sql.of(
                select(COUNTER.c.value).where(COUNTER.c.name == "revision").with_for_update(),
                dialect,
            ),
            set_revision=Sql.of(
                update(COUNTER)
                .where(COUNTER.c.name == "revision")
                .values(value=bindparam("value")),
                dialect,
            ),
            load_by_request=Sql.of(
                select(JOB.c.data).where(
                    (JOB.c.tenant == bindparam("tenant"))
                    & (JOB.c.kind == bindparam("kind"))
                    & (JOB.c.request_id == bindparam("request_id"))
                ),
                dialect,
            ),
            delete_job=Sql.of(delete(JOB).where(_key()), dialect),
            # A deleted job's kept events: their revisions stay (the log has no gap, see
            # state/watch.py) but name no job and hold nothing, until compaction.
            erase_events=Sql.of(
                update(EVENT)
                .where(
                    (EVENT.c.tenant == bindparam("w_tenant"))
                    & (EVENT.c.kind == bindparam("w_kind"))
                    & (EVENT.c.job_id == bindparam("w_job_id"))
                )
                .values(tenant="", kind="", job_id="", status=0, data=b""),
                dialect,
            ),
            mark="?" if positional else "%s",
        )


@dataclass(frozen=True)
class SqliteStatements(Statements):
    """SQLite's: one executemany per table, in C against the page cache."""

    def write(self, cur: Any, rows: Sequence[ChangeRow], seconds: float) -> None:
        updates = [
            self.update_job.row(
                w_tenant=tenant,
                w_kind=kind,
                w_job_id=job_id,
                status=status,
                revision=revision,
                due_at=due_at,
                settled_at=settled_at,
                data=data,
            )
            for revision, tenant, kind, job_id, status, due_at, settled_at, data, existing in rows
            if existing
        ]
        if updates:
            self.update_job.execute_many(cur, updates)
        self.insert_event.execute_many(
            cur,
            [
                self.insert_event.row(
                    revision=revision,
                    tenant=tenant,
                    kind=kind,
                    job_id=job_id,
                    status=status,
                    created_at=seconds,
                    data=data,
                )
                for revision, tenant, kind, job_id, status, _, _, data, _ in rows
            ],
        )

    def select_in_statuses(self, cur: Any, tenant: str, kind: str, statuses: Sequence[int]) -> None:
        marks = ", ".join("?" * len(statuses))
        cur.execute(
            f"SELECT data FROM job WHERE tenant = ? AND kind = ? AND status IN ({marks})",
            (tenant, kind, *statuses),
        )


@dataclass(frozen=True)
class PostgresStatements(Statements):
    """PostgreSQL's: one statement for all of a group's changes, its columns sent as
    arrays: the server parses, plans and runs one statement per group, not two per
    change."""

    def write(self, cur: Any, rows: Sequence[ChangeRow], seconds: float) -> None:
        cur.execute(PG_WRITE, [*map(list, zip(*rows, strict=True)), seconds])

    def select_in_statuses(self, cur: Any, tenant: str, kind: str, statuses: Sequence[int]) -> None:
        cur.execute(
            "SELECT data FROM job WHERE tenant = %s AND kind = %s AND status = ANY(%s)",
            (tenant, kind, list(statuses)),
        )
