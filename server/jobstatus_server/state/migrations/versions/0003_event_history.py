"""The event log by job: a job's history is read by (tenant, kind, job_id, revision).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_event_job", "event", ["tenant", "kind", "job_id", "revision"])


def downgrade() -> None:
    op.drop_index("ix_event_job", "event")
