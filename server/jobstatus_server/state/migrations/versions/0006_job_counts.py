"""Counts of jobs per tenant, kind and status (`job_count`), kept by triggers on `job`.

The triggers run in the transaction of every write to the job table, whoever
makes it (the writer, a bulk load, a deletion), so the counts are exact as of
every commit, on every replica, after any crash. Only a change of status (or an
insert or delete) changes `job_count`: a progress update changes nothing. The
table is filled from the job table once, here, in the migration's transaction
(on PostgreSQL CREATE TRIGGER locks the job table against writers until then).

A later migration must not copy the job table to alter it (Alembic's batch mode on
SQLite does): the copy would lose these triggers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# SQLite: row triggers, (name, event, WHEN condition or "", statements on OLD./NEW.).
ADD = (
    "INSERT INTO job_count (tenant, kind, status, jobs)"
    " VALUES (NEW.tenant, NEW.kind, NEW.status, 1)"
    " ON CONFLICT (tenant, kind, status) DO UPDATE SET jobs = job_count.jobs + 1;"
)
REMOVE = (
    "UPDATE job_count SET jobs = jobs - 1"
    " WHERE tenant = OLD.tenant AND kind = OLD.kind AND status = OLD.status;"
)
SQLITE_TRIGGERS = (
    ("job_count_insert", "INSERT", "", ADD),
    ("job_count_update", "UPDATE OF status", "OLD.status <> NEW.status", REMOVE + "\n" + ADD),
    ("job_count_delete", "DELETE", "", REMOVE),
)

# PostgreSQL: statement triggers over the statement's transition tables, so a statement
# of many rows (a group's UPDATE, a bulk INSERT) adds its changes up once per (tenant,
# kind, status): a row trigger would update the same count row once per job, each
# update a new row version of it within the transaction. (name, event, the rows counted
# as (table, +1 or -1), and the REFERENCING clause.)
PG_TRIGGERS = (
    ("job_count_insert", "INSERT", (("new_jobs", 1),), "NEW TABLE AS new_jobs"),
    (
        "job_count_update",
        "UPDATE",
        (("new_jobs", 1), ("old_jobs", -1)),
        "OLD TABLE AS old_jobs NEW TABLE AS new_jobs",
    ),
    ("job_count_delete", "DELETE", (("old_jobs", -1),), "OLD TABLE AS old_jobs"),
)


def _pg_body(rows: tuple[tuple[str, int], ...]) -> str:
    counted = " UNION ALL ".join(
        f"SELECT tenant, kind, status, {sign} AS jobs FROM {table}" for table, sign in rows
    )
    return (
        "INSERT INTO job_count (tenant, kind, status, jobs)"
        f" SELECT tenant, kind, status, sum(jobs) FROM ({counted}) AS changed"
        " GROUP BY tenant, kind, status HAVING sum(jobs) <> 0"
        " ON CONFLICT (tenant, kind, status) DO UPDATE SET jobs = job_count.jobs + EXCLUDED.jobs;"
    )


def upgrade() -> None:
    op.create_table(
        "job_count",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("status", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, event, rows, referencing in PG_TRIGGERS:
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n{_pg_body(rows)}\nRETURN NULL;\nEND $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON job REFERENCING {referencing}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    else:
        for name, event, condition, body in SQLITE_TRIGGERS:
            when = f" WHEN ({condition})" if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON job FOR EACH ROW{when}\nBEGIN\n{body}\nEND"
            )
    op.execute(
        "INSERT INTO job_count (tenant, kind, status, jobs)"
        " SELECT tenant, kind, status, count(*) FROM job GROUP BY tenant, kind, status"
    )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, *_ in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + (" ON job" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("job_count")
