"""Jobs, their event log and the revision counter.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("create_revision", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("due_at", sa.Float(), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_job_list", "job", ["tenant", "kind", "create_revision"])
    op.create_index("ix_job_request", "job", ["tenant", "kind", "request_id"], unique=True)
    op.create_index("ix_job_due", "job", ["due_at"])
    op.create_table(
        "event",
        sa.Column("revision", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_event_kind", "event", ["kind", "revision"])
    counter = op.create_table(
        "counter",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counter, [{"name": "revision", "value": 0}, {"name": "compacted", "value": 0}])


def downgrade() -> None:
    op.drop_table("counter")
    op.drop_table("event")
    op.drop_table("job")
