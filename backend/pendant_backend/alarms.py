"""The alarm lifecycle after ingest: an operator acknowledges and resolves, unacknowledged alarms
escalate, and fixes that arrive while an alarm is open extend its location trail. Every change is an
audit event in the same transaction; the pendant hears of acks and resolutions on `alarm/ack`.

Test alarms (`test: true`) go through the same lifecycle but are never dispatched: they never escalate,
and their webhook says `"test": true`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, chain, lifecycle, notify, outbound, payloads
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, AlarmLocation, Device, as_utc, iso, utc_now

log = logging.getLogger(__name__)


class AlarmNotFound(BackendError):
    """No alarm has that reference."""


def parse_ref(ref: str) -> tuple[int | None, str | None, str | None, int]:
    """`17` -> (17, None, None, 0); `pd-0001/12-3` -> (None, 'pd-0001', '12-3', 0); `.../12-3#1` -> ..., 1."""
    if ref.isdigit():
        return int(ref), None, None, 0
    device_id, _, rest = ref.partition("/")
    alarm_id, _, occurrence = rest.partition("#")
    return None, device_id, alarm_id, int(occurrence) if occurrence.isdigit() else 0


def find_alarm(session: Session, ref: str) -> Alarm | None:
    """The alarm named by `ref`: its number, `<device>/<alarm_id>`, or `<device>/<alarm_id>#<n>`."""
    pk, device_id, alarm_id, occurrence = parse_ref(ref)
    if pk is not None:
        return session.get(Alarm, pk)
    return session.exec(
        select(Alarm).where(
            Alarm.device_id == device_id, Alarm.alarm_id == alarm_id, Alarm.occurrence == occurrence
        )
    ).first()


def _log_fields(alarm: Alarm) -> dict[str, str]:
    """The log line's fields for this alarm (`pendant_backend.logs`)."""
    return {"device_id": alarm.device_id, "alarm_id": alarm.ref}


def _get(session: Session, ref: str) -> Alarm:
    alarm = find_alarm(session, ref)
    if alarm is not None:
        # Lock the row (PostgreSQL) so that two operators, or an operator and an escalation, queue.
        session.refresh(alarm, with_for_update=True)
    if alarm is None:
        raise AlarmNotFound(f"no alarm {ref}: see `pendant alarms list`")
    return alarm


def webhook_body(alarm: Alarm, device: Device | None, **extra: Any) -> dict[str, Any]:
    """What dispatch receives about an alarm: who (the case), what, when and where, and which of the
    fields the pendant sent were set aside as invalid."""
    position = None
    if alarm.lat is not None:
        position = {"lat": alarm.lat, "lon": alarm.lon, "acc": alarm.acc, "loc_time": alarm.loc_time}
    return {
        "alarm": {
            "id": alarm.id,
            "ref": alarm.ref,
            "device_id": alarm.device_id,
            "case_ref": device.case_ref if device else None,
            "phone": device.phone if device else None,
            "kind": alarm.kind,
            "test": alarm.test,
            "state": alarm.state,
            "raised_at": iso(alarm.raised_at),
            "received_at": iso(alarm.received_at),
            "position": position,
            "cell": alarm.cell,
            "batt": alarm.batt,
            # Fields the pendant sent broken (`location_invalid`, ...): left out above, not to be trusted.
            "set_aside": alarm.set_aside,
            "escalations": alarm.escalations,
        },
        **extra,
    }


def _tell_pendant(session: Session, alarm: Alarm, now: datetime) -> None:
    ack = payloads.AlarmAck(alarm_id=alarm.alarm_id, state=alarm.state)
    outbound.enqueue(
        session,
        topic=payloads.topic_for(alarm.device_id, "alarm/ack"),
        payload=payloads.encode_alarm_ack(ack),
        now=now,
    )


def acknowledge_alarm(engine: Engine, *, ref: str, operator: str, now: datetime | None = None) -> Alarm:
    """An operator takes the alarm. Raises AlarmNotFound, or TransitionError if it is not `received`
    (already acknowledged: the message names who did). The pendant is told (`alarm/ack`, acknowledged)."""
    operator = lifecycle.check_operator(operator)
    now = now or utc_now()
    with session_scope(engine) as session:
        alarm = _get(session, ref)
        lifecycle.check_acknowledge(alarm.state, alarm.ref, alarm.acknowledged_by)
        alarm.state, alarm.acknowledged_at, alarm.acknowledged_by = "acknowledged", now, operator
        session.add(alarm)
        audit.append(
            session,
            kind="alarm_acknowledged",
            at=now,
            actor=operator,
            device_id=alarm.device_id,
            alarm_pk=alarm.id,
            data={"ref": alarm.ref},
        )
        _tell_pendant(session, alarm, now)
    log.info("alarm %s acknowledged by %s", alarm.ref, operator, extra=_log_fields(alarm))
    return alarm


