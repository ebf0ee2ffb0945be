"""Engine, sessions and schema migrations: SQLite in WAL mode by default, or PostgreSQL.

The schema is Alembic's (pendant_backend/migrations). Migrations run only when asked: `make_engine`
upgrades by default (the backend when it starts, `pendant db upgrade`, tests), while the CLI's other
commands open the database with `open_at_head`, which never upgrades an existing schema and says what to
run when the database is behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from pendant_backend import BackendError, models  # noqa: F401 - models registers the tables
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Each connection's page cache, in KiB (SQLite's default is 2,000). The heartbeat history's indexes
# take a page per device at random places: with the default, a batch of 100 heartbeats read most of
# its index pages back from the OS (docs/scaling.md).
SQLITE_CACHE_KIB = 65_536
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises appends to the audit chain on PostgreSQL (SQLite serialises every write transaction).
AUDIT_LOCK_KEY = 0x70656E64


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite URL, or None for another database (or an in-memory SQLite)."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def normalize_url(db_url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default would be psycopg2, not installed)."""
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def shown_url(db_url: str) -> str:
    """The database URL as messages may show it: the password replaced by ***."""
    return make_url(db_url).render_as_string(hide_password=True)


def is_postgresql(engine: Engine) -> bool:
    """True for a PostgreSQL engine."""
    return engine.dialect.name == "postgresql"


def make_engine(db_url: str, *, create: bool = True, migrate: bool = True) -> Engine:
    """An engine for `db_url`, its schema upgraded to the newest migration.

    For SQLite: the file is created 0600, journal in WAL mode, `synchronous=FULL` so that a commit
    survives a power cut (an alarm is acknowledged to the pendant only after its commit), a busy timeout
    so that readers never make ingest fail, and write transactions that take the write lock when they
    begin (BEGIN IMMEDIATE) so that two writers queue instead of failing. With `create=False` a missing
    SQLite file raises BackendError instead of being created.
    """
    db_url = normalize_url(db_url)
    path = sqlite_path(db_url)
    connect_args = {}
    if path is not None:
        if not path.exists():
            if not create:
                raise BackendError(
                    f"there is no database at {path}: start the backend with `pendant backend run`"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            # Alarms locate people: the file (and its -wal and -shm, which copy its mode) is private.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    engine = create_engine(db_url, connect_args=connect_args, pool_pre_ping=path is None)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    if migrate:
        upgrade(engine)
    return engine


def _configure_sqlite(dbapi_connection, connection_record) -> None:  # noqa: ANN001 - DB-API objects
    # The driver's own transaction handling is switched off: _begin_sqlite emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite(connection) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
    mode = connection.get_execution_options().get("pendant_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration for our migrations (the URL comes from `engine`, else from Settings)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, None for an empty one."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def known_revision(revision: str) -> bool:
    """True if `revision` is one of this version's migrations (False: a newer version made it)."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine) -> None:
    """Upgrade the schema to the newest migration (nothing to do when it is there already)."""
    if current_revision(engine) == head_revision():
        return
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if tables and "alembic_version" not in tables:
        raise BackendError(
            f"the database {engine.url.render_as_string(hide_password=True)} was made before schema "
            "migrations existed (an early pilot): move it aside and start again"
        )
    # Alembic reports every step at INFO; one line of ours says it instead.
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        command.upgrade(alembic_config(engine), "head")
    finally:
        alembic_log.setLevel(level)
    log.info("database upgraded to schema %s", head_revision())


class SchemaMismatch(BackendError):
    """The database's schema is not the one this version of the software needs."""


def schema_problem(engine: Engine) -> str | None:
    """Why the database cannot be used as it is (its schema is behind, ahead, missing or unknown), as one
    sentence saying what to do; None when it is at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return None
    shown = engine.url.render_as_string(hide_password=True)
    if current is None:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        if tables:
            return (
                f"the database {shown} was made before schema migrations existed (an early pilot): "
                "move it aside and start again"
            )
        return (
            f"the database {shown} has no schema yet, this version needs {head}: run `pendant db "
            "upgrade` (or start the backend with `pendant backend run`)"
        )
    if not known_revision(current):
        return (
            f"the database {shown} is at schema {current}, which this version does not know (it needs "
            f"{head}): it was upgraded by a newer version of pendant; install that version"
        )
    return (
        f"the database schema is at {current}, this version needs {head}: run `pendant db upgrade` "
        "(back it up first with `pendant db backup PATH`)"
    )


def open_at_head(db_url: str, *, create: bool = False) -> Engine:
    """An engine for a command that does not migrate: SchemaMismatch (one sentence saying what to run)
    unless the database is at the newest schema. With `create`, a database that does not exist yet or
    is empty gets the newest schema: it holds nothing to migrate."""
    engine = make_engine(db_url, create=create, migrate=False)
    try:
        if create and current_revision(engine) is None:
            with engine.connect() as connection:
                if not inspect(connection).get_table_names():
                    upgrade(engine)
        problem = schema_problem(engine)
    except BaseException:
        engine.dispose()
        raise
    if problem is not None:
        engine.dispose()
        raise SchemaMismatch(problem)
    return engine


def engine_for(settings: Settings, *, create: bool = True) -> Engine:
    """`make_engine` for the database in `settings`."""
    return make_engine(settings.db_url, create=create)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A write transaction that commits when the block ends normally and rolls back if it raises.

    On SQLite it takes the write lock at BEGIN, so concurrent writers (ingest, the rules, the CLI, the
    API) queue behind each other instead of failing with `database is locked`.
    """
    bind = engine.execution_options(pendant_begin="IMMEDIATE") if engine.dialect.name == "sqlite" else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock_audit_chain(session: Session) -> None:
    """Make this transaction the only one appending to the audit chain until it ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.exec(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=AUDIT_LOCK_KEY))
