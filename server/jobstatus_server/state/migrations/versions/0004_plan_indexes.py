"""Indexes so no statement of a path that scales with traffic reads a growing table
whole (tests/state/test_plans.py): a tenant's jobs of a kind by status (the jobs a
rule looks for, a list filtered by status), and the event log by age (compaction's
cut by age).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_status", "job", ["tenant", "kind", "status", "create_revision"])
    op.create_index("ix_event_created", "event", ["created_at", "revision"])


def downgrade() -> None:
    op.drop_index("ix_event_created", "event")
    op.drop_index("ix_job_status", "job")