def resolve_alarm(
    engine: Engine, *, ref: str, operator: str, resolution: str, note: str = "", now: datetime | None = None
) -> Alarm:
    """Close an acknowledged alarm with a class (incident, precautionary, false, test) and a note.
    The note is kept with the alarm; the audit event holds its digest."""
    operator = lifecycle.check_operator(operator)
    now = now or utc_now()
    with session_scope(engine) as session:
        alarm = _get(session, ref)
        lifecycle.check_resolve(alarm.state, alarm.ref, resolution, note)
        alarm.state, alarm.resolved_at, alarm.resolved_by = "resolved", now, operator
        alarm.resolution, alarm.note = resolution, note
        session.add(alarm)
        audit.append(
            session,
            kind="alarm_resolved",
            at=now,
            actor=operator,
            device_id=alarm.device_id,
            alarm_pk=alarm.id,
            data={"ref": alarm.ref, "resolution": resolution, "note": chain.digest(note)},
        )
        _tell_pendant(session, alarm, now)
    log.info("alarm %s resolved by %s as %s", alarm.ref, operator, resolution, extra=_log_fields(alarm))
    return alarm


def escalate_due(engine: Engine, *, now: datetime, after_s: int, max_count: int) -> list[Alarm]:
    """Escalate every alarm left unacknowledged for another `after_s` seconds: an audit event and the
    webhook again. Returns the alarms escalated."""
    escalated = []
    # Runs at every tick: only the columns the decision reads, of the alarms waiting long enough for a
    # first escalation at least (not a row object per unacknowledged alarm).
    query = select(Alarm.id, Alarm.received_at, Alarm.escalations).where(
        Alarm.state == "received",
        col(Alarm.test).is_(False),
        col(Alarm.received_at) <= now - timedelta(seconds=after_s),
    )
    if max_count:
        query = query.where(col(Alarm.escalations) < max_count)
    with Session(engine) as session:
        waiting = [
            pk
            for pk, received_at, escalations in session.exec(query)
            if lifecycle.escalation_due(
                state="received",
                test=False,
                received_s=as_utc(received_at).timestamp(),
                now_s=now.timestamp(),
                escalations=escalations,
                after_s=after_s,
                max_count=max_count,
            )
        ]
    for pk in waiting:
        with session_scope(engine) as session:
            alarm = session.get(Alarm, pk, with_for_update=True)
            # Checked again inside the write transaction: an operator may have acknowledged it meanwhile.
            if not lifecycle.escalation_due(
                state=alarm.state,
                test=alarm.test,
                received_s=alarm.received_at.timestamp(),
                now_s=now.timestamp(),
                escalations=alarm.escalations,
                after_s=after_s,
                max_count=max_count,
            ):
                continue
            alarm.escalations += 1
            alarm.last_escalated_at = now
            session.add(alarm)
            audit.append(
                session,
                kind="alarm_escalated",
                at=now,
                device_id=alarm.device_id,
                alarm_pk=alarm.id,
                data={"ref": alarm.ref, "level": alarm.escalations},
            )
            device = session.get(Device, alarm.device_id)
            notify.enqueue(
                session,
                event="escalation",
                now=now,
                device_id=alarm.device_id,
                body=webhook_body(
                    alarm,
                    device,
                    level=alarm.escalations,
                    unacknowledged_s=int(now.timestamp() - alarm.received_at.timestamp()),
                ),
            )
            escalated.append(alarm)
            log.warning(
                "alarm %s not acknowledged: escalation %d",
                alarm.ref,
                alarm.escalations,
                extra=_log_fields(alarm),
            )
    return escalated


def add_trail_point(
    session: Session, alarm: Alarm, *, at: datetime, loc: payloads.Location, source: str
) -> AlarmLocation:
    """Add a fix to the alarm's trail, with its audit event, in the caller's transaction."""
    point = AlarmLocation(
        alarm_pk=alarm.id,
        received_at=at,
        lat=loc.lat,
        lon=loc.lon,
        acc=loc.acc,
        loc_time=loc.tst,
        source=source,
    )
    session.add(point)
    session.flush()
    audit.append(
        session,
        kind="alarm_location",
        at=at,
        device_id=alarm.device_id,
        alarm_pk=alarm.id,
        data={"point": point.id, "content": chain.digest(audit.point_content(point))},
    )
    return point


def open_alarms(session: Session, device_id: str) -> list[Alarm]:
    """The device's alarms that are not resolved yet (their trails grow)."""
    return list(session.exec(select(Alarm).where(Alarm.device_id == device_id, Alarm.state != "resolved")))


def trail(engine: Engine, *, alarm_pk: int) -> list[AlarmLocation]:
    """The alarm's location trail, oldest first."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(AlarmLocation)
                .where(AlarmLocation.alarm_pk == alarm_pk)
                .order_by(col(AlarmLocation.received_at), col(AlarmLocation.id))
            )
        )
