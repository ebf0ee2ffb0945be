"""Fleet health over the database: builds each pendant's snapshot, classifies it with the pure rules of
pendant_backend.health, and stores every change as a health event (and a webhook). Also the fleet summary.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from pendant_backend import health, notify
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, Device, HealthEvent, Heartbeat
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

MONITORED_LOAN_STATES = ("provisioned", "issued")
HOURS_LEFT_STEP = 0.5


def limits_for(settings: Settings) -> health.Limits:
    """The rule thresholds from the settings."""
    return health.Limits(offline_after_missed=settings.offline_after_missed)


def snapshot(
    session: Session, device: Device, *, now: datetime, settings: Settings, limits: health.Limits
) -> health.Snapshot:
    """What the rules need about `device`, read from the database."""
    config = device.config_doc or {}
    latest = session.exec(
        select(Heartbeat)
        .where(Heartbeat.device_id == device.device_id)
        .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
        .limit(1)
    ).first()
    history = []
    if latest is not None:
        since = now - timedelta(hours=limits.discharge_window_h)
        rows = session.exec(
            select(Heartbeat.received_at, Heartbeat.batt, Heartbeat.chg).where(
                Heartbeat.device_id == device.device_id,
                Heartbeat.received_at >= since,
                col(Heartbeat.batt).is_not(None),
            )
        )
        history = [health.BatterySample(at=_aware(at), batt=batt, chg=chg) for at, batt, chg in rows]
    return health.Snapshot(
        last_seen_at=_aware(device.last_seen_at),
        online=device.online,
        heartbeat_s=int(config.get("heartbeat_s", 180)),
        last_heartbeat_at=_aware(device.last_heartbeat_at),
        batt=latest.batt if latest else None,
        chg=latest.chg if latest else False,
        rssi=latest.rssi if latest else None,
        batt_low=int(config.get("batt_low", 20)),
        batt_critical=int(config.get("batt_critical", 5)),
        last_fix_at=_aware(device.last_fix_at),
        out=latest.out if latest else 0,
        fw=device.fw,
        expected_fw=device.firmware_version or settings.fleet_firmware or None,
        config_rev=device.config_rev,
        config_applied_rev=device.config_applied_rev,
        config_error=device.config_error,
        loan_state=device.loan_state,
        issued_at=_aware(device.issued_at),
        last_test_alarm_at=_aware(device.last_test_alarm_at),
        renewal_due=_aware(device.renewal_due),
        battery_history=history,
    )


def _aware(moment: datetime | None) -> datetime | None:
    from pendant_backend.models import as_utc

    return as_utc(moment)


def evaluate(
    engine: Engine, *, now: datetime, settings: Settings, device_ids: Iterable[str] | None = None
) -> list[HealthEvent]:
    """Classify the monitored pendants (all, or those named) at `now`; store and return the changes."""
    limits = limits_for(settings)
    with Session(engine) as session:
        query = select(Device.device_id).where(
            col(Device.loan_state).in_(MONITORED_LOAN_STATES), col(Device.revoked_at).is_(None)
        )
        if device_ids is not None:
            query = query.where(col(Device.device_id).in_(list(device_ids)))
        ids = list(session.exec(query))
    events: list[HealthEvent] = []
    for device_id in ids:
        events += _evaluate_one(engine, device_id, now=now, settings=settings, limits=limits)
    return events


def _evaluate_one(
    engine: Engine, device_id: str, *, now: datetime, settings: Settings, limits: health.Limits
) -> list[HealthEvent]:
    with session_scope(engine) as session:
        device = session.get(Device, device_id, with_for_update=True)
        if device is None:
            return []
        result = health.classify(
            snapshot(session, device, now=now, settings=settings, limits=limits), now, limits
        )
        aspects = result.aspects()
        previous = device.health or {}
        found = health.changes({k: v for k, v in previous.items() if k in aspects}, aspects)
        old_hours, new_hours = previous.get("hours_left"), result.as_dict()["hours_left"]
        hours_moved = (old_hours is None) != (new_hours is None) or (
            old_hours is not None and abs(old_hours - new_hours) >= HOURS_LEFT_STEP
        )
        if not found and not hours_moved and device.health is not None:
            return []
        device.health = {**aspects, "hours_left": new_hours}
        device.connectivity = result.connectivity
        events = []
        if found:
            device.health_changed_at = now
            for aspect, old, new in found:
                event = HealthEvent(device_id=device_id, at=now, aspect=aspect, old=old, new=new)
                session.add(event)
                events.append(event)
            notify.enqueue(
                session,
                event="health",
                now=now,
                device_id=device_id,
                body={
                    "device_id": device_id,
                    "case_ref": device.case_ref,
                    "at": now.isoformat(),
                    "changes": [{"aspect": a, "old": o, "new": n} for a, o, n in found],
                    "health": device.health,
                },
            )
            log.info("health of %s: %s", device_id, ", ".join(f"{a} {o or '-'} -> {n}" for a, o, n in found))
        session.add(device)
    return events


def fleet_summary(engine: Engine) -> dict[str, Any]:
    """Counts per state: connectivity, battery and flags of the monitored pendants, loan states of all,
    and open alarms."""
    with Session(engine) as session:
        devices = list(session.exec(select(Device)))
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
    monitored = [d for d in devices if d.loan_state in MONITORED_LOAN_STATES and d.revoked_at is None]
    summary: dict[str, Any] = health.summarize(
        d.health or {"connectivity": d.connectivity} for d in monitored
    )
    summary["devices"] = len(devices)
    summary["monitored"] = len(monitored)
    summary["loan"] = dict(Counter(d.loan_state for d in devices))
    summary["recall"] = sum(d.recall for d in devices)
    summary["alarms"] = {"open": open_alarms, "unacknowledged": unacknowledged}
    return summary


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
