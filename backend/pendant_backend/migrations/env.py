"""Alembic environment: runs the migrations on the engine handed over by pendant_backend.db, or on the
database in the settings (PENDANT_DB_URL) when alembic is run from the command line."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from pendant_backend import models  # noqa: F401 - registers the tables for autogenerate

config = context.config
target_metadata = SQLModel.metadata


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from pendant_backend.db import make_engine
        from pendant_backend.settings import Settings

        engine = make_engine(Settings.from_env().db_url, migrate=False)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things in place: batch mode copies the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported: run them against a database")
run_migrations()
