"""Fleet health over the database: builds pendants' snapshots in bulk, classifies them with the pure rules
of pendant_backend.health, and stores every change as a health event (and a webhook). Also the fleet
summary, from counts.

Nothing here reads the whole fleet per pass. Each device carries `health_due_at`, the moment its health
can next change with nothing new arriving (health.changes_at); a change to what the rules read makes it
RECHECK at once (models.devices). A pass (`sweep`) classifies the devices ingest says changed and those
due: an index range. `evaluate` classifies every monitored device, which the service does once at start
(the settings may have changed while it was down).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, or_, update
from sqlmodel import Session, col, func, select

from pendant_backend import health, notify, supervision
from pendant_backend.db import session_scope
from pendant_backend.models import LOAN_STATES, Alarm, Device, HealthEvent, Heartbeat, as_utc
from pendant_backend.models.devices import HEALTH_INPUTS, RECHECK
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

MONITORED_LOAN_STATES = ("provisioned", "issued")
HOURS_LEFT_STEP = health.HOURS_LEFT_STEP
# Devices per transaction: the write lock is held for the writes of one chunk only.
CHUNK = 500
# Battery readings of a device's discharge run that a pass reads at most (about: the first and the last
# are always read): the trend line's points.
HISTORY_POINTS = 96
# What a pass compares before it writes: a device whose inputs or stored health moved since it was read
# (ingest, another pass) is left for the next tick, which reads it again.
WATCHED = (*HEALTH_INPUTS, "health", "health_due_at", "connectivity", "battery", "health_flags")


def limits_for(settings: Settings) -> health.Limits:
    """The rule thresholds from the settings."""
    return health.Limits(offline_after_missed=settings.offline_after_missed)


def is_monitored(device: Device) -> bool:
    """Whether the rules watch this pendant: provisioned or issued, and not revoked."""
    return device.loan_state in MONITORED_LOAN_STATES and device.revoked_at is None


@dataclass(frozen=True)
class _Latest:
    batt: int | None
    chg: bool
    rssi: int | None
    out: int
    cfg: int


def snapshot(
    session: Session, device: Device, *, now: datetime, settings: Settings, limits: health.Limits
) -> health.Snapshot:
    """What the rules need about `device`, read from the database (`snapshots` reads many at once)."""
    return snapshots(session, [device], now=now, settings=settings, limits=limits)[device.device_id]


def snapshots(
    session: Session,
    devices: Sequence[Device],
    *,
    now: datetime,
    settings: Settings,
    limits: health.Limits,
) -> dict[str, health.Snapshot]:
    """The snapshots of `devices` by id, in two queries whatever their number: each one's latest heartbeat
    (the one received at its `last_heartbeat_at`) and the battery readings of the discharge window."""
    latest = _latest_heartbeats(session, devices)
    histories = _battery_histories(
        session, [d.device_id for d in devices], since=now - timedelta(hours=limits.discharge_window_h)
    )
    return {
        d.device_id: _snapshot_of(
            d,
            latest.get(d.device_id),
            histories.get(d.device_id, []) if d.device_id in latest else [],
            settings,
        )
        for d in devices
    }


def _latest_heartbeats(session: Session, devices: Sequence[Device]) -> dict[str, _Latest]:
    heard = [d for d in devices if d.last_heartbeat_at is not None]
    if not heard:
        return {}
    rows = session.exec(
        select(
            Heartbeat.device_id,
            Heartbeat.id,
            Heartbeat.batt,
            Heartbeat.chg,
            Heartbeat.rssi,
            Heartbeat.out,
            Heartbeat.cfg,
        )
        .join(
            Device,
            and_(
                col(Device.device_id) == col(Heartbeat.device_id),
                col(Device.last_heartbeat_at) == col(Heartbeat.received_at),
            ),
        )
        .where(col(Device.device_id).in_([d.device_id for d in heard]))
        .order_by(col(Heartbeat.id))
    )
    # The highest id wins a tie of receive times, as "newest first" would pick it.
    found = {device_id: _Latest(*values) for device_id, _, *values in rows}
    for device in heard:
        if device.device_id not in found:
            # Its last heartbeat has been purged (retention, erasure) or is not stored at that moment:
            # the newest there is, as one query for this device alone.
            newest = session.exec(
                select(Heartbeat.batt, Heartbeat.chg, Heartbeat.rssi, Heartbeat.out, Heartbeat.cfg)
                .where(Heartbeat.device_id == device.device_id)
                .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
                .limit(1)
            ).first()
            if newest is not None:
                found[device.device_id] = _Latest(*newest)
    return found


def _battery_histories(
    session: Session, device_ids: list[str], *, since: datetime
) -> dict[str, list[health.BatterySample]]:
    """Each device's current discharge run (health.discharge_run: its readings off the charger since it
    last charged, within the window), thinned in the database to at most about HISTORY_POINTS evenly
    spaced readings, the first and the last always among them. A pendant heard every few seconds holds
    thousands of readings a day; the trend line through an even thinning of them is the same line to
    well within the figure's step (tests/backend/test_monitor.py measures it)."""
    histories: dict[str, list[health.BatterySample]] = defaultdict(list)
    if not device_ids:
        return histories
    in_window = (
        col(Heartbeat.device_id).in_(device_ids),
        Heartbeat.received_at >= since,
        col(Heartbeat.batt).is_not(None),
    )
    charged = (
        select(Heartbeat.device_id, func.max(Heartbeat.received_at).label("at"))
        .where(*in_window, col(Heartbeat.chg).is_(True))
        .group_by(col(Heartbeat.device_id))
        .subquery()
    )
    order = (col(Heartbeat.received_at), col(Heartbeat.id))
    run = (
        select(
            Heartbeat.device_id,
            Heartbeat.received_at,
            Heartbeat.batt,
            Heartbeat.chg,
            func.row_number().over(partition_by=col(Heartbeat.device_id), order_by=order).label("rn"),
            func.count().over(partition_by=col(Heartbeat.device_id)).label("n"),
        )
        .outerjoin(charged, charged.c.device_id == col(Heartbeat.device_id))
        .where(*in_window, or_(charged.c.at.is_(None), col(Heartbeat.received_at) > charged.c.at))
        .subquery()
    )
    # Row rn of n is kept where rn * K crosses a multiple of n: about K rows, evenly spread; all of them
    # when n <= K.
    kept = or_(run.c.rn == 1, run.c.rn == run.c.n, (run.c.rn * HISTORY_POINTS) % run.c.n < HISTORY_POINTS)
    # Core rows, not ORM ones: this is most of what a pass reads, and the column type already makes the
    # times aware UTC.
    rows = session.connection().execute(
        select(run.c.device_id, run.c.received_at, run.c.batt, run.c.chg)
        .where(kept)
        .order_by(run.c.device_id, run.c.rn)
    )
    for device_id, at, batt, chg in rows:
        histories[device_id].append(health.BatterySample(at=at, batt=batt, chg=chg))
    return histories


