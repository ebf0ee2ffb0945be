"""The console's reads from the database (no positions here: those go through
pendant_backend.locations, which records each read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend.console import views
from pendant_backend.models import Alarm, AuditEvent, Command, Device, Heartbeat, as_utc
from pendant_backend.users import Person

RESOLVED_SHOWN = timedelta(hours=12)
RESOLVED_MAX = 20


@dataclass(frozen=True)
class QueueItem:
    """One alarm in the queue."""

    alarm: Alarm
    case_ref: str | None
    location: str
    alert: bool


@dataclass(frozen=True)
class Queue:
    """Open alarms (oldest first), then recently resolved ones (newest first)."""

    open: list[QueueItem]
    resolved: list[QueueItem]

    @property
    def unacknowledged(self) -> int:
        return sum(item.alert for item in self.open)

    @property
    def escalated(self) -> int:
        return sum(item.alert and item.alarm.escalations > 0 for item in self.open)

    @property
    def tests(self) -> int:
        return sum(item.alarm.test and item.alarm.state == "received" for item in self.open)


def _case_refs(session: Session, device_ids: set[str], person: Person) -> dict[str, str | None]:
    if not device_ids or not person.can("devices.case"):
        return {}
    rows = session.exec(
        select(Device.device_id, Device.case_ref).where(col(Device.device_id).in_(sorted(device_ids)))
    )
    return dict(rows.all())


def queue(engine: Engine, person: Person, *, now: datetime) -> Queue:
    """The alarm queue as this person may see it."""
    with Session(engine) as session:
        open_rows = list(session.exec(select(Alarm).where(Alarm.state != "resolved")))
        done_rows = list(
            session.exec(
                select(Alarm)
                .where(Alarm.state == "resolved", col(Alarm.resolved_at) >= now - RESOLVED_SHOWN)
                .order_by(col(Alarm.resolved_at).desc())
                .limit(RESOLVED_MAX)
            )
        )
        refs = _case_refs(session, {a.device_id for a in open_rows + done_rows}, person)
    open_alarms, done = views.queue_order(open_rows + done_rows)

    def item(alarm: Alarm) -> QueueItem:
        return QueueItem(
            alarm=alarm,
            case_ref=refs.get(alarm.device_id),
            location=views.location_summary(alarm),
            alert=views.needs_alert(alarm),
        )

    return Queue(open=[item(a) for a in open_alarms], resolved=[item(a) for a in done])


@dataclass(frozen=True)
class AlarmDetail:
    """Everything the alarm view shows except the position."""

    alarm: Alarm
    case_ref: str | None
    phone: str | None
    rssi: int | None
    rat: str | None
    signal_at: datetime | None
    location: str
    fallback: list[str]
    timeline: list[views.TimelineEntry]
    commands: list[Command]


def alarm_detail(engine: Engine, alarm_pk: int, person: Person) -> AlarmDetail | None:
    """One alarm for the alarm view, or None if there is no such alarm."""
    with Session(engine) as session:
        alarm = session.get(Alarm, alarm_pk)
        if alarm is None:
            return None
        device = session.get(Device, alarm.device_id)
        latest = session.exec(
            select(Heartbeat)
            .where(Heartbeat.device_id == alarm.device_id)
            .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
            .limit(1)
        ).first()
        events = list(
            session.exec(
                select(AuditEvent).where(AuditEvent.alarm_pk == alarm_pk).order_by(col(AuditEvent.seq))
            )
        )
        commands = list(
            session.exec(select(Command).where(Command.alarm_pk == alarm_pk).order_by(col(Command.id)))
        )
    shows_case = person.can("devices.case") and device is not None
    return AlarmDetail(
        alarm=alarm,
        case_ref=device.case_ref if shows_case else None,
        phone=device.phone if shows_case else None,
        rssi=latest.rssi if latest else None,
        rat=latest.rat if latest else None,
        signal_at=as_utc(latest.received_at) if latest else None,
        location=views.location_summary(alarm),
        fallback=views.fallback_lines(alarm.fallback),
        timeline=views.timeline(events),
        commands=commands,
    )
