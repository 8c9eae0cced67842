"""Alembic environment: runs the migrations on the URL the server was given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from jobstatus_server import models  # noqa: F401  (registers the tables)
from sqlmodel import SQLModel

url = context.config.attributes["url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
