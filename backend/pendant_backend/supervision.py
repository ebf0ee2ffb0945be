"""Pure: supervision profiles, the heartbeat interval in force, and the late and offline thresholds.

EN 50136-1 names the time within which an alarm transmission system must report a failed path to the
receiving centre (its reporting time): SP3 30 minutes, SP4 3 minutes. A pendant's profile is the
`heartbeat_s` of its config: 180 is SP4, 1800 is SP3, anything else (60..86400) is `custom`, so the
pendant protocol knows nothing of profiles. A pendant is late once one heartbeat plus GRACE_S has passed
in silence, and offline once `missed` heartbeats (3 by default) plus GRACE_S have.

A new interval takes effect from the pendant's next heartbeat, not when it is published: the pendant
sends that heartbeat on the timer it set with the old interval. The backend keeps the interval before
the change (`previous_s`) and the config revision that brought the new one (`since_rev`), and applies the
new interval once a heartbeat reports that revision or a later one (`tele.cfg`). Docs: docs/operations.md
("Supervision profiles").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pendant_backend import BackendError

SP4, SP3, CUSTOM = "SP4", "SP3", "custom"
# The named profiles and their heartbeat intervals, in seconds.
INTERVALS = {SP4: 180, SP3: 1800}
PROFILES = (SP4, SP3, CUSTOM)
# The range of `heartbeat_s` (docs/protocol.md, `config`).
MIN_S, MAX_S = 60, 86400
# The pendant's default when it has no config yet.
DEFAULT_S = INTERVALS[SP4]
# Slack for network and modem delays on top of every threshold.
GRACE_S = 60
OFFLINE_AFTER_MISSED = 3


class SupervisionError(BackendError):
    """A profile or interval that cannot be used; the message says which values are allowed."""


def profile_of(heartbeat_s: int) -> str:
    """The profile a heartbeat interval belongs to: SP4, SP3 or custom."""
    for name, interval in INTERVALS.items():
        if heartbeat_s == interval:
            return name
    return CUSTOM


def heartbeat_for(profile: str, heartbeat_s: int | None = None) -> int:
    """The `heartbeat_s` of a profile; `custom` needs `heartbeat_s` (MIN_S..MAX_S), the named profiles
    take none other than their own."""
    if profile not in PROFILES:
        raise SupervisionError(f"there is no supervision profile {profile!r}: use SP3, SP4 or custom")
    if profile != CUSTOM:
        if heartbeat_s is not None and heartbeat_s != INTERVALS[profile]:
            raise SupervisionError(
                f"{profile} is a heartbeat every {INTERVALS[profile]} s; for {heartbeat_s} s use custom"
            )
        return INTERVALS[profile]
    if heartbeat_s is None:
        raise SupervisionError("custom needs its interval: give --heartbeat-s N (60 to 86400 seconds)")
    if not MIN_S <= heartbeat_s <= MAX_S:
        raise SupervisionError(f"a heartbeat every {heartbeat_s} s is out of range: give 60 to 86400 seconds")
    return heartbeat_s


def label(heartbeat_s: int) -> str:
    """Short text for tables: `SP4`, `SP3`, or `custom 600s`."""
    name = profile_of(heartbeat_s)
    return name if name != CUSTOM else f"custom {heartbeat_s}s"


def late_after_s(interval_s: int) -> int:
    """Silence after which a pendant heard every `interval_s` is late."""
    return interval_s + GRACE_S


def offline_after_s(interval_s: int, missed: int = OFFLINE_AFTER_MISSED) -> int:
    """Silence after which it is offline: `missed` heartbeats and the grace."""
    return missed * interval_s + GRACE_S


def interval_in_force(
    heartbeat_s: int, previous_s: int | None, since_rev: int | None, beat_cfg: int | None
) -> int:
    """The interval the rules hold the pendant to: `heartbeat_s` (its config's), or `previous_s` until
    a heartbeat shows it runs config revision `since_rev` or later (`beat_cfg`: its last heartbeat's)."""
    if previous_s is None or since_rev is None:
        return heartbeat_s
    if beat_cfg is not None and beat_cfg >= since_rev:
        return heartbeat_s
    return previous_s


def previous_for_change(
    old_s: int, previous_s: int | None, since_rev: int | None, beat_cfg: int | None
) -> int:
    """What `previous_s` becomes when a new interval is published over `old_s`: the interval in force;
    with a change before it still unconfirmed, the longer of the two the pendant may be running, so
    that a pendant on either is never flagged early."""
    in_force = interval_in_force(old_s, previous_s, since_rev, beat_cfg)
    return in_force if in_force == old_s else max(in_force, old_s)


@dataclass(frozen=True)
class Supervision:
    """A pendant's supervision: its profile (of its config), and the interval and thresholds in force."""

    profile: str
    heartbeat_s: int
    interval_in_force: int
    late_after_s: int
    offline_after_s: int

    @property
    def pending(self) -> bool:
        """True while the pendant is still held to its interval before a change."""
        return self.interval_in_force != self.heartbeat_s

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with `pending`."""
        return {**asdict(self), "pending": self.pending}


def supervision(
    heartbeat_s: int,
    *,
    previous_s: int | None = None,
    since_rev: int | None = None,
    beat_cfg: int | None = None,
    missed: int = OFFLINE_AFTER_MISSED,
) -> Supervision:
    """The profile of `heartbeat_s`, and the thresholds of the interval in force."""
    interval = interval_in_force(heartbeat_s, previous_s, since_rev, beat_cfg)
    return Supervision(
        profile=profile_of(heartbeat_s),
        heartbeat_s=heartbeat_s,
        interval_in_force=interval,
        late_after_s=late_after_s(interval),
        offline_after_s=offline_after_s(interval, missed),
    )
