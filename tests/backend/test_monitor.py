"""Health over the database, driven by a controllable clock: what ingest stores becomes health events
(each with its timestamp), a webhook, and the fleet summary."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from backend_samples import T0, alarm, tele, topic
from sqlmodel import Session, col, select

from pendant_backend import configs, monitor, registry
from pendant_backend.models import Device, DeviceUpdate, Notification
from pendant_backend.settings import Settings

SETTINGS = Settings(data_dir=".", db_url="", offline_after_missed=3)


def evaluate(engine, clock) -> list[tuple[str, str, str | None, str]]:
    found = monitor.evaluate(engine, now=clock(), settings=SETTINGS)
    return [(e.device_id, e.aspect, e.old, e.new) for e in found]


def status(online: bool, sess: int, boot: int = 12) -> bytes:
    if online:
        return json.dumps({"online": True, "boot": boot, "sess": sess, "fw": "0.1.0"}).encode()
    return json.dumps({"online": False, "boot": boot, "sess": sess}).encode()


def test_connectivity_transitions_by_the_clock(engine, ingest, clock) -> None:
    assert evaluate(engine, clock) == []  # never seen: nothing to report yet
    ingest.handle(topic("pd-0001", "status"), status(True, 40))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert ("pd-0001", "connectivity", "never_seen", "online") in evaluate(engine, clock)
    clock.advance(180 + 61)  # one heartbeat (180 s) missed, past the 60 s grace
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "late")]
    clock.advance(2 * 180)  # three missed
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "late", "offline")]
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "offline", "online")]


def test_a_will_is_offline_and_a_stale_will_is_ignored(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "status"), status(True, 41))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.advance(5)
    ingest.handle(topic("pd-0001", "status"), status(False, 40))  # the previous connection's will
    assert evaluate(engine, clock) == []
    ingest.handle(topic("pd-0001", "status"), status(False, 41))
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "offline")]


def test_every_change_is_stored_with_its_time_and_sent_to_the_webhook(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(batt=80, rssi=-70))
    evaluate(engine, clock)
    clock.advance(60)
    ingest.handle(topic("pd-0001", "tele"), tele(batt=4, chg=True, rssi=-110, out=5))
    changes = evaluate(engine, clock)
    assert changes == [
        ("pd-0001", "battery", "ok", "critical"),
        ("pd-0001", "charging", "no", "yes"),
        ("pd-0001", "weak_signal", "no", "yes"),
        ("pd-0001", "outbox_backlog", "no", "yes"),
    ]
    stored = monitor.health_events(engine, device_id="pd-0001")
    assert {e.at for e in stored[:4]} == {clock()}
    with Session(engine) as session:
        hooks = [
            json.loads(n.body) for n in session.exec(select(Notification).order_by(col(Notification.id)))
        ]
    assert hooks[-1]["event"] == "health" and hooks[-1]["case_ref"] == "case-1"
    assert [c["aspect"] for c in hooks[-1]["changes"]] == [
        "battery",
        "charging",
        "weak_signal",
        "outbox_backlog",
    ]


def test_hours_left_from_heartbeats(engine, ingest, clock) -> None:
    for level in (80, 78, 76, 74):
        ingest.handle(topic("pd-0001", "tele"), tele(batt=level, chg=False, rssi=-70))
        clock.advance(3600)
    evaluate(engine, clock)
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
    # 2 % an hour; 74 % an hour ago.
    assert device.health["hours_left"] == pytest.approx(36.0, abs=0.1)


def test_gnss_stale_after_a_day_without_a_fix(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, tst=None))
    evaluate(engine, clock)
    clock.advance(24 * 3600 + 1)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, loc=None))
    assert ("pd-0001", "gnss_stale", "no", "yes") in evaluate(engine, clock)


def test_config_and_firmware_drift(engine, ingest, clock) -> None:
    configs.set_config(engine, scope="fleet", changes={"heartbeat_s": 300}, author="it", now=clock())
    with Session(engine) as session:
        rev = session.get(Device, "pd-0001").config_rev
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=rev - 1, rssi=-70))
    assert ("pd-0001", "config_drift", None, "yes") in evaluate(engine, clock)
    ingest.handle(
        topic("pd-0001", "evt"), json.dumps({"evt": "config_applied", "tst": None, "rev": rev}).encode()
    )
    assert ("pd-0001", "config_drift", "yes", "no") in evaluate(engine, clock)
    ingest.handle(
        topic("pd-0001", "evt"),
        b'{"evt":"config_rejected","tst":null,"rev":9,"field":"sms","err":"bad number"}',
    )
    assert ("pd-0001", "config_drift", "no", "yes") in evaluate(engine, clock)
    registry.update_device(engine, device_id="pd-0001", changes=DeviceUpdate(firmware_version="0.2.0"))
    assert ("pd-0001", "firmware_drift", "no", "yes") in evaluate(engine, clock)


def test_the_heartbeat_interval_of_the_devices_config_sets_late(engine, ingest, clock) -> None:
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 600}, author="it", now=clock())
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.advance(180 + 61)
    assert evaluate(engine, clock) == []  # late only after 600 + 60 s
    clock.advance(600)
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "late")]


def test_test_alarm_overdue_and_renewal_due(engine, ingest, clock) -> None:
    registry.set_renewal(engine, device_id="pd-0001", renewal_due=T0 + timedelta(days=40))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.now = T0 + timedelta(days=26)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert evaluate(engine, clock) == [("pd-0001", "renewal_due", "no", "yes")]
    clock.now = T0 + timedelta(days=31)
    ingest.handle(topic("pd-0001", "alarm"), alarm("7-1", kind="test", test=True))
    assert ("pd-0001", "test_overdue", "no", "yes") not in evaluate(engine, clock)
    clock.now = T0 + timedelta(days=62)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert ("pd-0001", "test_overdue", "no", "yes") in evaluate(engine, clock)


def test_fleet_summary_counts(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    evaluate(engine, clock)
    summary = monitor.fleet_summary(engine)
    assert summary["connectivity"] == {"online": 1, "late": 0, "offline": 0, "never_seen": 1}
    assert summary["loan"] == {"issued": 2}
    assert summary["alarms"] == {"open": 1, "unacknowledged": 1}
    assert summary["monitored"] == summary["devices"] == 2
