"""Sample messages and a movable clock for the backend's tests: example messages from
docs/protocol-examples with fields changed. Imported by name (`from backend_samples import alarm`):
conftest modules share one module name across folders, so helpers never live in them."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


# A heartbeat is named by its boot counter and uptime: each sample is a new one unless `up` is given.
_uptimes = itertools.count(3600, 180)


def tele(**changes: Any) -> bytes:
    return example("tele.json", **{"up": next(_uptimes), **changes})


def topic(device_id: str, leaf: str) -> str:
    return f"pendant/v1/{device_id}/{leaf}"
