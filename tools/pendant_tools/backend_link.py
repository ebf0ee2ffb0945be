"""What the bench needs from the backend, in one place: send a command to a pendant, find its test alarm,
acknowledge and resolve it as an operator would, and store the signed bench report with its record.

Commands go through the backend's outbound queue (published by the running backend service, as its own
alarm acks are), so the path tested is the real one: backend -> broker -> pendant.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pendant_backend import outbound, payloads
from pendant_backend.alarms import acknowledge_alarm, resolve_alarm
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, utc_now
from pendant_backend.models.base import as_utc
from pendant_backend.queries import list_alarms
from pendant_backend.registry import store_bench_report
from pendant_backend.settings import Settings


def send_command(engine: Engine, device_id: str, cmd: str) -> str:
    """Queue `cmd` (test_alarm, vibrate, locate, ...) for the pendant; return its correlation id."""
    command = payloads.Command(id=f"bench-{secrets.token_hex(4)}", cmd=cmd)
    with session_scope(engine) as session:
        outbound.enqueue(
            session,
            topic=payloads.topic_for(device_id, "cmd"),
            payload=payloads.encode_command(command),
            now=utc_now(),
        )
    return command.id


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