def _snapshot_of(
    device: Device, latest: _Latest | None, history: list[health.BatterySample], settings: Settings
) -> health.Snapshot:
    config = device.config_doc or {}
    return health.Snapshot(
        last_seen_at=as_utc(device.last_seen_at),
        online=device.online,
        heartbeat_s=int(config.get("heartbeat_s", supervision.DEFAULT_S)),
        heartbeat_prev_s=device.heartbeat_prev_s,
        heartbeat_since_rev=device.heartbeat_since_rev,
        beat_cfg=latest.cfg if latest else None,
        last_heartbeat_at=as_utc(device.last_heartbeat_at),
        batt=latest.batt if latest else None,
        chg=latest.chg if latest else False,
        rssi=latest.rssi if latest else None,
        batt_low=int(config.get("batt_low", 20)),
        batt_critical=int(config.get("batt_critical", 5)),
        last_fix_at=as_utc(device.last_fix_at),
        out=latest.out if latest else 0,
        fw=device.fw,
        expected_fw=device.firmware_version or settings.fleet_firmware or None,
        config_rev=device.config_rev,
        config_applied_rev=device.config_applied_rev,
        config_error=device.config_error,
        loan_state=device.loan_state,
        issued_at=as_utc(device.issued_at),
        last_test_alarm_at=as_utc(device.last_test_alarm_at),
        renewal_due=as_utc(device.renewal_due),
        battery_history=history,
    )


@dataclass(frozen=True)
class _Verdict:
    """What one look at a device decided: the health to store, its changes, and when to look again."""

    stored: dict[str, Any] | None
    found: list[tuple[str, str | None, str]]
    due: datetime | None

    def row(self, device: Device, now: datetime) -> dict[str, Any]:
        stored = self.stored or {}
        return {
            "b_device_id": device.device_id,
            "b_health": self.stored,
            "b_connectivity": stored.get("connectivity", device.connectivity),
            "b_battery": stored.get("battery", "unknown"),
            "b_health_flags": health.flag_bits(stored),
            "b_health_changed_at": now if self.found else device.health_changed_at,
            "b_health_due_at": self.due,
        }


