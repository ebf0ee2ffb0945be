"""Health classification as pure functions of a snapshot and a moment: every transition, by the clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from pendant_backend import health
from pendant_backend.health import BatterySample, Limits, Snapshot

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(offline_after_missed=3)
HB = 180  # heartbeat_s; grace is min(HB/2, 60) = 60 s


def seen(**changes: object) -> Snapshot:
    """A pendant that sent a heartbeat at T0 with everything fine."""
    base = Snapshot(
        last_seen_at=T0,
        online=True,
        heartbeat_s=HB,
        last_heartbeat_at=T0,
        batt=80,
        chg=False,
        rssi=-70,
        last_fix_at=T0,
        out=0,
        fw="0.1.0",
        expected_fw="0.1.0",
        config_rev=2,
        config_applied_rev=2,
        loan_state="issued",
        issued_at=T0,
        last_test_alarm_at=T0,
    )
    return dataclasses.replace(base, **changes)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("after_s", "expected"),
    [
        (0, "online"),
        (HB + 60, "online"),  # within the grace of one heartbeat
        (HB + 61, "late"),  # one heartbeat missed
        (3 * HB + 60, "late"),
        (3 * HB + 61, "offline"),  # three heartbeats missed
        (86400, "offline"),
    ],
)
def test_connectivity_follows_missed_heartbeats(after_s: float, expected: str) -> None:
    assert health.classify(seen(), at(after_s), LIMITS).connectivity == expected


def test_the_number_of_missed_heartbeats_for_offline_is_a_setting() -> None:
    assert health.classify(seen(), at(2 * HB + 61), Limits(offline_after_missed=2)).connectivity == "offline"
    assert health.classify(seen(), at(2 * HB + 61), Limits(offline_after_missed=3)).connectivity == "late"


def test_a_will_makes_it_offline_at_once_and_never_seen_is_its_own_state() -> None:
    assert health.classify(seen(online=False), at(1), LIMITS).connectivity == "offline"
    never = health.classify(Snapshot(), at(1), LIMITS)
    assert never.connectivity == "never_seen"
    # Nothing is flagged about a pendant that never reported anything.
    assert not any(
        getattr(never, flag) for flag in health.FLAGS if flag not in ("test_overdue", "renewal_due")
    )


def test_a_short_heartbeat_interval_has_a_short_grace() -> None:
    fast = seen(heartbeat_s=60)  # grace 30 s
    assert health.classify(fast, at(90), LIMITS).connectivity == "online"
    assert health.classify(fast, at(91), LIMITS).connectivity == "late"


@pytest.mark.parametrize(
    ("batt", "level"),
    [(None, "unknown"), (100, "ok"), (21, "ok"), (20, "low"), (6, "low"), (5, "critical"), (0, "critical")],
)
def test_battery_levels_at_the_configs_thresholds(batt: int | None, level: str) -> None:
    assert health.classify(seen(batt=batt), at(1), LIMITS).battery == level


def test_battery_thresholds_come_from_the_devices_config() -> None:
    assert health.classify(seen(batt=30, batt_low=35), at(1), LIMITS).battery == "low"


def samples(*points: tuple[float, int, bool]) -> list[BatterySample]:
    return [BatterySample(at=T0 + timedelta(hours=h), batt=b, chg=c) for h, b, c in points]


def test_hours_left_from_the_recent_discharge() -> None:
    # 2 % an hour, 60 % at the last reading: 30 hours left, less the hour since that reading.
    history = samples((0, 70, False), (2, 66, False), (5, 60, False))
    assert health.hours_left(history, T0 + timedelta(hours=6), LIMITS) == pytest.approx(29.0)


def test_hours_left_only_counts_readings_since_the_charger() -> None:
    history = samples((0, 10, False), (1, 90, True), (2, 100, False), (4, 96, False))
    assert health.hours_left(history, T0 + timedelta(hours=4), LIMITS) == pytest.approx(48.0)


@pytest.mark.parametrize(
    "history",
    [
        [],
        samples((0, 80, False)),  # one reading
        samples((0, 80, False), (0.2, 79, False)),  # too short a span
        samples((0, 80, False), (3, 80, False)),  # not falling
        samples((0, 80, False), (3, 70, True)),  # charging now
        samples((0, 80, False), (30, 40, False)),  # older than the window (24 h) but the last
    ],
)
def test_no_estimate_without_a_discharge_to_measure(history: list[BatterySample]) -> None:
    assert health.hours_left(history, T0 + timedelta(hours=30), LIMITS) is None


def test_charging_weak_signal_backlog() -> None:
    assert health.classify(seen(chg=True), at(1), LIMITS).charging
    assert health.classify(seen(rssi=-106), at(1), LIMITS).weak_signal
    assert not health.classify(seen(rssi=-105), at(1), LIMITS).weak_signal
    assert health.classify(seen(rssi=None), at(1), LIMITS).weak_signal  # no signal reading at all
    assert health.classify(seen(out=3), at(1), LIMITS).outbox_backlog
    assert not health.classify(seen(out=2), at(1), LIMITS).outbox_backlog


def test_gnss_goes_stale_after_the_limit() -> None:
    assert not health.classify(seen(), at(24 * 3600), LIMITS).gnss_stale
    assert health.classify(seen(), at(24 * 3600 + 1), LIMITS).gnss_stale
    assert health.classify(seen(last_fix_at=None), at(1), LIMITS).gnss_stale


def test_firmware_and_config_drift() -> None:
    assert health.classify(seen(fw="0.0.9"), at(1), LIMITS).firmware_drift
    assert not health.classify(seen(fw="0.0.9", expected_fw=None), at(1), LIMITS).firmware_drift
    assert health.classify(seen(config_applied_rev=1), at(1), LIMITS).config_drift
    assert health.classify(
        seen(config_error="rev 2: heartbeat_s: must be 60..86400"), at(1), LIMITS
    ).config_drift


def test_periodic_test_alarm_overdue_for_issued_pendants() -> None:
    month = 30 * 86400
    assert not health.classify(seen(), at(month), LIMITS).test_overdue
    assert health.classify(seen(), at(month + 1), LIMITS).test_overdue
    assert not health.classify(seen(loan_state="provisioned"), at(month + 1), LIMITS).test_overdue
    later_test = seen(last_test_alarm_at=at(month))
    assert not health.classify(later_test, at(month + 1), LIMITS).test_overdue


def test_loan_renewal_due_within_the_notice() -> None:
    due = T0 + timedelta(days=30)
    assert not health.classify(seen(renewal_due=due), due - timedelta(days=14, seconds=1), LIMITS).renewal_due
    assert health.classify(seen(renewal_due=due), due - timedelta(days=14), LIMITS).renewal_due


def test_changes_list_every_aspect_that_moved() -> None:
    before = health.classify(seen(), at(1), LIMITS).aspects()
    after = health.classify(seen(batt=4, chg=True), at(HB + 61), LIMITS).aspects()
    assert health.changes(before, after) == [
        ("connectivity", "online", "late"),
        ("battery", "ok", "critical"),
        ("charging", "no", "yes"),
    ]
    assert health.changes(after, after) == []


def test_the_first_classification_reports_only_what_is_notable() -> None:
    first = health.classify(seen(), at(1), LIMITS).aspects()
    assert health.changes(None, first) == [("connectivity", None, "online"), ("battery", None, "ok")]
    assert health.changes(None, health.classify(Snapshot(), at(1), LIMITS).aspects()) == []


def test_summary_counts_per_state() -> None:
    fleet = [
        health.classify(seen(), at(1), LIMITS).aspects(),
        health.classify(seen(batt=10), at(HB + 61), LIMITS).aspects(),
        health.classify(Snapshot(), at(1), LIMITS).aspects(),
    ]
    summary = health.summarize(fleet)
    assert summary["connectivity"] == {"online": 1, "late": 1, "offline": 0, "never_seen": 1}
    assert summary["battery"] == {"ok": 1, "low": 1, "critical": 0, "unknown": 1}
    assert summary["flags"]["charging"] == 0
