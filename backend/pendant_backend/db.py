"""Engine and sessions: SQLite in WAL mode (durable commits, readers beside the writer) or another URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, create_engine

from pendant_backend import BackendError, models  # noqa: F401 - models registers the tables
from pendant_backend.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite URL, or None for another database (or an in-memory SQLite)."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def make_engine(db_url: str, *, create: bool = True) -> Engine:
    """An engine for `db_url` with the tables created.

    For SQLite: the file is created 0600, journal in WAL mode, `synchronous=FULL` so that a commit
    survives a power cut (an alarm is acknowledged to the pendant only after its commit), and a busy
    timeout so that the CLI reading beside the backend never makes ingest fail. With `create=False` a
    missing SQLite file raises BackendError instead of being created.
    """
    path = sqlite_path(db_url)
    connect_args = {}
    if path is not None:
        if not path.exists():
            if not create:
                raise BackendError(
                    f"there is no database at {path}: start the backend with `pendant backend run`"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            # Alarms name people and places: the file (and its -wal and -shm, which copy its mode) is private.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    engine = create_engine(db_url, connect_args=connect_args)
    if path is not None:
        event.listen(engine, "connect", _configure_sqlite)
    SQLModel.metadata.create_all(engine)
    return engine


def _configure_sqlite(dbapi_connection, connection_record) -> None:  # noqa: ANN001 - DB-API objects
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_for(settings: Settings, *, create: bool = True) -> Engine:
    """`make_engine` for the database in `settings`."""
    return make_engine(settings.db_url, create=create)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
