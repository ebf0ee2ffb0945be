"""Retention purges old heartbeats and old trail points of resolved alarms; erasure on request removes a
device's data and leaves a record that it was erased."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backend_samples import alarm, tele, topic
from sqlmodel import Session, func, select

from pendant_backend import alarms, audit, retention
from pendant_backend.models import Alarm, AlarmLocation, AuditEvent, Device, Heartbeat


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def test_purge_by_age(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm("1-1"))  # resolved below: its trail may go
    alarms.acknowledge_alarm(engine, ref="pd-0001/1-1", operator="Ann", now=clock())
    alarms.resolve_alarm(engine, ref="pd-0001/1-1", operator="Ann", resolution="false", now=clock())
    ingest.handle(topic("pd-0002", "alarm"), alarm("1-1"))  # open: its trail stays
    ingest.handle(topic("pd-0001", "tele"), tele())
    clock.advance(10 * 86400)
    ingest.handle(topic("pd-0001", "tele"), tele())
    counts = retention.purge(engine, now=clock.advance(1), heartbeats_days=5, locations_days=7)
    assert (counts["heartbeats"], counts["points"]) == (1, 1)
    assert count(engine, Heartbeat) == 1 and count(engine, AlarmLocation) == 1
    assert count(engine, Alarm) == 2  # alarms themselves are kept
    assert audit.verify_database(engine) == []
    # Nothing more to purge: no further event.
    before = count(engine, AuditEvent)
    assert not any(retention.purge(engine, now=clock(), heartbeats_days=5, locations_days=7).values())
    assert count(engine, AuditEvent) == before


def test_erasure_on_request(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm("1-1"))
    ingest.handle(topic("pd-0001", "tele"), tele())
    ingest.handle(topic("pd-0002", "tele"), tele())
    with pytest.raises(retention.ErasureRefused, match="not resolved"):
        retention.erase_device(engine, device_id="pd-0001", actor="it", reason="request 7")
    alarms.acknowledge_alarm(engine, ref="pd-0001/1-1", operator="Ann")
    alarms.resolve_alarm(engine, ref="pd-0001/1-1", operator="Ann", resolution="false")
    with pytest.raises(retention.ErasureRefused, match="say why"):
        retention.erase_device(engine, device_id="pd-0001", actor="it", reason=" ")
    counts = retention.erase_device(engine, device_id="pd-0001", actor="it", reason="request 7", now=clock())
    assert counts["alarms"] == 1 and counts["heartbeats"] == 1 and counts["notifications"] == 1
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
        assert (device.case_ref, device.erased_at) == (None, clock())
        assert session.exec(select(func.count()).select_from(Heartbeat)).one() == 1  # pd-0002's
    assert audit.verify_database(engine) == []


def test_purge_keeps_what_is_younger_than_the_limit(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele())
    counts = retention.purge(
        engine, now=clock() + timedelta(days=4, hours=23), heartbeats_days=5, locations_days=5
    )
    assert counts["heartbeats"] == 0 and count(engine, Heartbeat) == 1
