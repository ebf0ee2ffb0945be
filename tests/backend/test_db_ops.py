"""`pendant db` and pendant_backend.db_ops: a backup taken while the backend writes restores with an intact
audit chain and the same rows (SQLite and PostgreSQL); bad backups and occupied targets are refused with
one clear line; migrations run only when asked, never from a read-only command."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from backend_samples import alarm, tele, topic
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from pendant_backend import BackendError, db_ops, leader
from pendant_backend.alarms import acknowledge_alarm
from pendant_backend.audit import record_verification
from pendant_backend.db import alembic_config, current_revision, engine_for, head_revision, make_engine
from pendant_backend.models import utc_now
from pendant_backend.settings import Settings

from support import free_port, run_cli

OLD_REVISION = "0005"
TABLES = ("alarms", "alarm_locations", "audit_events", "devices")


@pytest.fixture
def sqlite_settings(pendant_data_dir: Path) -> Settings:
    """Settings on a fresh data folder with no database yet (SQLite, <data>/pendant.db)."""
    return Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())


@pytest.fixture
def story(engine: Engine, ingest: Any, clock: Any) -> None:
    """Two alarms, one with a trail and acknowledged: rows and audit events to back up."""
    ingest.handle(topic("pd-0001", "alarm"), alarm("12-3"))
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock())
    ingest.handle(topic("pd-0002", "alarm"), alarm("1-1"))


def rows(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]


def empty_database(db_url: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A URL, of the same kind as `db_url`, where nothing is yet: a file in a new folder, or a new
    PostgreSQL database on the private cluster."""
    if make_url(db_url).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / name / 'pendant.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    database = f"{make_url(db_url).database}_{name}"
    cluster.admin(f"CREATE DATABASE {database}")
    return cluster.url(database)


@pytest.fixture(scope="module")
def old_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the older schema OLD_REVISION, migrated once, copied by `old_database`."""
    path = tmp_path_factory.mktemp("old-schema") / "pendant.db"
    engine = make_engine(f"sqlite:///{path}", migrate=False)
    try:
        command.upgrade(alembic_config(engine), OLD_REVISION)
    finally:
        engine.dispose()
    return path


@pytest.fixture
def old_database(sqlite_settings: Settings, old_template: Path) -> Path:
    """The settings' database, at the older schema OLD_REVISION."""
    path = sqlite_settings.data_dir / "pendant.db"
    shutil.copyfile(old_template, path)
    return path


@pytest.fixture
def head_database(sqlite_settings: Settings, sqlite_template: Path) -> Path:
    """The settings' database, at the newest schema."""
    path = sqlite_settings.data_dir / "pendant.db"
    shutil.copyfile(sqlite_template, path)
    return path


