"""SQLite's writer: a group's statements on the event loop, its COMMIT in the commit
thread.

A group's statements take tens of microseconds each against SQLite's page cache: they
run on the event loop in one go, with no hand-off to a thread and back per statement
(each a GIL round trip against a busy loop). Only the COMMIT, which waits for the
disk, goes to the commit thread. Another process holding SQLite's write lock sends
the group to that thread to wait, so the loop never waits on the database.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from jobstatus_server.observability.metrics import WRITES
from jobstatus_server.state.compaction import delete_events
from jobstatus_server.state.engines import SQLITE_BUSY_MS
from jobstatus_server.state.group_commit import GroupCommit, PendingWrite
from jobstatus_server.state.transaction import Tx


class SqliteWriter(GroupCommit):
    def _start_group(self, group: list[PendingWrite]) -> None:
        """On the loop: BEGIN and run the group's statements, then hand its COMMIT to
        the commit thread."""
        cur = None
        try:
            conn = self._held_connection()
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            cur = dbapi.cursor()
            # Another process holding SQLite's write lock (`jobstatus keys`, a
            # migration) must not stall the loop: the group then waits in the thread.
            cur.execute("PRAGMA busy_timeout=0")
            try:
                cur.execute("BEGIN IMMEDIATE")
            finally:
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            try:
                tx = self._run_group(conn, group, cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        except Exception:
            # Busy, lost, or a statement refused: the commit thread runs the group again
            # with `_commit`'s handling of each (wait, UNAVAILABLE, one by one). The cursor
            # is closed first, here: freed later on the loop, it would wait for the
            # connection's mutex while the commit thread holds it in a busy BEGIN.
            if cur is not None:
                cur.close()
            self._committer.submit(self._commit_apart, group)
            return
        self._committer.submit(self._commit_group, group, tx, cur)

    def _commit_group(self, group: list[PendingWrite], tx: Tx, cur: Any) -> None:
        """In the commit thread: COMMIT the group the loop ran, then finish it."""
        began = time.monotonic()
        try:
            cur.execute("COMMIT")
        except Exception as error:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            self._release_connection()
            self._lost(group, error)
            self._finish_then_continue(group, None, None)
            return
        for name in tx.kinds:
            WRITES.labels(name).inc()
        took = time.monotonic() - began
        self._finish_then_continue(group, tx.revision if tx.changed else None, tx.changes, took)

    def _bump_revision(self, cur: Any, revision: int) -> None:
        self._sql.set_revision.execute(cur, value=revision)

    async def compaction_batch(self, step: int) -> bool:
        """A writing transaction of its own, off the event loop."""
        done: bool = await self.submit(lambda tx: delete_events(tx.conn, step), None, alone=True)
        return done
