"""Pure: a pendant's health from what it last reported, at a given moment. No I/O, no clock of its own.

`classify(snapshot, now, limits)` returns a `Health`; `changes(old, new)` lists what changed, each of
which the monitor stores as a health event. `changes_at(snapshot, now, limits)` is the first moment the
classification can change while nothing new arrives (a heartbeat falls late, a fix goes stale): the monitor
looks at a pendant again then, or when something about it changes, and never sweeps the whole fleet.
Every rule is in this file and documented in docs/operations.md ("Fleet health").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from pendant_backend import supervision

CONNECTIVITY = ("online", "late", "offline", "never_seen")
BATTERY = ("ok", "low", "critical", "unknown")
# The yes/no aspects, in the order the CLI shows them.
FLAGS = (
    "charging",
    "weak_signal",
    "gnss_stale",
    "outbox_backlog",
    "firmware_drift",
    "config_drift",
    "test_overdue",
    "renewal_due",
)
# The flags a heartbeat's own readings decide (charge, signal, fix, outbox); the others (drifts, a test
# alarm overdue, a renewal due) a heartbeat with the same firmware and config cannot change.
HEARTBEAT_FLAGS = ("charging", "weak_signal", "gnss_stale", "outbox_backlog")


# The stored `hours_left` follows the estimate in steps of this many hours (it falls an hour an hour).
HOURS_LEFT_STEP = 0.5
# A rule that changes once a duration exceeds its limit changes this long after the limit.
JUST_AFTER = timedelta(microseconds=1)


@dataclass(frozen=True)
class Limits:
    """The thresholds of the rules (from Settings and the device's config)."""

    offline_after_missed: int = supervision.OFFLINE_AFTER_MISSED
    weak_rssi_dbm: int = -105
    gnss_stale_h: float = 24
    outbox_backlog: int = 3
    test_alarm_every_days: int = 30
    renewal_notice_days: int = 14
    discharge_window_h: float = 24
    min_discharge_span_h: float = 0.5


@dataclass(frozen=True)
class BatterySample:
    """One heartbeat's battery reading."""

    at: datetime
    batt: int
    chg: bool


@dataclass(frozen=True)
class Snapshot:
    """What the backend knows about one pendant, as the rules need it."""

    last_seen_at: datetime | None = None
    online: bool | None = None
    heartbeat_s: int = supervision.DEFAULT_S
    # The interval before the last change of `heartbeat_s`, and the config revision that made it: the
    # old interval holds until a heartbeat reports that revision (`beat_cfg`, the last heartbeat's cfg).
    heartbeat_prev_s: int | None = None
    heartbeat_since_rev: int | None = None
    beat_cfg: int | None = None
    last_heartbeat_at: datetime | None = None
    batt: int | None = None
    chg: bool = False
    rssi: int | None = None
    batt_low: int = 20
    batt_critical: int = 5
    last_fix_at: datetime | None = None
    out: int = 0
    fw: str | None = None
    expected_fw: str | None = None
    config_rev: int = 0
    config_applied_rev: int | None = None
    config_error: str | None = None
    loan_state: str = "provisioned"
    issued_at: datetime | None = None
    last_test_alarm_at: datetime | None = None
    renewal_due: datetime | None = None
    battery_history: Sequence[BatterySample] = ()


@dataclass(frozen=True)
class Health:
    """A pendant's health at one moment."""

    connectivity: str
    battery: str
    hours_left: float | None
    charging: bool
    weak_signal: bool
    gnss_stale: bool
    outbox_backlog: bool
    firmware_drift: bool
    config_drift: bool
    test_overdue: bool
    renewal_due: bool

    def aspects(self) -> dict[str, str]:
        """Every aspect whose change is an event, as text (`hours_left` is a figure, not an aspect)."""
        data = {"connectivity": self.connectivity, "battery": self.battery}
        data.update({flag: "yes" if getattr(self, flag) else "no" for flag in FLAGS})
        return data

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        data = asdict(self)
        if self.hours_left is not None:
            data["hours_left"] = round(self.hours_left, 1)
        return data


def supervision_of(s: Snapshot, limits: Limits = Limits()) -> supervision.Supervision:
    """The pendant's supervision profile and the late and offline thresholds of the interval in force."""
    return supervision.supervision(
        s.heartbeat_s,
        previous_s=s.heartbeat_prev_s,
        since_rev=s.heartbeat_since_rev,
        beat_cfg=s.beat_cfg,
        missed=limits.offline_after_missed,
    )


def connectivity(s: Snapshot, now: datetime, limits: Limits) -> str:
    """never_seen: nothing ever arrived. offline: its will arrived (a stale will is ignored by ingest),
    or silent past the offline threshold of its supervision (`offline_after_missed` heartbeats and the
    grace). late: silent past one heartbeat and the grace. online otherwise."""
    if s.last_seen_at is None:
        return "never_seen"
    if s.online is False:
        return "offline"
    silent_s = (now - s.last_seen_at).total_seconds()
    watch = supervision_of(s, limits)
    if silent_s > watch.offline_after_s:
        return "offline"
    if silent_s > watch.late_after_s:
        return "late"
    return "online"


def battery_level(s: Snapshot) -> str:
    """critical / low at the thresholds of the device's config; unknown without a reading."""
    if s.batt is None:
        return "unknown"
    if s.batt <= s.batt_critical:
        return "critical"
    if s.batt <= s.batt_low:
        return "low"
    return "ok"


def discharge_run(history: Iterable[BatterySample], now: datetime, limits: Limits) -> list[BatterySample]:
    """The readings since the pendant last left the charger, within the window, oldest first; empty while
    it charges."""
    samples = sorted(history, key=lambda sample: sample.at)
    if not samples or samples[-1].chg:
        return []
    window_start = now - timedelta(hours=limits.discharge_window_h)
    run: list[BatterySample] = []
    for sample in reversed(samples):
        if sample.chg or sample.at < window_start:
            break
        run.append(sample)
    run.reverse()
    return run


def hours_left(history: Iterable[BatterySample], now: datetime, limits: Limits) -> float | None:
    """Hours until empty, from the discharge since the pendant last left the charger (within the window).

    A least-squares line through (time, percent) of the readings off the charger; None while it charges,
    with fewer than two readings, over less than `min_discharge_span_h`, or when the level does not fall.
    """
    run = discharge_run(history, now, limits)
    if len(run) < 2:
        return None
    t0 = run[0].at
    xs = [(sample.at - t0).total_seconds() / 3600 for sample in run]
    ys = [float(sample.batt) for sample in run]
    if xs[-1] - xs[0] < limits.min_discharge_span_h:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    if slope >= 0:
        return None
    level_now = mean_y + slope * (xs[-1] - mean_x)
    elapsed_since_last = (now - run[-1].at).total_seconds() / 3600
    return max(0.0, level_now / -slope - elapsed_since_last)


def reading_flags(chg: bool, rssi: int | None, out: int, limits: Limits) -> dict[str, bool]:
    """The flags a heartbeat's own readings raise, for a pendant heard (gnss_stale, the fourth of
    HEARTBEAT_FLAGS, follows from the time of its last fix)."""
    return {
        "charging": chg,
        "weak_signal": rssi is None or rssi < limits.weak_rssi_dbm,
        "outbox_backlog": out >= limits.outbox_backlog,
    }


def classify(s: Snapshot, now: datetime, limits: Limits = Limits()) -> Health:
    """The pendant's health at `now`."""
    heard = s.last_heartbeat_at is not None
    fix_age_h = (now - s.last_fix_at).total_seconds() / 3600 if s.last_fix_at is not None else None
    test_due_from = s.last_test_alarm_at or s.issued_at
    readings = reading_flags(s.chg, s.rssi, s.out, limits)
    return Health(
        connectivity=connectivity(s, now, limits),
        battery=battery_level(s),
        hours_left=hours_left(s.battery_history, now, limits),
        charging=heard and readings["charging"],
        weak_signal=heard and readings["weak_signal"],
        gnss_stale=heard and (fix_age_h is None or fix_age_h > limits.gnss_stale_h),
        outbox_backlog=heard and readings["outbox_backlog"],
        firmware_drift=bool(s.fw and s.expected_fw and s.fw != s.expected_fw),
        config_drift=s.config_error is not None
        or (s.config_rev > 0 and heard and s.config_applied_rev != s.config_rev),
        test_overdue=s.loan_state == "issued"
        and test_due_from is not None
        and now - test_due_from > timedelta(days=limits.test_alarm_every_days),
        renewal_due=s.renewal_due is not None
        and now >= s.renewal_due - timedelta(days=limits.renewal_notice_days),
    )


def changes(old: Mapping[str, str] | None, new: Mapping[str, str]) -> list[tuple[str, str | None, str]]:
    """(aspect, old value, new value) for every aspect that differs; everything counts as a change the
    first time a device is classified, except flags that are `no` and a connectivity of never_seen."""
    found = []
    for aspect, value in new.items():
        before = (old or {}).get(aspect)
        if before == value:
            continue
        if before is None and value in ("no", "never_seen", "unknown"):
            continue
        found.append((aspect, before, value))
    return found


def changes_at(s: Snapshot, now: datetime, limits: Limits = Limits()) -> datetime | None:
    """The first moment after `now` at which `classify` may answer otherwise for the same snapshot: its
    heartbeat falls late or offline, its last fix goes stale, its test alarm falls overdue, its renewal
    falls due, or the oldest reading of its discharge leaves the window. None when the clock alone changes
    nothing (never seen, offline by its will with nothing else pending). Every moment here follows from a
    rule in this file: a new rule that reads `now` must add its moment."""
    moments: list[datetime] = []
    if s.last_seen_at is not None and s.online is not False:
        watch = supervision_of(s, limits)
        moments.append(s.last_seen_at + timedelta(seconds=watch.late_after_s) + JUST_AFTER)
        moments.append(s.last_seen_at + timedelta(seconds=watch.offline_after_s) + JUST_AFTER)
    if s.last_heartbeat_at is not None and s.last_fix_at is not None:
        moments.append(s.last_fix_at + timedelta(hours=limits.gnss_stale_h) + JUST_AFTER)
    test_due_from = s.last_test_alarm_at or s.issued_at
    if s.loan_state == "issued" and test_due_from is not None:
        moments.append(test_due_from + timedelta(days=limits.test_alarm_every_days) + JUST_AFTER)
    if s.renewal_due is not None:
        moments.append(s.renewal_due - timedelta(days=limits.renewal_notice_days))
    run = discharge_run(s.battery_history, now, limits)
    if len(run) >= 2:  # with one reading there is no estimate, with or without it
        moments.append(run[0].at + timedelta(hours=limits.discharge_window_h) + JUST_AFTER)
    later = [moment for moment in moments if moment > now]
    return min(later) if later else None


def hours_left_moved(stored: float | None, new: float | None) -> bool:
    """Whether the stored figure follows a new estimate (both rounded to 0.1 h): when the estimate appears
    or goes, or has moved by HOURS_LEFT_STEP. The figure is not an event, so small moves are not written."""
    if stored is None or new is None:
        return (stored is None) != (new is None)
    return abs(stored - new) >= HOURS_LEFT_STEP


def hours_left_moves_at(current: float | None, stored: float | None, now: datetime) -> datetime | None:
    """When an estimate of `current` hours at `now` (unrounded), falling an hour an hour with no new
    reading, will have moved far enough from `stored` for `hours_left_moved`; None if it never will."""
    if current is None or stored is None:
        return None
    # Rounded to 0.1 it reads `stored - step` once it is below `stored - step + 0.05`; one second more
    # keeps float rounding on the right side of that line.
    target = stored - HOURS_LEFT_STEP + 0.05
    if target <= 0:
        return None  # it stops at 0, nearer to `stored` than a step
    return now + timedelta(hours=max(current - target, 0.0), seconds=1)


def flag_bits(aspects: Mapping[str, str]) -> int:
    """The flags that are `yes` as one number, bit i for FLAGS[i] (so FLAGS only ever grows at its end):
    the column the fleet counts group by."""
    return sum(1 << bit for bit, flag in enumerate(FLAGS) if aspects.get(flag) == "yes")


def summarize_groups(groups: Iterable[tuple[str, str, int, int]]) -> dict[str, dict[str, int]]:
    """`summarize` from counts instead of pendants: (connectivity, battery, flag_bits, how many)."""
    summary = summarize(())
    for connectivity_state, battery, bits, count in groups:
        summary["connectivity"][connectivity_state] += count
        summary["battery"][battery] += count
        for bit, flag in enumerate(FLAGS):
            if bits & (1 << bit):
                summary["flags"][flag] += count
    return summary


def summarize(aspects: Iterable[Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """Counts per state of connectivity and battery, and how many pendants have each flag."""
    summary: dict[str, dict[str, int]] = {
        "connectivity": dict.fromkeys(CONNECTIVITY, 0),
        "battery": dict.fromkeys(BATTERY, 0),
        "flags": dict.fromkeys(FLAGS, 0),
    }
    for one in aspects:
        summary["connectivity"][one.get("connectivity", "never_seen")] += 1
        summary["battery"][one.get("battery", "unknown")] += 1
        for flag in FLAGS:
            summary["flags"][flag] += one.get(flag) == "yes"
    return summary
