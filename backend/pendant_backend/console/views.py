"""Pure: what the console shows, from stored rows: ages, location kinds, signal bars, the fallback's
story, the audit timeline in words, the order of the queue. No I/O; tested directly."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pendant_backend.locations import location_kind
from pendant_backend.models import Alarm, AuditEvent, as_utc


def iso_text(moment: datetime | None) -> str:
    """ISO 8601 in UTC (for `data-` attributes the page's clock reads), '' for none."""
    return as_utc(moment).isoformat(timespec="seconds") if moment is not None else ""


def clock_text(moment: datetime | None) -> str:
    """`2026-12-04 10:42:13 UTC`, or `-`."""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def age_text(seconds: float | None) -> str:
    """`12 s`, `3 min 5 s`, `2 h 5 min`, `3 d 4 h`; `-` for None."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def location_summary(alarm: Alarm) -> str:
    """The kind of position an alarm came with, without the position itself (the queue shows this to
    everyone who may see the alarm; the position needs its own, audited, read). A fix that was set aside
    as invalid is said to be so, before what is left."""
    kind = location_kind(alarm)
    if kind == "gnss":
        text = f"GNSS fix ±{alarm.acc} m"
        return text + " (time of the fix invalid)" if alarm.location_time_invalid else text
    text = "Cell only (no fix)" if kind == "cell" else "No position"
    return f"Location invalid · {text}" if alarm.location_invalid else text


# What the console says of each field set aside (models.alarms.SET_ASIDE_FLAGS): what was left out, so
# that the dispatcher knows not to trust it. The badge is the flag's name in words.
SET_ASIDE_TEXT = {
    "location_invalid": "the position the pendant sent is not valid: left out, do not rely on it",
    "location_time_invalid": "the fix is kept, but the time it was taken is not valid: its age is unknown",
    "cell_invalid": "the cell the pendant sent is not valid: left out",
    "time_invalid": "the pendant's time of the press is not valid: the time of receipt stands in",
    "battery_invalid": "the battery level the pendant sent is not valid: left out",
    "kind_invalid": "what kind of alarm it is could not be read: handled as a real alarm",
    "test_flag_invalid": "whether it is a test could not be read: handled as a real alarm",
}


def set_aside_badges(alarm: Alarm) -> list[str]:
    """`location invalid`, `battery invalid`, ...: one per field of the alarm set aside, in order."""
    return [flag.replace("_", " ") for flag in alarm.set_aside]


def set_aside_lines(alarm: Alarm) -> list[str]:
    """One sentence per field set aside: `Location invalid: the position ... do not rely on it`."""
    return [f"{flag.replace('_', ' ').capitalize()}: {SET_ASIDE_TEXT[flag]}" for flag in alarm.set_aside]


def cell_text(cell: Mapping[str, Any] | None) -> str:
    """`LTE cell 204-08, area 1234, cell 56789`."""
    if not cell:
        return "-"
    rat = f"{cell.get('rat')} " if cell.get("rat") else ""
    return f"{rat}cell {cell.get('mcc')}-{cell.get('mnc')}, area {cell.get('lac')}, cell {cell.get('cid')}"


def signal_bars(rssi: int | None) -> int:
    """0 to 4 bars for a signal in dBm (-75 and better: 4; below -105, or unknown: 0)."""
    if rssi is None:
        return 0
    for bars, floor in ((4, -75), (3, -85), (2, -95), (1, -105)):
        if rssi >= floor:
            return bars
    return 0


def fallback_lines(report: Mapping[str, Any] | None) -> list[str]:
    """The SMS and call fallback in words, from the pendant's `fallback` report."""
    if not report:
        return []
    lines = []
    sent, failed = list(report.get("sms") or []), list(report.get("sms_failed") or [])
    if sent or failed:
        text = f"SMS sent to {', '.join(sent)}" if sent else "No SMS went out"
        if failed:
            text += f"; failed to {', '.join(failed)}"
        lines.append(text)
    calls = report.get("calls") or 0
    if calls:
        lines.append(f"{calls} call{'s' if calls != 1 else ''} placed")
        answered = report.get("answered")
        if answered:
            lines.append(f"Answered by {answered}, {age_text(report.get('call_s') or 0)} talked")
        else:
            lines.append("No call was answered")
    elif not sent and not failed:
        lines.append("No SMS and no call went out")
    rounds = report.get("rounds")
    if rounds:
        lines.append(f"{rounds} round{'s' if rounds != 1 else ''}")
    return lines


_EVENT_WORDS = {
    "alarm_received": "Alarm received and stored",
    "alarm_acknowledged": "Acknowledged",
    "alarm_resolved": "Resolved",
    "alarm_escalated": "Escalated",
    "alarm_location": "New position in the trail",
    "alarm_fallback": "The pendant reported its SMS and call fallback",
    "location_viewed": "Location viewed",
    "command_sent": "Command sent",
    "command_answered": "Command answered",
    "alarm_exported": "Case export made (signed)",
    "export_verified": "Case export verified",
}


@dataclass(frozen=True)
class TimelineEntry:
    """One line of an alarm's audit timeline."""

    at: datetime
    actor: str
    text: str
    kind: str
    # How many events of the same kind in a row this line stands for (trail points are folded).
    count: int = 1


def timeline(events: Iterable[AuditEvent]) -> list[TimelineEntry]:
    """An alarm's audit events in words, oldest first; runs of trail points are folded into one line."""
    entries: list[TimelineEntry] = []
    for event in events:
        try:
            data = json.loads(event.body).get("data", {})
        except ValueError:
            data = {}
        text = _EVENT_WORDS.get(event.kind, event.kind.replace("_", " ").capitalize())
        if event.kind == "alarm_resolved":
            text += f" as {data.get('resolution')}"
        elif event.kind == "alarm_escalated":
            text += f" (level {data.get('level')}): not acknowledged in time"
        elif event.kind in ("command_sent", "command_answered"):
            text += f": {data.get('cmd')}" + ("" if data.get("ok", True) else " (failed)")
        elif event.kind == "location_viewed":
            text += f" ({data.get('via', '?')})"
        if event.kind == "alarm_location" and entries and entries[-1].kind == "alarm_location":
            last = entries[-1]
            entries[-1] = TimelineEntry(
                at=last.at,
                actor=last.actor,
                text=f"{last.count + 1} new positions in the trail (the last {clock_text(event.at)})",
                kind=last.kind,
                count=last.count + 1,
            )
            continue
        entries.append(TimelineEntry(at=as_utc(event.at), actor=event.actor, text=text, kind=event.kind))
    return entries


def queue_order(alarms: Sequence[Alarm]) -> tuple[list[Alarm], list[Alarm]]:
    """(open alarms, oldest first; resolved alarms, newest first)."""
    open_ = sorted((a for a in alarms if a.state != "resolved"), key=lambda a: (as_utc(a.received_at), a.id))
    done = sorted(
        (a for a in alarms if a.state == "resolved"),
        key=lambda a: (as_utc(a.received_at), a.id),
        reverse=True,
    )
    return open_, done


def needs_alert(alarm: Alarm) -> bool:
    """A real alarm nobody has acknowledged: the console sounds and flashes until someone does."""
    return alarm.state == "received" and not alarm.test
