"""Device configuration: a fleet-default document and per-device overrides, each with its own
revisions; the effective document for a device is published retained on `pendant/v1/<id>/config` with a
per-device `rev` that only ever grows. The pendant reports the revision it applies (`tele.cfg`,
`evt config_applied`), and the health rules flag drift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, chain, outbound, payloads, supervision
from pendant_backend.db import session_scope
from pendant_backend.models import ConfigDocument, Device, Heartbeat, utc_now

FLEET = "fleet"
FIELDS = tuple(f.name for f in dataclasses.fields(payloads.DeviceConfig) if f.name != "rev")
LIST_FIELDS = ("sms", "call", "callback")
BOOL_FIELDS = ("off_alarm",)
# Devices that receive configs: those that may be online.
ACTIVE_LOAN_STATES = ("provisioned", "issued")


class ConfigError(BackendError):
    """A config document that the pendant would refuse; the message names the field."""


def check_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Pure: the values of a document (a subset of FIELDS), checked against the ranges of protocol.md."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config fields {', '.join(unknown)}: the fields are {', '.join(FIELDS)}")
    clean = {k: list(v) if k in LIST_FIELDS and isinstance(v, list | tuple) else v for k, v in values.items()}
    document = dataclasses.asdict(payloads.DeviceConfig())
    document.update(clean)
    try:
        payloads.parse_config(payloads._compact(document))
    except payloads.InvalidPayload as exc:
        raise ConfigError(f"config refused: {exc.detail}") from None
    if document["batt_critical"] >= document["batt_low"]:
        raise ConfigError("config refused: batt_critical must be below batt_low")
    return clean


def effective(fleet: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
    """Pure: the whole document for one device: protocol defaults, then the fleet's, then its own."""
    document = dataclasses.asdict(payloads.DeviceConfig())
    del document["rev"]
    for key in LIST_FIELDS:
        document[key] = list(document[key])
    document.update(fleet)
    document.update(device)
    return document


def latest(session: Session, scope: str) -> ConfigDocument | None:
    """The newest revision of the fleet document (`scope` = `fleet`) or of a device's overrides."""
    return session.exec(
        select(ConfigDocument)
        .where(ConfigDocument.scope == scope)
        .order_by(col(ConfigDocument.version).desc())
    ).first()


def _values(document: ConfigDocument | None) -> dict[str, Any]:
    return dict(document.values) if document is not None else {}


def publish_device(
    session: Session, device: Device, *, now: datetime, fleet: Mapping[str, Any] | None = None
) -> bool:
    """Publish the device's effective document if it changed (with the next `rev`); True if published."""
    if fleet is None:
        fleet = _values(latest(session, FLEET))
    document = effective(fleet, _values(latest(session, device.device_id)))
    if device.config_doc == document and device.config_rev > 0:
        return False
    old_s = int((device.config_doc or {}).get("heartbeat_s", supervision.DEFAULT_S))
    device.config_rev += 1
    if document["heartbeat_s"] != old_s:
        _note_interval_change(session, device, old_s)
    device.config_doc = document
    session.add(device)
    message = payloads.DeviceConfig(
        rev=device.config_rev, **{k: tuple(v) if k in LIST_FIELDS else v for k, v in document.items()}
    )
    outbound.enqueue(
        session,
        topic=payloads.topic_for(device.device_id, "config"),
        payload=payloads.encode_config(message),
        now=now,
        retain=True,
    )
    audit.append(
        session,
        kind="config_published",
        at=now,
        device_id=device.device_id,
        data={"rev": device.config_rev, "digest": chain.digest(document)},
    )
    return True


def _note_interval_change(session: Session, device: Device, old_s: int) -> None:
    """A new `heartbeat_s` goes out with revision `device.config_rev`: until a heartbeat reports it, the
    pendant is held to the interval it may still run (pendant_backend.supervision)."""
    beat_cfg = None
    if device.heartbeat_since_rev is not None:
        beat_cfg = session.exec(
            select(Heartbeat.cfg)
            .where(Heartbeat.device_id == device.device_id)
            .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
            .limit(1)
        ).first()
    device.heartbeat_prev_s = supervision.previous_for_change(
        old_s, device.heartbeat_prev_s, device.heartbeat_since_rev, beat_cfg
    )
    device.heartbeat_since_rev = device.config_rev


