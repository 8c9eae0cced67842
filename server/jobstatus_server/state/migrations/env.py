"""Alembic environment: runs the migrations on the URL the server was given.

On PostgreSQL the whole upgrade holds an advisory lock, so replicas that start
at once (each runs `upgrade` at start) take turns: the first migrates, the
others then find the database at head and do nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel

from jobstatus_server.state import models  # noqa: F401  (registers the tables)

MIGRATION_LOCK = 0x6A6F6273_00000001  # "jobs", 1: pg_advisory_lock key of the upgrade

url = context.config.attributes["url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if postgresql:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
engine.dispose()
