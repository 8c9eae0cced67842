"""The store's engines and connections, per database: SQLAlchemy engines for the
writer and the readers, how each database's connections are set up, which failures
mean the database (not a statement) failed, and the liveness probe of a SQLite file.

SQLite: WAL, the given `synchronous`, a busy timeout, BEGIN IMMEDIATE for the writer
and no BEGIN for a single-statement read. PostgreSQL: a pinged pool, READ COMMITTED
for the writer and REPEATABLE READ for the readers (one snapshot per read).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from jobstatus_server.contract.errors import Unavailable

log = logging.getLogger(__name__)

READERS = 4
SQLITE_BUSY_MS = 30000  # how long a SQLite statement waits for another's lock
# A failure of the database or the connection to it, not of one write's statements.
# The same failures as the drivers raise them, on the writer's own cursor.
DRIVER_LOST: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
LOST: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    *DRIVER_LOST,
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def postgres_engine(url: str, *, writer: bool) -> Engine:
    return create_engine(
        make_url(url),
        pool_pre_ping=True,
        pool_size=1 if writer else READERS,
        max_overflow=0 if writer else 2,
        pool_timeout=10,
        isolation_level="READ COMMITTED" if writer else "REPEATABLE READ",
        connect_args={"connect_timeout": 5, "application_name": "jobstatus"},
    )


def sqlite_engine(url: str, synchronous: str, *, writer: bool) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # A local file needs no liveness ping per checkout (ping_sqlite_file probes the file).
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if writer:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif not conn.get_execution_options().get("single_statement"):
            conn.exec_driver_sql("BEGIN")

    return engine


def ping_sqlite_file(url: str) -> None:
    """Raise Unavailable unless the SQLite file answers a query now. The pooled
    connections keep their file open even after the file or its directory is gone, so
    the probe opens the file afresh, read-write and without creating it, as a new
    connection would."""
    database = make_url(url).database or ""
    if not database or database == ":memory:":
        return
    uri = f"file:{quote(os.path.abspath(database))}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            conn.execute("SELECT value FROM counter").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as error:
        log.debug("storage probe failed: %s", error)
        raise Unavailable("the database did not answer", reason="STORAGE_UNAVAILABLE") from None
