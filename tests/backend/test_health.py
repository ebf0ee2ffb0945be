"""Health classification as pure functions of a snapshot and a moment: every transition, by the clock."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pendant_backend import health
from pendant_backend.health import BatterySample, Limits, Snapshot

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(offline_after_missed=3)
HB = 180  # heartbeat_s (SP4); the grace is 60 s


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


def test_the_grace_is_60_s_whatever_the_interval() -> None:
    fast = seen(heartbeat_s=60)
    assert health.classify(fast, at(120), LIMITS).connectivity == "online"
    assert health.classify(fast, at(121), LIMITS).connectivity == "late"
    assert health.classify(fast, at(241), LIMITS).connectivity == "offline"


@pytest.mark.parametrize(
    ("heartbeat_s", "after_s", "expected"),
    [
        (1800, 600, "online"),  # SP3: ten minutes of silence is nothing
        (1800, 1860, "online"),
        (1800, 1861, "late"),
        (1800, 5461, "offline"),
        (180, 239, "online"),  # SP4
        (180, 241, "late"),  # four minutes and a second
        (180, 600, "late"),
        (180, 601, "offline"),  # ten minutes and a second
    ],
)
def test_connectivity_follows_each_pendants_supervision_profile(
    heartbeat_s: int, after_s: float, expected: str
) -> None:
    assert health.classify(seen(heartbeat_s=heartbeat_s), at(after_s), LIMITS).connectivity == expected


def test_a_shorter_interval_holds_from_the_heartbeat_that_reports_its_revision() -> None:
    # SP3 -> SP4 in rev 3; the pendant's last heartbeat still ran rev 2, on the 30-minute timer.
    changed = seen(heartbeat_s=180, heartbeat_prev_s=1800, heartbeat_since_rev=3, beat_cfg=2, config_rev=3)
    assert health.supervision_of(changed, LIMITS).interval_in_force == 1800
    assert health.classify(changed, at(1200), LIMITS).connectivity == "online"
    assert health.changes_at(changed, at(0), LIMITS) == at(1860) + health.JUST_AFTER
    # Its next heartbeat reports rev 3: from then on it is held to 3 minutes.
    running = dataclasses.replace(changed, beat_cfg=3)
    watch = health.supervision_of(running, LIMITS)
    assert (watch.profile, watch.interval_in_force, watch.late_after_s, watch.offline_after_s) == (
        "SP4",
        180,
        240,
        600,
    )
    assert health.classify(running, at(241), LIMITS).connectivity == "late"
    assert health.changes_at(running, at(0), LIMITS) == at(240) + health.JUST_AFTER


def test_a_longer_interval_is_not_trusted_before_the_pendant_runs_it() -> None:
    changed = seen(heartbeat_s=1800, heartbeat_prev_s=180, heartbeat_since_rev=3, beat_cfg=2)
    assert health.classify(changed, at(241), LIMITS).connectivity == "late"
    assert health.classify(dataclasses.replace(changed, beat_cfg=3), at(241), LIMITS).connectivity == "online"


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


# ---- when the classification can next change by the clock alone ---------------------------------


def test_changes_at_is_the_next_threshold_of_each_rule() -> None:
    just = timedelta(microseconds=1)
    assert health.changes_at(seen(), T0, LIMITS) == at(HB + 60) + just  # late first
    assert health.changes_at(seen(), at(HB + 61), LIMITS) == at(3 * HB + 60) + just  # then offline
    # Offline by its will: the clock only brings the stale fix (a day), then the overdue test (a month).
    assert health.changes_at(seen(online=False), at(1), LIMITS) == at(24 * 3600) + just
    assert health.changes_at(seen(online=False), at(25 * 3600), LIMITS) == at(30 * 86400) + just
    renewal = T0 + timedelta(days=20)
    assert health.changes_at(seen(online=False, renewal_due=renewal), at(25 * 3600), LIMITS) == (
        renewal - timedelta(days=14)
    )
    # Never seen, in stock: nothing happens by the clock.
    assert health.changes_at(Snapshot(loan_state="provisioned"), at(1), LIMITS) is None


def test_changes_at_when_the_oldest_reading_of_a_discharge_leaves_the_window() -> None:
    history = samples((0, 70, False), (2, 66, False), (5, 60, False))
    quiet = seen(online=False, last_fix_at=None, loan_state="provisioned", battery_history=history)
    assert health.changes_at(quiet, T0 + timedelta(hours=6), LIMITS) == T0 + timedelta(
        hours=24, microseconds=1
    )


def random_snapshot(rng: random.Random) -> Snapshot:
    def maybe(hours: float) -> datetime | None:
        return None if rng.random() < 0.2 else T0 - timedelta(hours=rng.uniform(0, hours))

    readings = sorted(rng.uniform(-30, 0) for _ in range(rng.choice((0, 1, 3, 8))))
    level = rng.randint(20, 100)
    history = [
        BatterySample(
            at=T0 + timedelta(hours=h), batt=max(level - i * rng.randint(0, 3), 0), chg=rng.random() < 0.1
        )
        for i, h in enumerate(readings)
    ]
    return Snapshot(
        last_seen_at=maybe(3),
        online=rng.choice((True, False, None)),
        heartbeat_s=rng.choice((60, 91, 180, 600, 1800)),
        heartbeat_prev_s=rng.choice((None, 180, 1800)),
        heartbeat_since_rev=rng.choice((None, 3)),
        beat_cfg=rng.choice((None, 2, 3)),
        last_heartbeat_at=maybe(3),
        batt=rng.choice((None, 3, 15, 80)),
        last_fix_at=maybe(30),
        loan_state=rng.choice(("provisioned", "issued")),
        issued_at=maybe(24 * 40),
        last_test_alarm_at=maybe(24 * 40),
        renewal_due=None if rng.random() < 0.5 else T0 + timedelta(days=rng.uniform(-5, 20)),
        battery_history=history,
    )


def estimated_from(s: Snapshot, moment: datetime) -> list[BatterySample]:
    """The readings an estimate of hours left comes from (none below two: no estimate)."""
    run = health.discharge_run(s.battery_history, moment, LIMITS)
    return run if len(run) >= 2 else []


def test_nothing_changes_before_changes_at_for_any_snapshot() -> None:
    """For many random pendants: the classification (and the discharge it estimates from) is the same at
    every moment from `now` to just before `changes_at`; and it has changed there, or soon after, for
    the rules of missed heartbeats."""
    rng = random.Random(7)
    for _ in range(400):
        s = random_snapshot(rng)
        now = T0 + timedelta(seconds=rng.uniform(0, 3600))
        then = health.classify(s, now, LIMITS)
        due = health.changes_at(s, now, LIMITS)
        end = due or now + timedelta(days=60)
        span = (end - now).total_seconds()
        for fraction in [0, 0.5, 0.9, 0.999, *(rng.random() for _ in range(10))]:
            moment = now + timedelta(seconds=span * fraction)
            if moment >= end:
                continue
            assert health.classify(s, moment, LIMITS).aspects() == then.aspects(), (s, now, moment)
            assert estimated_from(s, moment) == estimated_from(s, now), (s, now, moment)
        if due is not None and then.connectivity in ("online", "late"):
            assert due > now
            later = health.classify(s, due, LIMITS)
            changed = later.aspects() != then.aspects() or estimated_from(s, due) != estimated_from(s, now)
            assert changed, (s, now, due)


def test_the_stored_hours_left_moves_in_half_hour_steps() -> None:
    assert health.hours_left_moved(None, 3.0) and health.hours_left_moved(3.0, None)
    assert not health.hours_left_moved(36.0, 35.6) and health.hours_left_moved(36.0, 35.5)
    # 36.02 h at T0, stored as 36.0: it reads 35.5 once below 35.55, 0.47 h later (and a second).
    moves = health.hours_left_moves_at(36.02, 36.0, T0)
    assert moves == T0 + timedelta(hours=36.02 - 35.55, seconds=1)
    falling = 36.02 - (moves - T0).total_seconds() / 3600
    assert health.hours_left_moved(36.0, round(falling, 1))
    assert not health.hours_left_moved(36.0, round(falling + 2 / 3600, 1))
    assert health.hours_left_moves_at(0.3, 0.3, T0) is None  # it stops at 0, never a step away
    assert health.hours_left_moves_at(None, 3.0, T0) is None


def test_counts_from_flag_bits_give_the_same_summary() -> None:
    rng = random.Random(3)
    fleet = [health.classify(random_snapshot(rng), T0, LIMITS).aspects() for _ in range(200)]
    groups = Counter((a["connectivity"], a["battery"], health.flag_bits(a)) for a in fleet)
    assert health.summarize_groups((*key, n) for key, n in groups.items()) == health.summarize(fleet)
    assert health.flag_bits({"charging": "yes", "renewal_due": "yes", "weak_signal": "no"}) == 1 | 1 << 7
