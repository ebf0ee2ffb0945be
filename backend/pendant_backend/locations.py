"""Reading where a victim is: an alarm's position, its cell, its trail. Only a dispatcher or a
supervisor may, and every read is an audit event in the same transaction as the read (who, which
alarm, what, through which door: the console, the API or the CLI), so that the record of who looked
where cannot be separated from the looking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine
from sqlmodel import col, select

from pendant_backend import BackendError, audit, roles
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, AlarmLocation, Device, utc_now
from pendant_backend.users import Person

VIA = ("console", "api", "cli")

LocationKind = Literal["gnss", "cell", "none"]


def location_kind(alarm: Alarm) -> LocationKind:
    """What came with the alarm, without the position itself: `gnss` (a fix), `cell` (only its serving
    cell) or `none`. Everyone who may see the alarm may see this; it is not a location read."""
    if alarm.lat is not None:
        return "gnss"
    return "cell" if alarm.cell else "none"


class NotAllowed(BackendError):
    """The person's roles do not allow this."""


@dataclass(frozen=True)
class LocationView:
    """What a permitted person sees of one alarm's whereabouts."""

    alarm: Alarm
    # The alarm's own fix as it was sent: lat, lon, acc, loc_time, loc_src; None without a fix.
    position: dict[str, Any] | None
    # The serving cell, when the alarm came without a fix.
    cell: dict[str, Any] | None
    # Trail points, oldest first (only those after `after_point` when asked).
    trail: list[AlarmLocation]


def check_allowed(person: Person) -> None:
    """NotAllowed unless the person may see locations."""
    if not person.can("alarms.location"):
        raise NotAllowed(
            f"{person.username} may not see locations: that needs the role {roles.who_can('alarms.location')}"
        )


def read(
    engine: Engine, *, alarm_pk: int, person: Person, via: str, after_point: int | None = None
) -> LocationView:
    """The alarm's position, cell and trail for `person`, recorded as a `location_viewed` event.
    Raises NotAllowed, or KeyError for an alarm that does not exist."""
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}")
    check_allowed(person)
    now = utc_now()
    with session_scope(engine) as session:
        alarm = session.get(Alarm, alarm_pk)
        if alarm is None:
            raise KeyError(alarm_pk)
        query = select(AlarmLocation).where(AlarmLocation.alarm_pk == alarm_pk)
        if after_point is not None:
            query = query.where(col(AlarmLocation.id) > after_point)
        trail = list(session.exec(query.order_by(col(AlarmLocation.received_at), col(AlarmLocation.id))))
        position = None
        if alarm.lat is not None:
            position = {
                "lat": alarm.lat,
                "lon": alarm.lon,
                "acc": alarm.acc,
                "loc_time": alarm.loc_time,
                "loc_src": alarm.loc_src,
            }
        audit.append(
            session,
            kind="location_viewed",
            at=now,
            actor=person.username,
            device_id=alarm.device_id,
            alarm_pk=alarm.id,
            data={
                "via": via,
                "position": position is not None or alarm.cell is not None,
                "points": [p.id for p in trail],
            },
        )
        session.expunge(alarm)
    return LocationView(alarm=alarm, position=position, cell=alarm.cell, trail=trail)


def case_ref_for(engine: Engine, device_id: str, person: Person) -> str | None:
    """The device's case reference, if the person may see case references (else None)."""
    if not person.can("devices.case"):
        return None
    with session_scope(engine) as session:
        device = session.get(Device, device_id)
        return device.case_ref if device is not None else None
