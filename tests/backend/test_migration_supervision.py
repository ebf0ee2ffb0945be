"""Migration 0008 (issue 12, supervision) on both databases: a device of before keeps its config's
interval in force, and the downgrade takes the columns away again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from pendant_backend import queries
from pendant_backend.db import alembic_config, current_revision, head_revision, make_engine
from pendant_backend.models import Device

BEFORE = "0007"
COLUMNS = {"heartbeat_prev_s", "heartbeat_since_rev"}


def empty_url(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database of the same kind as `db_url` with nothing in it yet."""
    if make_url(db_url).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / 'before' / 'pendant.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    database = f"{make_url(db_url).database}_before"
    cluster.admin(f"CREATE DATABASE {database}")
    return cluster.url(database)


def device_columns(engine) -> set[str]:  # noqa: ANN001
    with engine.connect() as connection:
        return {column["name"] for column in inspect(connection).get_columns("devices")}


def test_upgrade_keeps_the_config_interval_in_force_and_downgrade_removes_the_columns(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = make_engine(empty_url(db_url, tmp_path, request), migrate=False)
    try:
        command.upgrade(alembic_config(engine), BEFORE)
        assert not COLUMNS & device_columns(engine)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO devices (device_id, loan_state, recall, config_rev, connectivity, battery,"
                    " health_flags, config_doc) VALUES ('pd-0001', 'issued', false, 2, 'online', 'ok', 0,"
                    " :doc)"
                ),
                {"doc": '{"heartbeat_s": 1800}'},
            )
        command.upgrade(alembic_config(engine), "head")
        assert current_revision(engine) == head_revision() and device_columns(engine) >= COLUMNS
        with Session(engine) as session:
            device = session.get(Device, "pd-0001")
            assert (device.heartbeat_prev_s, device.heartbeat_since_rev) == (None, None)
            watch = queries.supervision_as_dict(device)
        assert (watch["profile"], watch["interval_in_force"], watch["pending"]) == ("SP3", 1800, False)
        command.downgrade(alembic_config(engine), BEFORE)
        assert not COLUMNS & device_columns(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM devices")).scalar() == 1
    finally:
        engine.dispose()