def revision_of(db_url: str) -> str | None:
    engine = make_engine(db_url, create=False, migrate=False)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_a_backup_taken_while_the_backend_writes_restores_intact(
    db_url: str, engine: Engine, story: None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    writing, under_way, errors = threading.Event(), threading.Semaphore(0), []

    def append_events() -> None:  # the backend, appending to the chain meanwhile
        try:
            while not writing.is_set():
                record_verification(engine, actor="writer", checked=(0, "0" * 64), problems=[])
                under_way.release()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            under_way.release(2)

    writer = threading.Thread(target=append_events)
    writer.start()
    try:
        for _ in range(2):
            assert under_way.acquire(timeout=10)
        info = db_ops.backup(db_url, tmp_path / "pendant.backup")
    finally:
        writing.set()
        writer.join()
    assert errors == []
    assert info.path == (tmp_path / "pendant.backup").resolve() and info.revision == head_revision()
    assert os.stat(info.path).st_mode & 0o777 == 0o600 and info.size == info.path.stat().st_size

    target = empty_database(db_url, tmp_path, request, "restored")
    result = db_ops.restore(target, info.path)
    assert result.checked and result.problems == [] and result.events >= 8
    restored = make_engine(target, create=False, migrate=False)
    try:
        for table in ("alarms", "alarm_locations", "devices"):
            assert rows(restored, table) == rows(engine, table) != []
        events = rows(restored, "audit_events")
        assert len(events) == result.events and rows(engine, "audit_events")[: len(events)] == events
    finally:
        restored.dispose()


def test_a_restore_onto_a_database_with_data_is_refused_without_force(
    db_url: str, engine: Engine, story: None, tmp_path: Path
) -> None:
    backup = db_ops.backup(db_url, tmp_path / "pendant.backup").path
    at_backup = rows(engine, "alarms")
    acknowledge_alarm(engine, ref="pd-0002/1-1", operator="Bob", now=utc_now())
    changed = rows(engine, "alarms")
    with pytest.raises(BackendError, match="give --force to replace it"):
        db_ops.restore(db_url, backup)
    assert rows(engine, "alarms") == changed != at_backup
    engine.dispose()  # PostgreSQL's --clean drops the tables: no connection of ours may hold them
    result = db_ops.restore(db_url, backup, force=True)
    assert result.checked and result.problems == []
    assert rows(engine, "alarms") == at_backup


def test_a_restore_waits_for_no_backend(
    sqlite_settings: Settings, head_database: Path, tmp_path: Path
) -> None:
    backup = db_ops.backup(sqlite_settings.db_url, tmp_path / "pendant.backup").path
    lease = leader.lock_for(sqlite_settings.db_url).try_take()
    try:
        result = run_cli(sqlite_settings, "db", "restore", str(backup), "--force")
    finally:
        lease.release()
    assert result.exit_code == 1
    assert "a backend is running on this database" in result.output and "stop `pendant backend run`" in (
        result.output
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            b"\x00garbage, not a database" * 40,
            "is not a SQLite backup: give a file made by `pendant db backup`",
        ),
        (b"", "is not a SQLite backup"),
        (None, "is not a usable SQLite backup (database disk image is malformed)"),  # a cut-off copy
    ],
)
def test_a_backup_that_is_not_a_database_is_one_clear_line(
    sqlite_settings: Settings, tmp_path: Path, sqlite_template: Path, content: bytes | None, says: str
) -> None:
    bad = tmp_path / "bad.backup"
    bad.write_bytes(sqlite_template.read_bytes()[:8192] if content is None else content)
    result = run_cli(sqlite_settings, "db", "restore", str(bad))
    assert result.exit_code == 1
    assert f"Error: {bad} {says}" in result.output
    assert not (sqlite_settings.data_dir / "pendant.db").exists()


def test_a_postgresql_restore_checks_the_archive_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dump"
    bad.write_text("SQLite format 3 pretending")
    with pytest.raises(BackendError, match=r"is not a PostgreSQL backup \(pg_dump's custom format\)"):
        db_ops.restore("postgresql://pendant:s3cret@127.0.0.1:1/pendant", bad)


def test_the_cli_backs_up_and_restores_with_absolute_paths(
    sqlite_settings: Settings, head_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backup = run_cli(sqlite_settings, "db", "backup", "relative.backup")
    assert backup.exit_code == 0, backup.output
    assert f"written to {tmp_path / 'relative.backup'} (" in backup.output
    again = run_cli(sqlite_settings, "db", "backup", "relative.backup")
    assert again.exit_code == 1 and "exists already: choose another name, or give --force" in again.output
    refused = run_cli(sqlite_settings, "db", "restore", "relative.backup")
    assert refused.exit_code == 1
    assert f"there is a database at {sqlite_settings.data_dir / 'pendant.db'} already" in refused.output
    elsewhere = dataclasses.replace(sqlite_settings, db_url=f"sqlite:///{tmp_path / 'new' / 'pendant.db'}")
    restored = run_cli(elsewhere, "db", "restore", "relative.backup", "--json")
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.output[restored.output.index("{") :])
    assert report["source"] == str(tmp_path / "relative.backup") and report["intact"] is True
    assert report["database"] == str(tmp_path / "new" / "pendant.db")


