"""Retention and erasure. Heartbeats (with their positions) and the trail points of resolved alarms are
purged after the configured ages; a device's data is erased on request. Both leave an audit event,
so the chain stays verifiable and shows what was removed, when, and (for erasure) by whom."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete
from sqlmodel import col, select

from pendant_backend import BackendError, audit, chain
from pendant_backend.db import session_scope
from pendant_backend.models import (
    Alarm,
    AlarmLocation,
    BenchReport,
    ConfigDocument,
    Device,
    HealthEvent,
    Heartbeat,
    Notification,
    Outbound,
    utc_now,
)

log = logging.getLogger(__name__)


class ErasureRefused(BackendError):
    """The device's data cannot be erased now; the message says why."""


def purge(engine: Engine, *, now: datetime, heartbeats_days: int, locations_days: int) -> dict[str, int]:
    """Delete heartbeats older than `heartbeats_days`, trail points of resolved alarms older than
    `locations_days`, and delivered webhooks and sent messages older than `heartbeats_days` (they copy
    positions). Returns the counts; records a `retention_purge` event when anything went."""
    heartbeat_cutoff = now - timedelta(days=heartbeats_days)
    location_cutoff = now - timedelta(days=locations_days)
    with session_scope(engine) as session:
        points = list(
            session.exec(
                select(AlarmLocation.id)
                .join(Alarm, col(Alarm.id) == col(AlarmLocation.alarm_pk))
                .where(AlarmLocation.received_at < location_cutoff, Alarm.state == "resolved")
            )
        )
        counts = {
            "heartbeats": session.execute(
                delete(Heartbeat).where(Heartbeat.received_at < heartbeat_cutoff)
            ).rowcount,
            "points": 0,
            "notifications": session.execute(
                delete(Notification).where(
                    Notification.created_at < heartbeat_cutoff,
                    (col(Notification.delivered_at).is_not(None))
                    | (col(Notification.failed_at).is_not(None)),
                )
            ).rowcount,
            "outbound": session.execute(
                delete(Outbound).where(
                    Outbound.created_at < heartbeat_cutoff, col(Outbound.sent_at).is_not(None)
                )
            ).rowcount,
        }
        if points:
            counts["points"] = session.execute(
                delete(AlarmLocation).where(col(AlarmLocation.id).in_(points))
            ).rowcount
        if any(counts.values()):
            audit.append(
                session,
                kind="retention_purge",
                at=now,
                data={
                    "heartbeats_before": heartbeat_cutoff.isoformat(),
                    "locations_before": location_cutoff.isoformat(),
                    "counts": counts,
                    "points": sorted(points),
                },
            )
    if any(counts.values()):
        log.info("retention: purged %s", ", ".join(f"{n} {what}" for what, n in counts.items()))
    return counts


def erase_device(
    engine: Engine, *, device_id: str, actor: str, reason: str, now: datetime | None = None
) -> dict[str, Any]:
    """Erase everything the backend holds about the device's use: alarms and their trails, heartbeats,
    health events, webhooks, messages, its config overrides, bench reports, and the registry's case
    reference and phone number. The device row stays (hardware identifiers, loan dates) with `erased_at`,
    and a `device_erased` event records who erased what and why (the reason as a digest). Refused while
    the device has an alarm that is not resolved."""
    if not reason.strip():
        raise ErasureRefused("say why the data is erased (e.g. the request's reference)")
    now = now or utc_now()
    with session_scope(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise ErasureRefused(f"there is no device {device_id}: see `pendant fleet`")
        alarm_ids = list(session.exec(select(Alarm.id).where(Alarm.device_id == device_id)))
        open_count = len(
            list(
                session.exec(select(Alarm.id).where(Alarm.device_id == device_id, Alarm.state != "resolved"))
            )
        )
        if open_count:
            raise ErasureRefused(f"{device_id} has {open_count} alarm(s) not resolved: resolve them first")
        counts = {
            "points": session.execute(
                delete(AlarmLocation).where(col(AlarmLocation.alarm_pk).in_(alarm_ids))
            ).rowcount
            if alarm_ids
            else 0,
            "alarms": session.execute(delete(Alarm).where(Alarm.device_id == device_id)).rowcount,
            "heartbeats": session.execute(delete(Heartbeat).where(Heartbeat.device_id == device_id)).rowcount,
            "health_events": session.execute(
                delete(HealthEvent).where(HealthEvent.device_id == device_id)
            ).rowcount,
            "notifications": session.execute(
                delete(Notification).where(Notification.device_id == device_id)
            ).rowcount,
            "outbound": session.execute(
                delete(Outbound).where(
                    col(Outbound.topic).startswith(f"pendant/v1/{device_id}/"),
                    col(Outbound.sent_at).is_not(None),
                )
            ).rowcount,
            "config_documents": session.execute(
                delete(ConfigDocument).where(ConfigDocument.scope == device_id)
            ).rowcount,
            "bench_reports": session.execute(
                delete(BenchReport).where(BenchReport.device_id == device_id)
            ).rowcount,
        }
        device.case_ref = device.phone = None
        device.last_fix_at = None
        device.erased_at = now
        session.add(device)
        audit.append(
            session,
            kind="device_erased",
            at=now,
            actor=actor,
            device_id=device_id,
            data={"alarms": sorted(alarm_ids), "counts": counts, "reason": chain.digest(reason)},
        )
    log.info(
        "erased the data of %s on request (%s)", device_id, ", ".join(f"{n} {k}" for k, n in counts.items())
    )
    return counts
