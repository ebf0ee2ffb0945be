"""Read side: alarms, devices, heartbeats and health for the CLI, the case exports and the API (whose typed
views of them are in pendant_backend.api.schemas)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from pendant_backend import alarms as alarm_rules
from pendant_backend import supervision
from pendant_backend.models import Alarm, Device, Heartbeat, as_utc, iso


def list_alarms(
    engine: Engine,
    *,
    device_id: str | None = None,
    state: str | None = None,
    open_only: bool = False,
    limit: int = 50,
) -> list[Alarm]:
    """The newest alarms first, of one device or of all; `state` or `open_only` (not resolved) filter."""
    with Session(engine) as session:
        query = select(Alarm)
        if device_id is not None:
            query = query.where(Alarm.device_id == device_id)
        if state is not None:
            query = query.where(Alarm.state == state)
        if open_only:
            query = query.where(Alarm.state != "resolved")
        query = query.order_by(col(Alarm.received_at).desc(), col(Alarm.id).desc()).limit(limit)
        return list(session.exec(query))


def find_alarm(engine: Engine, ref: str) -> Alarm | None:
    """The alarm named by `ref`: its number (`17`), `<device_id>/<alarm_id>` or `.../<alarm_id>#<n>`."""
    with Session(engine) as session:
        return alarm_rules.find_alarm(session, ref)


def count_alarms(engine: Engine, *, device_id: str | None = None) -> int:
    """How many alarms are stored (each counted once, however often it was resent)."""
    with Session(engine) as session:
        query = select(func.count()).select_from(Alarm)
        if device_id is not None:
            query = query.where(Alarm.device_id == device_id)
        return session.exec(query).one()


def list_devices(
    engine: Engine,
    *,
    connectivity: str | None = None,
    loan_state: str | None = None,
    flag: str | None = None,
    battery: str | None = None,
) -> list[Device]:
    """Every device by id, optionally only those in a connectivity or loan state, with a battery level,
    or with a health flag set."""
    with Session(engine) as session:
        query = select(Device).order_by(Device.device_id)
        if connectivity is not None:
            query = query.where(Device.connectivity == connectivity)
        if loan_state is not None:
            query = query.where(Device.loan_state == loan_state)
        devices = list(session.exec(query))
    if flag is not None:
        devices = [d for d in devices if (d.health or {}).get(flag) == "yes"]
    if battery is not None:
        devices = [d for d in devices if (d.health or {}).get("battery") == battery]
    return devices


def latest_heartbeat(engine: Engine, device_id: str) -> Heartbeat | None:
    """The last `tele` received from the device."""
    with Session(engine) as session:
        return session.exec(
            select(Heartbeat)
            .where(Heartbeat.device_id == device_id)
            .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
        ).first()


def alarm_as_dict(alarm: Alarm) -> dict[str, Any]:
    """An alarm as JSON-ready data, in full (position and payload included): for the CLI and the case
    exports, never for the API (api.schemas.AlarmPublic has no position)."""
    data = alarm.model_dump()
    for key in ("received_at", "acknowledged_at", "resolved_at", "last_escalated_at", "fallback_at"):
        data[key] = iso(data[key])
    data["raised_at"] = iso(alarm.raised_at)
    data["ref"] = alarm.ref
    return data


def supervision_as_dict(device: Device) -> dict[str, Any]:
    """The device's supervision (supervision.Supervision.as_dict): as the rules last held it to it, or,
    before they classified it, from its config (a change taken as not yet in force)."""
    stored = (device.health or {}).get("supervision")
    heartbeat_s = int((device.config_doc or {}).get("heartbeat_s", supervision.DEFAULT_S))
    if isinstance(stored, dict) and stored.get("heartbeat_s") == heartbeat_s:
        return dict(stored)
    return supervision.supervision(
        heartbeat_s, previous_s=device.heartbeat_prev_s, since_rev=device.heartbeat_since_rev
    ).as_dict()


def device_as_dict(device: Device) -> dict[str, Any]:
    """A device as JSON-ready data, without its password hash: for the CLI (the API has
    api.schemas.DevicePublic)."""
    data = device.model_dump(exclude={"password_hash"})
    for key, value in list(data.items()):
        if key.endswith("_at") or key == "renewal_due":
            data[key] = iso(as_utc(value)) if value is not None else None
    data["provisioned"] = device.provisioned_at is not None
    data["revoked"] = device.revoked_at is not None
    data["supervision"] = supervision_as_dict(device)
    return data
