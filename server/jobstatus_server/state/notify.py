"""Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY.

Each writing transaction sends `NOTIFY jobstatus, '<sender> <revision>'`,
delivered when (and only if) it commits. Every replica keeps one connection of
its own that LISTENs, on a thread, and wakes its watch hub when another
replica commits. The notification is only a wake-up: the hub reads the events
from the table, so a lost notification costs latency (the hub also polls),
never an event. The listener reconnects with backoff when the database goes
away, and wakes the hub after each reconnect, since it may have missed some.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "jobstatus"
# Notice a dead connection within seconds even when no packet would tell us.
KEEPALIVES = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy `postgresql+psycopg://` URL."""
    plain = make_url(url).set(drivername="postgresql")
    return make_conninfo(plain.render_as_string(hide_password=False), **KEEPALIVES)


class Listener:
    """LISTEN on its own connection and thread; call `wake(revision)` for other senders."""

    def __init__(self, url: str, sender: str, wake: Callable[[int], None]) -> None:
        self._conninfo = conninfo(url)
        self._sender = sender
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobstatus-listen", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    backoff = 0.1
                    self._wake(0)  # whatever committed while we were not listening
                    self._listen(conn)
            except psycopg.Error as error:
                if self.connected.is_set():
                    log.warning("lost the LISTEN connection: %s", error)
                else:
                    log.debug("LISTEN connection failed: %s", error)
            self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=0.5):
                sender, _, revision = note.payload.partition(" ")
                if sender != self._sender:
                    self._wake(int(revision or 0))


def payload(sender: str, revision: int) -> str:
    return f"{sender} {revision}"
