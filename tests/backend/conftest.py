"""Fixtures for the backend's database tests: a clock the test moves, ingest on that clock, and
example messages from docs/protocol-examples with fields changed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pendant_backend.db import session_scope
from pendant_backend.ingest import Ingest
from pendant_backend.models import Device
from pendant_backend.settings import Settings

from support import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """The time the code under test sees; the test moves it."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def example(name: str, **changes: Any) -> bytes:
    """An example message with fields replaced (None removes nothing: it sets null)."""
    data = {**json.loads((EXAMPLES / name).read_text()), **changes}
    return json.dumps(data, separators=(",", ":")).encode()


def alarm(alarm_id: str = "12-3", **changes: Any) -> bytes:
    return example("alarm.json", alarm_id=alarm_id, **changes)


def tele(**changes: Any) -> bytes:
    return example("tele.json", **changes)


def topic(device_id: str, leaf: str) -> str:
    return f"pendant/v1/{device_id}/{leaf}"


@pytest.fixture
def pendant_settings(pendant_data_dir: Path, db_url: str) -> Settings:
    """Here, the shared settings on both databases: every backend test with a broker runs on SQLite and
    on PostgreSQL (tests/conftest.py keeps SQLite for the other folders)."""
    return dataclasses.replace(Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port()), db_url=db_url)


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
