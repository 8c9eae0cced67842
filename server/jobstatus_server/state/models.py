"""The table models: jobs, their event log, and the store-wide revision counter."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel


class Job(SQLModel, table=True):
    """The current state of one job: its protobuf message and what queries need."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_list", "tenant", "kind", "create_revision"),
        Index("ix_job_request", "tenant", "kind", "request_id", unique=True),
        Index("ix_job_due", "due_at"),
        # A tenant's jobs of a kind in some statuses (a rule's `jobs_in`, a filtered list,
        # the dashboard's pages by status, newest first).
        Index("ix_job_status", "tenant", "kind", "status", "create_revision"),
        # The retention policy's order (usecases/retention.py): only settled jobs.
        Index(
            "ix_job_settled",
            "settled_at",
            sqlite_where=text("settled_at IS NOT NULL"),
            postgresql_where=text("settled_at IS NOT NULL"),
        ),
        # The dashboard's pages by creation time (migration 0007).
        Index("ix_job_created", "tenant", "kind", "create_time"),
    )

    tenant: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    job_id: str = Field(primary_key=True, max_length=128)
    status: int
    revision: int = Field(sa_type=BigInteger)
    create_revision: int = Field(sa_type=BigInteger)
    request_id: str | None = Field(default=None, max_length=128)
    # When the job's time-driven transition fires (POSIX seconds), if it has one.
    due_at: float | None = None
    # When the job last changed while settled (POSIX seconds); None while it is not settled.
    settled_at: float | None = None
    # When the job was created (POSIX seconds); None for a job created before migration
    # 0007 whose first event was already compacted away.
    create_time: float | None = None
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Event(SQLModel, table=True):
    """One change: the job as of `revision`. The log the watch reads from."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_kind", "kind", "revision"),
        Index("ix_event_job", "tenant", "kind", "job_id", "revision"),  # a job's history
        Index("ix_event_created", "created_at", "revision"),  # compaction's cut by age
    )

    revision: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    tenant: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    job_id: str = Field(max_length=128)
    status: int
    created_at: float
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Counter(SQLModel, table=True):
    """Named counters: `revision`, the last revision handed out; `compacted`, the newest
    revision deleted from the event log (every later one is kept)."""

    __tablename__ = "counter"

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(sa_type=BigInteger)


class JobCount(SQLModel, table=True):
    """How many jobs of a tenant and kind are in one status. Kept by triggers on the job
    table (migration 0006), in the transaction of every insert, status change and
    delete of a job, so it is exact whatever writes the job table."""

    __tablename__ = "job_count"

    tenant: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    status: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    jobs: int = Field(sa_type=BigInteger)


class ApiKey(SQLModel, table=True):
    """An API key: it belongs to one tenant and grants read and/or write. Only a hash of
    its secret is kept; the secret itself is shown once, when the key is created."""

    __tablename__ = "api_key"
    __table_args__ = (Index("ix_api_key_tenant", "tenant"),)

    key_id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(max_length=64)
    name: str = Field(default="", max_length=256)
    scopes: str = Field(max_length=64)  # comma-separated: read, write
    secret_hash: str = Field(max_length=64)  # sha256 of the secret, hex
    created_at: float  # POSIX seconds
    revoked_at: float | None = None