def test_db_current_lists_pending_migrations_and_db_upgrade_runs_them(
    sqlite_settings: Settings, old_database: Path
) -> None:
    current = run_cli(sqlite_settings, "db", "current", "--json")
    assert current.exit_code == 0, current.output
    status = json.loads(current.output)
    assert (status["current"], status["head"], status["at_head"]) == (OLD_REVISION, head_revision(), False)
    assert [m["revision"] for m in status["pending"]] == ["0006", "0007", "0008"]
    assert status["pending"][0]["title"]
    upgraded = run_cli(sqlite_settings, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from schema {OLD_REVISION} to {head_revision()}" in upgraded.output
    assert revision_of(sqlite_settings.db_url) == head_revision()
    again = run_cli(sqlite_settings, "db", "current")
    assert "up to date: no migrations to run" in again.output


def test_a_backup_of_an_older_schema_is_restored_and_the_check_left_for_after_the_upgrade(
    sqlite_settings: Settings, old_database: Path, tmp_path: Path
) -> None:
    backup = db_ops.backup(sqlite_settings.db_url, tmp_path / "old.backup")
    assert backup.revision == OLD_REVISION
    elsewhere = dataclasses.replace(sqlite_settings, db_url=f"sqlite:///{tmp_path / 'new' / 'pendant.db'}")
    result = run_cli(elsewhere, "db", "restore", str(backup.path))
    assert result.exit_code == 0, result.output
    assert f"audit chain not checked: the backup's schema {OLD_REVISION} is behind" in result.output
    assert revision_of(elsewhere.db_url) == OLD_REVISION


@pytest.mark.parametrize(
    "command",
    [
        ["fleet", "--summary"],
        ["alarms", "list"],
        ["user", "list"],
        ["backend", "token", "list"],
        ["user", "add", "ann", "--role", "dispatcher"],  # it may make a database, never migrate one
    ],
)
def test_a_command_on_an_old_schema_says_to_upgrade_and_does_not_migrate(
    sqlite_settings: Settings, old_database: Path, command: list[str]
) -> None:
    result = run_cli(sqlite_settings, *command)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: the database schema is at {OLD_REVISION}, this version needs {head_revision()}: run "
        "`pendant db upgrade` (back it up first with `pendant db backup PATH`)"
    )
    assert revision_of(sqlite_settings.db_url) == OLD_REVISION


def test_the_backend_still_upgrades_when_it_starts_and_a_newer_schema_is_named(
    sqlite_settings: Settings, old_database: Path
) -> None:
    engine_for(sqlite_settings).dispose()  # what BackendService opens when it starts
    assert revision_of(sqlite_settings.db_url) == head_revision()
    engine = make_engine(sqlite_settings.db_url, migrate=False)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    listed = run_cli(sqlite_settings, "fleet")
    assert listed.exit_code == 1 and "is at schema 9999, which this version does not know" in listed.output
    status = json.loads(run_cli(sqlite_settings, "db", "current", "--json").output)
    assert status["known"] is False and status["pending"] == []
    refused = run_cli(sqlite_settings, "db", "upgrade")
    assert refused.exit_code == 1 and "install that version" in refused.output


def test_postgresql_tools_get_the_password_in_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    class Failed:
        returncode, stderr = 1, 'pg_dump: error: password "s3cret-Pa55" was not accepted'

    def run(argv: list[str], *, env: dict[str, str], **_: Any) -> Failed:
        calls.append((argv, env))
        return Failed()

    monkeypatch.setattr(db_ops.subprocess, "run", run)
    monkeypatch.setattr(db_ops, "_revision_of", lambda url: "0007")
    url = "postgresql://pendant:s3cret-Pa55@db.example:5433/pendant?sslmode=require"
    with pytest.raises(BackendError) as failed:
        db_ops.backup(url, tmp_path / "pendant.dump")
    ((argv, env),) = calls
    assert "s3cret-Pa55" not in " ".join(argv) and env["PGPASSWORD"] == "s3cret-Pa55"
    assert "host=db.example" in argv[-1] and "port=5433" in argv[-1] and "sslmode=require" in argv[-1]
    assert "s3cret-Pa55" not in str(failed.value) and "pendant:***@db.example" in str(failed.value)
    assert not list(tmp_path.iterdir())  # the partial dump is gone


@pytest.mark.parametrize(
    "command", [["db"], ["db", "upgrade"], ["db", "current"], ["db", "backup"], ["db", "restore"]]
)
def test_every_db_command_has_help_with_examples(command: list[str]) -> None:
    from click.testing import CliRunner

    from pendant_tools.cli import main

    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"pendant {' '.join(command)}" in result.output
