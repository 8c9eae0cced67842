"""Retention: when each settled job last changed (`settled_at`), indexed for the policy.

Jobs already settled count as settled at the upgrade: the retention age runs from then,
so no job is deleted earlier than the policy allows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from jobstatus_server.contract.kinds import KINDS

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SETTLED = sa.text("settled_at IS NOT NULL")


def upgrade() -> None:
    op.add_column("job", sa.Column("settled_at", sa.Float(), nullable=True))
    job = sa.table(
        "job", sa.column("kind"), sa.column("status"), sa.column("settled_at", sa.Float())
    )
    now = time.time()
    for kind in KINDS.values():
        op.execute(
            job.update()
            .where(job.c.kind == kind.name, job.c.status.in_(sorted(kind.settled)))
            .values(settled_at=now)
        )
    op.create_index(
        "ix_job_settled",
        "job",
        ["settled_at"],
        sqlite_where=_SETTLED,
        postgresql_where=_SETTLED,
    )


def downgrade() -> None:
    op.drop_index("ix_job_settled", "job")
    op.drop_column("job", "settled_at")
