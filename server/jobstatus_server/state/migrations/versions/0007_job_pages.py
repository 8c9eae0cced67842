"""The dashboard's pages of jobs: each job's creation time, and the index of its
time range (its pages by status use ix_job_status, migration 0004).

A job created before this migration takes the time of its first event, where the
event log still keeps it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job", sa.Column("create_time", sa.Float(), nullable=True))
    op.execute(
        "UPDATE job SET create_time ="
        " (SELECT created_at FROM event WHERE event.revision = job.create_revision)"
    )
    op.create_index("ix_job_created", "job", ["tenant", "kind", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_job_created", "job")
    op.drop_column("job", "create_time")  # not in a batch: a copy of the table loses its triggers