def _judge(
    device: Device, snap: health.Snapshot | None, *, now: datetime, limits: health.Limits
) -> _Verdict | None:
    """The verdict on one device, or None when nothing about it is to be written."""
    if snap is None:  # not monitored: its health stays as it was, and nothing is due
        if device.health_due_at is None:
            return None
        return _Verdict(device.health, [], None)
    result = health.classify(snap, now, limits)
    aspects = result.aspects()
    previous = device.health or {}
    found = health.changes({k: v for k, v in previous.items() if k in aspects}, aspects)
    old_hours, new_hours = previous.get("hours_left"), result.as_dict()["hours_left"]
    # The thresholds the rules hold it to are stored with its health (the API, the console and the CLI
    # show them); they change with its config and once it runs a new interval.
    watch = health.supervision_of(snap, limits).as_dict()
    renew = (
        bool(found)
        or health.hours_left_moved(old_hours, new_hours)
        or device.health is None
        or previous.get("supervision") != watch
    )
    stored = {**aspects, "hours_left": new_hours, "supervision": watch} if renew else device.health
    moments = [
        health.changes_at(snap, now, limits),
        health.hours_left_moves_at(result.hours_left, (stored or {}).get("hours_left"), now),
    ]
    due = min((m for m in moments if m is not None), default=None)
    verdict = _Verdict(stored, found, due)
    if not renew and as_utc(device.health_due_at) == due and _columns_match(device, stored):
        return None
    return verdict


def _columns_match(device: Device, stored: dict[str, Any] | None) -> bool:
    stored = stored or {}
    return (
        device.connectivity == stored.get("connectivity", device.connectivity)
        and device.battery == stored.get("battery", "unknown")
        and device.health_flags == health.flag_bits(stored)
    )


@dataclass
class Pass:
    """What one pass did: the changes it stored, how many devices it looked at, and the devices it left
    for the next tick (changed or locked by another writer while it looked)."""

    events: list[HealthEvent] = field(default_factory=list)
    looked_at: int = 0
    busy: set[str] = field(default_factory=set)


def evaluate(
    engine: Engine, *, now: datetime, settings: Settings, device_ids: Iterable[str] | None = None
) -> list[HealthEvent]:
    """Classify the monitored pendants (all, or those named) at `now`; store and return the changes."""
    if device_ids is None:
        with Session(engine) as session:
            ids = list(
                session.exec(
                    select(Device.device_id).where(
                        col(Device.loan_state).in_(MONITORED_LOAN_STATES), col(Device.revoked_at).is_(None)
                    )
                )
            )
    else:
        ids = list(device_ids)
    return _look_at(engine, ids, now=now, settings=settings).events


def due(engine: Engine, *, until: datetime) -> list[str]:
    """The devices whose health may have changed by `until` (RECHECK ones among them): an index range."""
    with Session(engine) as session:
        return list(session.exec(select(Device.device_id).where(col(Device.health_due_at) <= until)))


def sweep(
    engine: Engine,
    *,
    now: datetime,
    settings: Settings,
    changed: Iterable[str] = (),
    due_until: datetime | None = None,
) -> Pass:
    """One pass: classify the devices named in `changed`, those marked RECHECK, and, with `due_until`,
    those due by then; store the changes. Never the whole fleet."""
    ids = set(changed) | set(due(engine, until=due_until or RECHECK))
    return _look_at(engine, sorted(ids), now=now, settings=settings)


def _look_at(engine: Engine, device_ids: list[str], *, now: datetime, settings: Settings) -> Pass:
    limits = limits_for(settings)
    done = Pass()
    ordered = sorted(set(device_ids))
    for start in range(0, len(ordered), CHUNK):
        _look_at_chunk(
            engine, ordered[start : start + CHUNK], now=now, settings=settings, limits=limits, into=done
        )
    return done


