"""Pure: reads the firmware's fixed console lines (docs/architecture.md, "Firmware log lines")."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"(\d+) ([A-Za-z0-9_.]+): (.*)")
_ALARM = re.compile(r"(raised|published) (\S+)")
_ACKED = re.compile(r"acked (\S+) after (\d+) ms")
_MEM = re.compile(r"peak (\d+) free (\d+)")
# Any sign that the firmware ran short of heap: a MemoryError (caught and logged, or a traceback's last
# line), the old firmware's `short of memory` retries and its memory reboot (`out of memory: rebooting`).
# A test fails on any of them (tests/firmware/firmware_runner.py, the virtual pendants' consoles).
MEMORY_TROUBLE = re.compile(r"short of memory|MemoryError|out of memory|memory allocation failed")


@dataclass(frozen=True)
class FirmwareEvent:
    """One fixed log line: kind is alarm_raised, alarm_published, alarm_acked or mem."""

    t: float  # host time.time() when the line was read
    ticks_ms: int
    kind: str
    alarm_id: str | None = None
    ms: int | None = None  # alarm_acked: time from raise to ack
    peak: int | None = None  # mem
    free: int | None = None  # mem

    def to_json(self) -> dict[str, object]:
        """As the control port reports it (empty fields left out)."""
        return {name: value for name, value in self.__dict__.items() if value is not None}


def parse_event(line: str, t: float = 0.0) -> FirmwareEvent | None:
    """The event a console line reports, or None for any other line."""
    match = _LINE.fullmatch(line.strip())
    if match is None:
        return None
    ticks, module, message = int(match.group(1)), match.group(2), match.group(3)
    if module == "alarm":
        if found := _ALARM.fullmatch(message):
            return FirmwareEvent(t, ticks, f"alarm_{found.group(1)}", alarm_id=found.group(2))
        if found := _ACKED.fullmatch(message):
            return FirmwareEvent(t, ticks, "alarm_acked", alarm_id=found.group(1), ms=int(found.group(2)))
    elif module == "mem" and (found := _MEM.fullmatch(message)):
        return FirmwareEvent(t, ticks, "mem", peak=int(found.group(1)), free=int(found.group(2)))
    return None


def memory_trouble(lines: Iterable[str]) -> list[str]:
    """The lines of a firmware console that say it ran short of heap (MEMORY_TROUBLE)."""
    return [line for line in lines if MEMORY_TROUBLE.search(line)]