def published_message(device: Device) -> tuple[str, bytes] | None:
    """Pure: the topic and payload of the config last published to the device, with its `rev`, or None
    if it never got one. Published again after a broker crash: the same `rev`, so a pendant that has it
    already ignores it."""
    if device.config_rev <= 0 or device.config_doc is None:
        return None
    document = device.config_doc
    message = payloads.DeviceConfig(
        rev=device.config_rev, **{k: tuple(v) if k in LIST_FIELDS else v for k, v in document.items()}
    )
    return payloads.topic_for(device.device_id, "config"), payloads.encode_config(message)


def republish_order(session: Session) -> list[str]:
    """The devices whose config the broker must hold, those whose pendant does not apply it yet first
    (a change waiting for a pendant that is offline), then the rest, each in device id order."""
    rows = list(
        session.exec(
            select(Device.device_id, Device.config_rev, Device.config_applied_rev).where(
                col(Device.loan_state).in_(ACTIVE_LOAN_STATES),
                col(Device.revoked_at).is_(None),
                Device.config_rev > 0,
            )
        )
    )
    rows.sort(key=lambda row: (row[2] == row[1], row[0]))
    return [device_id for device_id, _, _ in rows]


def set_config(
    engine: Engine,
    *,
    scope: str,
    changes: Mapping[str, Any],
    unset: tuple[str, ...] = (),
    author: str = audit.SYSTEM,
    now: datetime | None = None,
) -> tuple[ConfigDocument, int]:
    """A new revision of the fleet document or of one device's overrides: the previous revision with
    `changes` applied and `unset` fields removed. Publishes to every device it changes; returns the new
    document and how many devices got a new config."""
    now = now or utc_now()
    with session_scope(engine) as session:
        if scope != FLEET and session.get(Device, scope) is None:
            raise ConfigError(f"there is no device {scope}: see `pendant fleet`")
        document = add_revision(session, scope=scope, changes=changes, unset=unset, author=author, now=now)
        query = select(Device).where(
            col(Device.loan_state).in_(ACTIVE_LOAN_STATES), col(Device.revoked_at).is_(None)
        )
        if scope != FLEET:
            query = query.where(Device.device_id == scope)
        fleet = _values(latest(session, FLEET))
        devices = list(session.exec(query.with_for_update()))
        published = sum(publish_device(session, device, now=now, fleet=fleet) for device in devices)
    return document, published


def add_revision(
    session: Session,
    *,
    scope: str,
    changes: Mapping[str, Any],
    unset: tuple[str, ...] = (),
    author: str = audit.SYSTEM,
    now: datetime,
) -> ConfigDocument:
    """The next revision of a document, checked, with its `config_changed` audit event, in the caller's
    transaction; publishes nothing (`set_config` does, and provisioning publishes a device's first)."""
    previous = latest(session, scope)
    values = _values(previous)
    values.update(changes)
    for key in unset:
        values.pop(key, None)
    values = check_values(values)
    document = ConfigDocument(
        scope=scope,
        version=(previous.version + 1) if previous else 1,
        values=values,
        created_at=now,
        author=author,
    )
    session.add(document)
    audit.append(
        session,
        kind="config_changed",
        at=now,
        actor=author,
        device_id=None if scope == FLEET else scope,
        data={"scope": scope, "version": document.version, "digest": chain.digest(values)},
    )
    session.flush()
    return document


def device_config_view(engine: Engine, *, device_id: str) -> dict[str, Any]:
    """For `pendant device config`: the fleet and device documents, the effective one, and what the
    pendant applies."""
    with Session(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise ConfigError(f"there is no device {device_id}: see `pendant fleet`")
        fleet, own = latest(session, FLEET), latest(session, device_id)
        return {
            "device_id": device_id,
            "fleet": {"version": fleet.version if fleet else 0, "values": _values(fleet)},
            "device": {"version": own.version if own else 0, "values": _values(own)},
            "effective": effective(_values(fleet), _values(own)),
            "published_rev": device.config_rev,
            "applied_rev": device.config_applied_rev,
            "error": device.config_error,
        }


def fleet_config_view(engine: Engine) -> dict[str, Any]:
    """The fleet-default document and its revision."""
    with Session(engine) as session:
        fleet = latest(session, FLEET)
        return {
            "version": fleet.version if fleet else 0,
            "values": _values(fleet),
            "effective": effective(_values(fleet), {}),
        }
