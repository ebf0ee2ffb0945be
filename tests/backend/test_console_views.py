"""The console's pure formatting and ordering rules (pendant_backend.console.views and .charts)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta

import pytest

from pendant_backend.console import charts, views
from pendant_backend.models import Alarm, AuditEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _alarm(pk: int, *, state: str = "received", minutes: int = 0, test: bool = False, **fields) -> Alarm:
    return Alarm(
        id=pk,
        device_id="pd-0001",
        alarm_id=f"1-{pk}",
        kind="panic",
        state=state,
        test=test,
        raised_at=T0 + timedelta(minutes=minutes),
        received_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def _event(seq: int, kind: str, *, actor: str = "system", **data) -> AuditEvent:
    return AuditEvent(
        seq=seq,
        at=T0 + timedelta(seconds=seq),
        kind=kind,
        actor=actor,
        alarm_pk=1,
        body=json.dumps({"data": data}),
        prev_hash="0" * 64,
        hash=f"{seq:064x}",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-3, "0 s"), (59.9, "59 s"), (61, "1 min 1 s"), (7500, "2 h 5 min"), (273_600, "3 d 4 h")],
)
def test_age_text(seconds: float | None, text: str) -> None:
    assert views.age_text(seconds) == text


def test_clock_text_is_utc_whatever_the_zone_of_the_moment() -> None:
    later = datetime(2026, 3, 1, 13, 0, 5, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert views.clock_text(later) == "2026-03-01 13:00:05 UTC"
    assert views.clock_text(None) == "-"


def test_location_summary_never_contains_the_position() -> None:
    fixed = _alarm(1, lat=52.373101, lon=4.892203, acc=8)
    assert views.location_kind(fixed) == "gnss"
    assert views.location_summary(fixed) == "GNSS fix ±8 m"
    assert "52.37" not in views.location_summary(fixed)
    cell_only = _alarm(2, cell={"mcc": 204, "mnc": 8, "lac": "0x2B5C", "cid": "0x1A2B", "rat": "LTE"})
    assert (views.location_kind(cell_only), views.location_summary(cell_only)) == (
        "cell",
        "Cell only (no fix)",
    )
    assert views.cell_text(cell_only.cell) == "LTE cell 204-8, area 0x2B5C, cell 0x1A2B"
    nothing = _alarm(3)
    assert (views.location_kind(nothing), views.location_summary(nothing)) == ("none", "No position")


@pytest.mark.parametrize(
    ("rssi", "bars"), [(None, 0), (-51, 4), (-75, 4), (-76, 3), (-95, 2), (-105, 1), (-106, 0)]
)
def test_signal_bars(rssi: int | None, bars: int) -> None:
    assert views.signal_bars(rssi) == bars


def test_queue_is_open_alarms_oldest_first_then_resolved_newest_first() -> None:
    alarms = [
        _alarm(1, state="resolved", minutes=0),
        _alarm(2, state="acknowledged", minutes=5),
        _alarm(3, minutes=1),
        _alarm(4, state="resolved", minutes=9),
        _alarm(5, minutes=3, test=True),
    ]
    open_, done = views.queue_order(alarms)
    assert [a.id for a in open_] == [3, 5, 2]
    assert [a.id for a in done] == [4, 1]


def test_only_a_real_unacknowledged_alarm_sounds() -> None:
    assert views.needs_alert(_alarm(1))
    assert not views.needs_alert(_alarm(2, test=True))
    assert not views.needs_alert(_alarm(3, state="acknowledged"))


def test_timeline_in_words_folds_runs_of_trail_points() -> None:
    events = [
        _event(1, "alarm_received"),
        _event(2, "alarm_location"),
        _event(3, "alarm_location"),
        _event(4, "alarm_location"),
        _event(5, "location_viewed", actor="dispatch", via="console"),
        _event(6, "alarm_escalated", level=2),
        _event(7, "alarm_resolved", actor="dispatch", resolution="false_alarm"),
    ]
    lines = views.timeline(events)
    assert [(line.kind, line.count) for line in lines] == [
        ("alarm_received", 1),
        ("alarm_location", 3),
        ("location_viewed", 1),
        ("alarm_escalated", 1),
        ("alarm_resolved", 1),
    ]
    assert lines[1].text == "3 new positions in the trail (the last 2026-03-01 12:00:04 UTC)"
    assert lines[2].text == "Location viewed (console)"
    assert lines[2].actor == "dispatch"
    assert lines[3].text == "Escalated (level 2): not acknowledged in time"
    assert lines[4].text == "Resolved as false_alarm"


def test_stacked_bar_is_an_svg_with_a_text_equivalent() -> None:
    svg = charts.stacked_bar([("online", 3, "c-online"), ("offline", 1, "c-offline")], title="Pendants")
    root = ElementTree.fromstring(svg)
    assert "online 3, offline 1" in ElementTree.tostring(root, encoding="unicode")
    widths = [float(rect.get("width")) for rect in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert widths[0] == pytest.approx(widths[1] * 3, rel=0.01)


def test_battery_signal_chart_draws_both_lines_and_breaks_at_unknown_values() -> None:
    samples = [
        charts.Sample(at=T0 + timedelta(minutes=10 * i), batt=90 - i, rssi=None if i == 2 else -70 - i)
        for i in range(5)
    ]
    svg = charts.battery_signal(samples, start=T0, end=T0 + timedelta(hours=1))
    root = ElementTree.fromstring(svg)
    paths = {p.get("class"): p.get("d") for p in root.iter("{http://www.w3.org/2000/svg}path")}
    assert paths["line-battery"].count("M") == 1 and paths["line-battery"].count("L") == 4
    # The unknown signal reading lifts the pen: two strokes.
    assert paths["line-signal"].count("M") == 2
    assert "5 heartbeats" in root.get("aria-label")
    assert "battery 90% to 86%" in root.get("aria-label")
