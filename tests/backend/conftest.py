"""Fixtures for the backend's database tests: a clock the test moves, ingest on that clock, and
example messages from docs/protocol-examples with fields changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from backend_samples import T0, Clock

from pendant_backend.db import session_scope
from pendant_backend.ingest import Ingest
from pendant_backend.models import Device
from pendant_backend.settings import Settings

from support import free_port


@pytest.fixture
def pendant_settings(pendant_data_dir: Path, db_url: str) -> Settings:
    """Here, the shared settings on both databases: every backend test with a broker runs on SQLite and
    on PostgreSQL (tests/conftest.py keeps SQLite for the other folders)."""
    settings = Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())
    return dataclasses.replace(settings, db_url=db_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def devices(engine) -> list[str]:
    """pd-0001 and pd-0002 in the registry, issued for cases."""
    with session_scope(engine) as session:
        for number, device_id in enumerate(("pd-0001", "pd-0002"), start=1):
            session.add(
                Device(
                    device_id=device_id,
                    password_hash="x",
                    loan_state="issued",
                    case_ref=f"case-{number}",
                    provisioned_at=T0,
                    issued_at=T0,
                )
            )
    return ["pd-0001", "pd-0002"]


@pytest.fixture
def ingest(engine, clock: Clock, devices: list[str]) -> Ingest:
    return Ingest(engine, clock=clock)