def _look_at_chunk(
    engine: Engine,
    device_ids: list[str],
    *,
    now: datetime,
    settings: Settings,
    limits: health.Limits,
    into: Pass,
) -> None:
    # Read and classify outside the write lock; then, locked, write what is still current.
    with Session(engine) as session:
        devices = list(session.exec(select(Device).where(col(Device.device_id).in_(device_ids))))
        monitored = [d for d in devices if is_monitored(d)]
        snaps = snapshots(session, monitored, now=now, settings=settings, limits=limits)
    into.looked_at += len(devices)
    verdicts = {}
    for device in devices:
        verdict = _judge(device, snaps.get(device.device_id), now=now, limits=limits)
        if verdict is not None:
            verdicts[device.device_id] = (device, verdict)
    if not verdicts:
        return
    watched = [getattr(Device, name) for name in WATCHED]
    with session_scope(engine) as session:
        current = {
            row[0]: tuple(row[1:])
            for row in session.exec(
                select(Device.device_id, *watched)
                .where(col(Device.device_id).in_(list(verdicts)))
                .with_for_update(skip_locked=True)
            )
        }
        rows, unwatched, announced = [], [], []
        for device_id in sorted(verdicts):
            device, verdict = verdicts[device_id]
            if current.get(device_id) != tuple(getattr(device, name) for name in WATCHED):
                into.busy.add(device_id)
            elif verdict.stored is None or not is_monitored(device):
                unwatched.append({"b_device_id": device_id})
            else:
                rows.append(verdict.row(device, now))
                if verdict.found:
                    announced.append((device, verdict))
        table = Device.__table__
        by_id = table.c.device_id == bindparam("b_device_id")
        if rows:
            session.connection().execute(
                update(table)
                .where(by_id)
                .values(
                    health=bindparam("b_health"),
                    connectivity=bindparam("b_connectivity"),
                    battery=bindparam("b_battery"),
                    health_flags=bindparam("b_health_flags"),
                    health_changed_at=bindparam("b_health_changed_at"),
                    health_due_at=bindparam("b_health_due_at"),
                ),
                rows,
            )
        if unwatched:
            # Not monitored: its health stays as it was, and nothing is due until it is watched again.
            session.connection().execute(update(table).where(by_id).values(health_due_at=None), unwatched)
        for device, verdict in announced:
            into.events += _announce(session, device, verdict, now=now)


def _announce(session: Session, device: Device, verdict: _Verdict, *, now: datetime) -> list[HealthEvent]:
    """The health events of one device's changes and their webhook, in the pass's transaction."""
    events = [
        HealthEvent(device_id=device.device_id, at=now, aspect=aspect, old=old, new=new)
        for aspect, old, new in verdict.found
    ]
    session.add_all(events)
    notify.enqueue(
        session,
        event="health",
        now=now,
        device_id=device.device_id,
        body={
            "device_id": device.device_id,
            "case_ref": device.case_ref,
            "at": now.isoformat(),
            "changes": [{"aspect": a, "old": o, "new": n} for a, o, n in verdict.found],
            "health": verdict.stored,
        },
    )
    log.info(
        "health of %s: %s",
        device.device_id,
        ", ".join(f"{a} {o or '-'} -> {n}" for a, o, n in verdict.found),
        extra={"device_id": device.device_id},
    )
    return events


def fleet_summary(engine: Engine) -> dict[str, Any]:
    """Counts per state: connectivity, battery and flags of the monitored pendants, loan states of all,
    and open alarms. Counts from the database (one GROUP BY over an index), never the rows."""
    monitored = and_(col(Device.loan_state).in_(MONITORED_LOAN_STATES), col(Device.revoked_at).is_(None))
    with Session(engine) as session:
        groups = list(
            session.exec(
                select(
                    Device.loan_state,
                    monitored,
                    Device.connectivity,
                    Device.battery,
                    Device.health_flags,
                    func.count(),
                    func.sum(case((col(Device.recall), 1), else_=0)),
                ).group_by(
                    Device.loan_state, monitored, Device.connectivity, Device.battery, Device.health_flags
                )
            )
        )
        open_alarms = session.exec(
            select(func.count())
            .select_from(Alarm)
            .where(Alarm.state != "resolved", col(Alarm.test).is_(False))
        ).one()
        unacknowledged = session.exec(
            select(func.count())
            .select_from(Alarm)
            .where(Alarm.state == "received", col(Alarm.test).is_(False))
        ).one()
    watched = [(c, b, bits, n) for _, is_watched, c, b, bits, n, _ in groups if is_watched]
    summary: dict[str, Any] = health.summarize_groups(watched)
    loan: dict[str, int] = {}
    for loan_state, _, _, _, _, count, _ in groups:
        loan[loan_state] = loan.get(loan_state, 0) + count
    summary["devices"] = sum(count for *_, count, _ in groups)
    summary["monitored"] = sum(count for *_, count in watched)
    summary["loan"] = {state: loan[state] for state in sorted(loan, key=_loan_order)}
    summary["recall"] = sum(int(recalled or 0) for *_, recalled in groups)
    summary["alarms"] = {"open": open_alarms, "unacknowledged": unacknowledged}
    return summary


def _loan_order(state: str) -> tuple[int, str]:
    return (LOAN_STATES.index(state) if state in LOAN_STATES else len(LOAN_STATES), state)


def health_events(
    engine: Engine, *, device_id: str | None = None, since: datetime | None = None, limit: int = 100
) -> list[HealthEvent]:
    """Health changes, newest first."""
    with Session(engine) as session:
        query = select(HealthEvent)
        if device_id is not None:
            query = query.where(HealthEvent.device_id == device_id)
        if since is not None:
            query = query.where(HealthEvent.at >= since)
        return list(
            session.exec(query.order_by(col(HealthEvent.at).desc(), col(HealthEvent.id).desc()).limit(limit))
        )
