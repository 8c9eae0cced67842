"""One writing transaction (`Tx`): what a write's function reads and changes through.

A write's function runs inside a group's transaction on the writer's cursor: it loads
jobs (those of the group were read ahead, in `loaded`), and `put` gives a job its next
revision, serializes it once and keeps the change (`rows`, sent together by `flush`;
`changes`, handed to the store's listeners after the commit). A group run from the
state the view knows (`KnownState`; PostgreSQL only) may read nothing else: any other
read raises `NeedsRead`, and the group then runs the usual way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import Connection

from jobstatus_server.contract.kinds import Kind
from jobstatus_server.state.changes import DELETED, Change
from jobstatus_server.state.sql import ChangeRow, Statements

M = TypeVar("M", bound=Message)

# The current state a process knows (the view's), for a group that needs no read: the
# revision it is complete up to, and the bytes of those of `keys` (tenant, kind, job id)
# it holds as of that revision. None: nothing to go on.
KnownState = tuple[int, dict[tuple[str, str, str], bytes]]


class NeedsRead(Exception):
    """A group run from the view's state (`Tx.from_view`) asked for something the view
    did not give it: the group must run on the database's state instead."""


@dataclass
class Tx:
    """One writing transaction: reads rows and appends changes with fresh revisions.
    The hot statements go straight to the driver's cursor `cur` of the connection."""

    conn: Connection
    revision: int
    now: datetime
    sql: Statements
    cur: Any = None
    # Jobs read ahead for the group (None: no such job), kept current by `put`.
    loaded: dict[tuple[str, str, str], bytes | None] = field(default_factory=dict)
    changed: bool = False
    kinds: list[str] = field(default_factory=list)
    # The changes of this transaction, in revision order, with the job's bytes as stored.
    changes: list[Change] = field(default_factory=list)
    # `now` as a Timestamp and as seconds, made once for every write of the transaction.
    stamp: timestamp_pb2.Timestamp = field(default_factory=timestamp_pb2.Timestamp)
    seconds: float = 0.0
    # The changes `put` made, sent together (`flush`: Statements.write) before anything
    # reads the tables and at the end of the transaction.
    rows: list[ChangeRow] = field(default_factory=list)
    # Run from the view's state (PostgresWriter._commit_from_view): the jobs in `loaded`
    # are all it may read, and nothing is sent before the end; anything else raises
    # NeedsRead.
    from_view: bool = False

    def __post_init__(self) -> None:
        self.stamp.FromDatetime(self.now)
        self.seconds = self.now.timestamp()

    def flush(self) -> None:
        """Send the job updates and event inserts `put` made so far."""
        rows = self.rows
        if rows:
            self.rows = []
            self.sql.write(self.cur, rows, self.seconds)

    def load(self, kind: Kind[M], tenant: str, job_id: str) -> M | None:
        key = (tenant, kind.name, job_id)
        if key in self.loaded:
            data = self.loaded[key]
            return None if data is None else kind.message.FromString(data)
        if self.from_view:
            raise NeedsRead(key)
        self.flush()
        row = self.sql.load.execute(
            self.cur, tenant=tenant, kind=kind.name, job_id=job_id
        ).fetchone()
        return None if row is None else kind.message.FromString(row[0])

    def load_by_request(self, kind: Kind[M], tenant: str, request_id: str) -> M | None:
        if self.from_view:
            raise NeedsRead(request_id)
        self.flush()
        row = self.sql.load_by_request.execute(
            self.cur, tenant=tenant, kind=kind.name, request_id=request_id
        ).fetchone()
        return None if row is None else kind.message.FromString(row[0])

    def jobs_in(self, kind: Kind[M], tenant: str, statuses: Sequence[int]) -> list[M]:
        if not statuses:
            return []
        if self.from_view:
            raise NeedsRead(statuses)
        self.flush()
        self.sql.select_in_statuses(self.cur, tenant, kind.name, statuses)
        return [kind.message.FromString(data) for (data,) in self.cur.fetchall()]

    def put(
        self,
        kind: Kind[M],
        tenant: str,
        message: M,
        *,
        created: bool,
        request_id: str | None = None,
    ) -> M:
        """Store `message` as the job's new state with the next revision, and log the change."""
        if created and self.from_view:
            raise NeedsRead(kind.name)
        self.revision += 1
        self.changed = True
        self.kinds.append(kind.name)
        revision = self.revision
        setattr(message, "revision", revision)  # noqa: B010
        getattr(message, "update_time").CopyFrom(self.stamp)  # noqa: B009
        if created:
            getattr(message, "create_time").CopyFrom(self.stamp)  # noqa: B009
        job_id = kind.job_id(message)
        status = kind.status_of(message)
        data = message.SerializeToString()
        due_at = kind.due(message)
        settled_at = self.seconds if status in kind.settled else None
        if created:
            self.flush()
            self.sql.insert_job.execute(
                self.cur,
                tenant=tenant,
                kind=kind.name,
                job_id=job_id,
                status=status,
                revision=revision,
                create_revision=revision,
                request_id=request_id or None,
                due_at=due_at,
                settled_at=settled_at,
                data=data,
                create_time=self.seconds,  # the dashboard's time range (migration 0007)
            )
        self.rows.append(
            (revision, tenant, kind.name, job_id, status, due_at, settled_at, data, not created)
        )
        self.loaded[(tenant, kind.name, job_id)] = data
        change = Change(revision, tenant, kind.name, job_id, status, data)
        self.changes.append(change)
        return message

    def delete(self, kind: Kind[M], tenant: str, message: M) -> None:
        """Delete the job `message` (its current state) with its kept events, and log the
        deletion: a change with the next revision, status DELETED, the job's last state."""
        if self.from_view:
            raise NeedsRead(kind.name)
        self.flush()
        job_id = kind.job_id(message)
        self.sql.erase_events.execute(self.cur, w_tenant=tenant, w_kind=kind.name, w_job_id=job_id)
        self.sql.delete_job.execute(self.cur, tenant=tenant, kind=kind.name, job_id=job_id)
        self.revision += 1
        self.changed = True
        self.kinds.append(kind.name)
        data = message.SerializeToString()
        self.rows.append(
            (self.revision, tenant, kind.name, job_id, DELETED, None, None, data, False)
        )
        self.loaded[(tenant, kind.name, job_id)] = None
        self.changes.append(Change(self.revision, tenant, kind.name, job_id, DELETED, data))
