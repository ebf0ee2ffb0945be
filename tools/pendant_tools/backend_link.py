"""What the bench needs from the backend, in one place: send a command to a pendant, find its test alarm,
acknowledge and resolve it as an operator would, and store the signed bench report with its record.

Commands go through pendant_backend.commands (recorded with who asked, audited, and queued for the running
backend service to publish, as its own alarm acks are), so the path tested is the real one: backend ->
broker -> pendant, and the pendant's answer is kept with the command.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pendant_backend import commands
from pendant_backend.alarms import acknowledge_alarm, resolve_alarm
from pendant_backend.models import Alarm
from pendant_backend.models.base import as_utc
from pendant_backend.queries import list_alarms
from pendant_backend.registry import store_bench_report
from pendant_backend.settings import Settings


def send_command(engine: Engine, device_id: str, cmd: str, *, requested_by: str) -> str:
    """Queue `cmd` (test_alarm, vibrate, locate, ...) for the pendant, recorded as asked for by
    `requested_by`; return its correlation id."""
    return commands.send(engine, device_id=device_id, cmd=cmd, requested_by=requested_by).command_id


def wait_for_test_alarm(engine: Engine, device_id: str, *, since: datetime, timeout: float) -> Alarm | None:
    """The first test alarm of the pendant received after `since`, or None when none came in time."""
    deadline = time.monotonic() + timeout
    margin = timedelta(seconds=1)
    while True:
        for alarm in reversed(list_alarms(engine, device_id=device_id, limit=20)):
            received = as_utc(alarm.received_at)
            if alarm.test and received is not None and received >= since - margin:
                return alarm
        if time.monotonic() > deadline:
            return None
        time.sleep(0.3)


def acknowledge_and_resolve(engine: Engine, ref: str, operator: str) -> tuple[Alarm, Alarm]:
    """Acknowledge the test alarm as an operator, then resolve it as a test (so no test alarm is left
    open); the pendant is told both. Returns the alarm after each."""
    acknowledged = acknowledge_alarm(engine, ref=ref, operator=operator)
    resolved = resolve_alarm(engine, ref=ref, operator=operator, resolution="test", note="bench test")
    return acknowledged, resolved


def store_report(
    settings: Settings, engine: Engine, *, device_id: str, report: dict[str, Any], actor: str
) -> dict[str, Any]:
    """Keep the report with the device record, signed with the backend's key; return where and how."""
    row = store_bench_report(
        settings, engine, device_id=device_id, report=report, passed=bool(report["passed"]), actor=actor
    )
    return {"id": row.id, "device_id": device_id, "signature": row.signature, "algorithm": "HMAC-SHA256"}
