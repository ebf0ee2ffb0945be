"""The schema: Alembic's migrations build exactly the models' schema, on SQLite and on PostgreSQL; write
transactions queue instead of failing or losing updates (SQLite: BEGIN IMMEDIATE; PostgreSQL: row locks)."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from pendant_backend.db import current_revision, head_revision, make_engine, session_scope, shown_url
from pendant_backend.models import Device


def test_upgrade_from_empty_gives_the_models_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), SQLModel.metadata
            )
            tables = set(inspect(connection).get_table_names())
        assert differences == []
        assert set(SQLModel.metadata.tables) <= tables
    finally:
        engine.dispose()


def test_upgrade_is_a_no_op_at_head(db_url: str) -> None:
    first = make_engine(db_url)
    with session_scope(first) as session:
        session.add(Device(device_id="pd-0001"))
    first.dispose()
    again = make_engine(db_url)
    try:
        with again.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM devices")).scalar() == 1
    finally:
        again.dispose()


def test_concurrent_writers_lose_no_update(engine) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(10):
                with session_scope(engine) as session:
                    device = session.get(Device, "pd-0001", with_for_update=True)
                    device.config_rev += 1
                    session.add(device)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with session_scope(engine) as session:
        session.add(Device(device_id="pd-0001"))
    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with session_scope(engine) as session:
        assert session.get(Device, "pd-0001").config_rev == 40


def test_a_database_url_is_shown_without_its_password() -> None:
    shown = shown_url("postgresql://pendant:s3cret-Pa55@db.example:5432/pendant")
    assert "s3cret-Pa55" not in shown and shown == "postgresql://pendant:***@db.example:5432/pendant"
    assert shown_url("sqlite:////var/lib/pendant/pendant.db") == "sqlite:////var/lib/pendant/pendant.db"
