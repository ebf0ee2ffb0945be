"""Database operations, the scripting API of `pendant db`: upgrade the schema, say where it stands, back
the database up and restore a backup.

- SQLite: the backup is SQLite's online backup API (`sqlite3.Connection.backup`) from the live database:
  one read transaction, so it is a consistent copy even while the backend writes (WAL readers never
  block writers). A restore writes the backup into the target through the same API.
- PostgreSQL: `pg_dump --format=custom` and `pg_restore --clean --if-exists`. The password goes to them
  in the environment (PGPASSWORD), never on the command line; no message shows it.

A restore refuses to replace a database that holds data unless forced, and refuses while the active
backend holds its lock (pendant_backend.leader). After a restore the audit chain is checked
(audit.verify_database) and the result returned.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL, make_url

from pendant_backend import BackendError
from pendant_backend import db as database

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
# pg_dump and pg_restore: long enough for a big database, short enough that a hung server is reported.
PG_TOOL_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Migration:
    """One migration: its revision id and the first line of its description."""

    revision: str
    title: str


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database's schema stands: `current` (None: no schema yet), this version's `head`, and the
    migrations `pendant db upgrade` would run, oldest first. `known` is False for a revision a newer
    version of the software made (then `pending` is empty)."""

    current: str | None
    head: str
    pending: list[Migration] = field(default_factory=list)
    known: bool = True

    @property
    def at_head(self) -> bool:
        """True when nothing is left to run."""
        return self.current == self.head


@dataclass(frozen=True)
class BackupInfo:
    """A backup written: its file (absolute), its size in bytes and the schema it holds."""

    path: Path
    size: int
    revision: str | None


@dataclass(frozen=True)
class RestoreResult:
    """A restore done: the backup's schema, and what the check of the audit chain found (`problems` empty:
    intact; `checked` False when the schema is behind and the check needs `pendant db upgrade` first)."""

    source: Path
    target: str
    revision: str | None
    checked: bool
    events: int
    problems: list[str] = field(default_factory=list)


# ---- the schema ---------------------------------------------------------------------------------------


def current(db_url: str) -> SchemaStatus:
    """The schema of the database at `db_url` and the migrations not run on it yet (nothing is changed;
    a missing SQLite database is an error)."""
    engine = database.make_engine(db_url, create=False, migrate=False)
    try:
        revision = database.current_revision(engine)
    finally:
        engine.dispose()
    head = database.head_revision()
    if revision is not None and not database.known_revision(revision):
        return SchemaStatus(current=revision, head=head, known=False)
    script = ScriptDirectory.from_config(database.alembic_config())
    pending = [
        Migration(item.revision, (item.doc or "").strip().splitlines()[0] if item.doc else "")
        for item in script.iterate_revisions(head, revision or "base")
    ]
    return SchemaStatus(current=revision, head=head, pending=list(reversed(pending)))


def upgrade(db_url: str) -> tuple[str | None, str]:
    """Run the migrations not run yet on the database at `db_url` (a missing SQLite database is made);
    (revision before, revision after). SchemaMismatch for a schema this version does not know."""
    engine = database.make_engine(db_url, create=True, migrate=False)
    try:
        before = database.current_revision(engine)
        if before is not None and not database.known_revision(before):
            raise database.SchemaMismatch(database.schema_problem(engine) or "")
        database.upgrade(engine)
        return before, database.current_revision(engine) or ""
    finally:
        engine.dispose()


# ---- backup ------------------------------------------------------------------------------------------


def backup(db_url: str, dest: Path, *, force: bool = False) -> BackupInfo:
    """Write a backup of the database at `dest` (mode 0600): a SQLite file, or a pg_dump custom archive.
    An existing `dest` is refused unless `force`. The database is not changed."""
    dest = Path(dest).expanduser().resolve()
    if dest.is_dir():
        raise BackendError(f"{dest} is a folder: give the backup's file name, e.g. {dest / 'pendant.backup'}")
    if dest.exists() and not force:
        raise BackendError(f"{dest} exists already: choose another name, or give --force to replace it")
    if not dest.parent.is_dir():
        raise BackendError(f"the folder {dest.parent} does not exist: create it first")
    url = make_url(database.normalize_url(db_url))
    if url.get_backend_name() == "postgresql":
        revision = _revision_of(db_url)
        _pg_dump(url, dest)
    else:
        revision = _sqlite_backup(_sqlite_file(db_url), dest)
    return BackupInfo(path=dest, size=dest.stat().st_size, revision=revision)


