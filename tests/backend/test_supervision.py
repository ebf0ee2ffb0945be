"""Supervision profiles as pure functions: the profile of an interval, the thresholds, and the interval
in force after a change (docs/operations.md, "Supervision profiles")."""

from __future__ import annotations

import pytest

from pendant_backend import supervision
from pendant_backend.supervision import SupervisionError


@pytest.mark.parametrize(
    ("heartbeat_s", "profile", "label"),
    [(180, "SP4", "SP4"), (1800, "SP3", "SP3"), (600, "custom", "custom 600s"), (60, "custom", "custom 60s")],
)
def test_the_profile_follows_the_heartbeat_interval(heartbeat_s: int, profile: str, label: str) -> None:
    assert supervision.profile_of(heartbeat_s) == profile
    assert supervision.label(heartbeat_s) == label


def test_thresholds_of_the_named_profiles() -> None:
    sp4, sp3 = supervision.supervision(180), supervision.supervision(1800)
    assert (sp4.late_after_s, sp4.offline_after_s) == (240, 600)
    assert (sp3.late_after_s, sp3.offline_after_s) == (1860, 5460)
    assert supervision.supervision(180, missed=2).offline_after_s == 420
    assert sp4.as_dict() == {
        "profile": "SP4",
        "heartbeat_s": 180,
        "interval_in_force": 180,
        "late_after_s": 240,
        "offline_after_s": 600,
        "pending": False,
    }


def test_a_profile_gives_its_interval_and_custom_takes_one_in_range() -> None:
    assert supervision.heartbeat_for("SP4") == 180 and supervision.heartbeat_for("SP3") == 1800
    assert supervision.heartbeat_for("SP3", 1800) == 1800
    assert supervision.heartbeat_for("custom", 60) == 60
    assert supervision.heartbeat_for("custom", 86400) == 86400


@pytest.mark.parametrize(
    ("profile", "heartbeat_s", "says"),
    [
        ("custom", None, "--heartbeat-s"),
        ("custom", 59, "out of range"),
        ("custom", 86401, "out of range"),
        ("SP4", 600, "use custom"),
        ("SP2", None, "SP3, SP4 or custom"),
    ],
)
def test_bad_profiles_and_intervals_are_refused_in_one_sentence(
    profile: str, heartbeat_s: int | None, says: str
) -> None:
    with pytest.raises(SupervisionError, match=says):
        supervision.heartbeat_for(profile, heartbeat_s)


def test_the_old_interval_holds_until_a_heartbeat_reports_the_new_revision() -> None:
    assert supervision.interval_in_force(180, None, None, 7) == 180  # never changed
    assert supervision.interval_in_force(180, 1800, 4, None) == 1800  # no heartbeat yet
    assert supervision.interval_in_force(180, 1800, 4, 3) == 1800  # still on rev 3
    assert supervision.interval_in_force(180, 1800, 4, 4) == 180
    assert supervision.interval_in_force(180, 1800, 4, 5) == 180  # a later revision keeps it
    pending = supervision.supervision(180, previous_s=1800, since_rev=4, beat_cfg=3)
    assert pending.pending and (pending.profile, pending.late_after_s) == ("SP4", 1860)


def test_a_change_over_an_unconfirmed_one_keeps_the_longer_interval() -> None:
    # Confirmed, or none before: the interval in force is the old one.
    assert supervision.previous_for_change(1800, None, None, None) == 1800
    assert supervision.previous_for_change(1800, 180, 4, 4) == 1800
    # 180 -> 1800 (rev 4) not yet confirmed, now -> 600: the pendant may run 180 or 1800.
    assert supervision.previous_for_change(1800, 180, 4, 3) == 1800
    # 1800 -> 180 (rev 4) not yet confirmed, now -> 600.
    assert supervision.previous_for_change(180, 1800, 4, 3) == 1800
