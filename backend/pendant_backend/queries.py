"""Read side: alarms and devices as the CLI (and later the API) shows them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from pendant_backend.models import Alarm, Device, Heartbeat, as_utc


def list_alarms(engine: Engine, *, device_id: str | None = None, limit: int = 50) -> list[Alarm]:
    """The newest alarms first, of one device or of all."""
    with Session(engine) as session:
        query = select(Alarm)
        if device_id is not None:
            query = query.where(Alarm.device_id == device_id)
        query = query.order_by(col(Alarm.received_at).desc(), col(Alarm.id).desc()).limit(limit)
        return list(session.exec(query))


def find_alarm(engine: Engine, ref: str) -> Alarm | None:
    """The alarm named by `ref`: its number (`17`) or `<device_id>/<alarm_id>` (`pd-0001/12-3`)."""
    with Session(engine) as session:
        if ref.isdigit():
            return session.get(Alarm, int(ref))
        device_id, _, alarm_id = ref.partition("/")
        return session.exec(
            select(Alarm).where(Alarm.device_id == device_id, Alarm.alarm_id == alarm_id)
        ).first()


def count_alarms(engine: Engine, *, device_id: str | None = None) -> int:
    """How many alarms are stored (each counted once, however often it was resent)."""
    with Session(engine) as session:
        query = select(func.count()).select_from(Alarm)
        if device_id is not None:
            query = query.where(Alarm.device_id == device_id)
        return session.exec(query).one()


def list_devices(engine: Engine) -> list[Device]:
    """Every device, provisioned or only seen on the broker, by id."""
    with Session(engine) as session:
        return list(session.exec(select(Device).order_by(Device.device_id)))


def latest_heartbeat(engine: Engine, device_id: str) -> Heartbeat | None:
    """The last `tele` received from the device."""
    with Session(engine) as session:
        return session.exec(
            select(Heartbeat)
            .where(Heartbeat.device_id == device_id)
            .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
        ).first()


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if value is not None else None


def alarm_as_dict(alarm: Alarm) -> dict[str, Any]:
    """An alarm as JSON-ready data."""
    data = alarm.model_dump()
    data["received_at"] = _iso(alarm.received_at)
    data["raised_at"] = alarm.raised_at.isoformat()
    data["ref"] = alarm.ref
    return data


def device_as_dict(device: Device) -> dict[str, Any]:
    """A device as JSON-ready data, without its password hash."""
    data = device.model_dump(exclude={"password_hash"})
    for key in ("provisioned_at", "revoked_at", "first_seen_at", "last_seen_at"):
        data[key] = _iso(data[key])
    data["provisioned"] = device.provisioned_at is not None
    data["revoked"] = device.revoked_at is not None
    return data