def _sqlite_file(db_url: str) -> Path:
    path = database.sqlite_path(database.normalize_url(db_url))
    if path is None:
        raise BackendError("an in-memory SQLite database cannot be backed up or restored: give a file")
    return path.resolve()


def _sqlite_backup(source: Path, dest: Path) -> str | None:
    if not source.is_file():
        raise BackendError(f"there is no database at {source}: nothing to back up")
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        with _sqlite(source) as live, _sqlite(partial) as copy:
            # pages=-1: the whole database in one step, so one read transaction sees one state of it.
            live.backup(copy, pages=-1)
            # The backup is one self-contained file (no -wal beside it).
            copy.execute("PRAGMA journal_mode=DELETE")
            revision = _sqlite_revision(copy)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, dest)
    except sqlite3.Error as exc:
        raise BackendError(f"the backup of {source} failed: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return revision


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, timeout=database.SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def _sqlite_revision(connection: sqlite3.Connection) -> str | None:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "alembic_version" not in tables:
        return None
    row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _revision_of(db_url: str) -> str | None:
    engine = database.make_engine(db_url, create=False, migrate=False)
    try:
        return database.current_revision(engine)
    finally:
        engine.dispose()


# ---- restore -----------------------------------------------------------------------------------------


def restore(db_url: str, source: Path, *, force: bool = False) -> RestoreResult:
    """Put the backup `source` in place of the database at `db_url`, then check its audit chain.

    Refused (BackendError, nothing changed) when `source` is not a backup of this kind, when the target
    holds data and `force` is not given, or while the active backend holds the database's lock."""
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise BackendError(f"there is no backup at {source}")
    url = make_url(database.normalize_url(db_url))
    if url.get_backend_name() == "postgresql":
        target = _restore_postgresql(db_url, url, source, force=force)
    else:
        target = _restore_sqlite(db_url, source, force=force)
    return _checked(db_url, source, target)


def _restore_postgresql(db_url: str, url: URL, source: Path, *, force: bool) -> str:
    _check_magic(source, PG_DUMP_MAGIC, "a PostgreSQL backup (pg_dump's custom format)")
    target = database.shown_url(db_url)
    # Asked before the lock: a database that cannot be reached fails here, not as "a backend is running".
    occupied = _pg_has_tables(db_url)
    with _no_backend_running(db_url):
        if occupied and not force:
            raise BackendError(
                f"the database {target} holds data already: give --force to replace it with the backup"
            )
        _pg_restore(url, source)
    return target


def _restore_sqlite(db_url: str, source: Path, *, force: bool) -> str:
    _check_sqlite_backup(source)
    path = _sqlite_file(db_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _no_backend_running(db_url):
        if path.exists() and path.stat().st_size > 0 and not force:
            raise BackendError(
                f"there is a database at {path} already: give --force to replace it with the backup "
                "(back it up first with `pendant db backup PATH`)"
            )
        _sqlite_restore(source, path)
    return str(path)


@contextlib.contextmanager
def _no_backend_running(db_url: str) -> Iterator[None]:
    """Hold the active backend's lock for the restore: a backend running now refuses the restore, and one
    started meanwhile waits as a standby until the restore is done."""
    from pendant_backend import leader

    lock = leader.lock_for(database.normalize_url(db_url))
    if lock is None:
        yield
        return
    lease = lock.try_take()
    if lease is None:
        raise BackendError(
            f"a backend is running on this database (it holds {lock.what}): stop `pendant backend run` "
            "first, then restore"
        )
    try:
        yield
    finally:
        lease.release()


def _check_magic(source: Path, magic: bytes, what: str) -> None:
    with open(source, "rb") as handle:
        start = handle.read(len(magic))
    if start != magic:
        raise BackendError(f"{source} is not {what}: give a file made by `pendant db backup`")


def _check_sqlite_backup(source: Path) -> str | None:
    """The schema revision of a SQLite backup; BackendError if it is not an intact pendant database."""
    _check_magic(source, SQLITE_MAGIC, "a SQLite backup")
    try:
        with _sqlite(source) as connection:
            # A read-only look: the backup file is never changed.
            connection.execute("PRAGMA query_only=ON")
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            revision = _sqlite_revision(connection)
    except sqlite3.Error as exc:
        raise BackendError(f"{source} is not a usable SQLite backup ({exc}): give another backup") from None
    if verdict != "ok":
        raise BackendError(f"{source} is damaged (SQLite's check says: {verdict}): give another backup")
    if revision is None:
        raise BackendError(f"{source} is a SQLite database but not a pendant backend's: give another backup")
    return revision


def _sqlite_restore(source: Path, target: Path) -> None:
    if not target.exists():
        # Alarms locate people: the file (and its -wal and -shm, which copy its mode) is private.
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        with _sqlite(source) as backup_file, _sqlite(target) as live:
            # Through the backup API, so that the target's WAL and shared memory stay consistent for any
            # process that has the file open.
            backup_file.backup(live, pages=-1)
            live.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackendError(f"the restore into {target} failed: {exc}") from None


def _checked(db_url: str, source: Path, target: str) -> RestoreResult:
    from pendant_backend.audit import chain_head, verify_database

    engine = database.make_engine(db_url, create=False, migrate=False)
    try:
        revision = database.current_revision(engine)
        if revision != database.head_revision():
            return RestoreResult(source, target, revision, checked=False, events=0)
        problems = verify_database(engine)
        events, _ = chain_head(engine)
    finally:
        engine.dispose()
    return RestoreResult(source, target, revision, checked=True, events=events, problems=problems)


# ---- PostgreSQL's tools -------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """The path of pg_dump or pg_restore: on PATH, else the newest of Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if candidates:
        return candidates[-1]
    raise BackendError(
        f"{name} is not installed: install PostgreSQL's client tools (apt-get install postgresql-client)"
    )


def _major_version(path: str) -> int:
    part = Path(path).parents[1].name
    return int(part) if part.isdigit() else 0


def _pg_connection(url: URL) -> tuple[str, dict[str, str]]:
    """The conninfo (without the password) and the environment (with it) for PostgreSQL's tools."""
    from psycopg.conninfo import make_conninfo

    params: dict[str, str] = {"dbname": url.database or ""}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = str(url.port)
    if url.username:
        params["user"] = url.username
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return make_conninfo(**params), env


def _run_pg_tool(url: URL, command: list[str], what: str) -> None:
    conninfo, env = _pg_connection(url)
    try:
        done = subprocess.run(
            [*command, f"--dbname={conninfo}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=PG_TOOL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} took longer than {PG_TOOL_TIMEOUT_S:.0f} s and was stopped") from None
    if done.returncode != 0:
        message = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        if url.password:
            message = message.replace(str(url.password), "***")
        raise BackendError(f"{what} failed: {message or f'exit code {done.returncode}'}")


def _pg_dump(url: URL, dest: Path) -> None:
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        _run_pg_tool(
            url,
            [pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={partial}"],
            f"pg_dump of {url.render_as_string(hide_password=True)}",
        )
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _pg_restore(url: URL, source: Path) -> None:
    _run_pg_tool(
        url,
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            str(source),
        ],
        f"pg_restore into {url.render_as_string(hide_password=True)}",
    )


def _pg_has_tables(db_url: str) -> bool:
    engine: Engine = database.make_engine(db_url, create=False, migrate=False)
    try:
        with engine.connect() as connection:
            return bool(inspect(connection).get_table_names())
    finally:
        engine.dispose()
