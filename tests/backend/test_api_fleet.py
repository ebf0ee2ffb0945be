"""The API's fleet (both databases): the summary, the devices with their health, health events; every
role reads them, case references only some; unknown filter values and devices are refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

import pytest
from api_support import bearer
from backend_samples import tele, topic
from fastapi.testclient import TestClient

from pendant_backend import configs, health, lifecycle, monitor, supervision
from pendant_backend.api import schemas
from pendant_backend.models import LOAN_STATES
from pendant_backend.settings import Settings
from pendant_backend.web import create_app


@pytest.fixture
def client(engine, pendant_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(engine, pendant_settings, console=False)) as client:
        yield client


@pytest.fixture
def classified(engine, ingest, clock, pendant_settings: Settings) -> None:
    """pd-0001 sent a heartbeat and the fleet was classified: it is online, pd-0002 was never seen."""
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    monitor.evaluate(engine, now=clock(), settings=pendant_settings)


def test_the_value_sets_of_the_document_are_those_of_the_rules() -> None:
    assert get_args(schemas.Connectivity) == health.CONNECTIVITY
    assert get_args(schemas.Battery) == health.BATTERY
    assert get_args(schemas.HealthFlag) == health.FLAGS
    assert get_args(schemas.LoanState) == LOAN_STATES
    assert get_args(schemas.Resolution) == lifecycle.RESOLUTIONS
    assert set(get_args(schemas.AlarmState)) == set(lifecycle.ALARM_STATES) - {"raised"}
    assert get_args(schemas.SupervisionProfile) == supervision.PROFILES
    supervised = {"supervision", "heartbeat_s", "interval_in_force", "late_after_s", "offline_after_s"}
    assert set(schemas.HealthPublic.model_fields) == {
        "connectivity",
        "battery",
        "hours_left",
        *health.FLAGS,
        *supervised,
        "supervision_pending",
    }


def test_summary_devices_and_health_events(client, engine, classified) -> None:
    headers = bearer(engine, "ivan", "police_it")
    summary = client.get("/api/v1/fleet/summary", headers=headers).json()
    assert summary["devices"] == 2 and summary["monitored"] == 2
    assert summary["connectivity"] == {"online": 1, "late": 0, "offline": 0, "never_seen": 1}
    assert summary["loan"]["issued"] == 2 and summary["loan"]["in_stock"] == 0
    assert summary["alarms"] == {"open": 0, "unacknowledged": 0}
    online = client.get("/api/v1/devices", headers=headers, params={"connectivity": "online"}).json()
    assert [d["device_id"] for d in online] == ["pd-0001"]
    assert "password_hash" not in online[0] and online[0]["health"]["connectivity"] == "online"
    assert online[0]["health"]["weak_signal"] is False
    issued = client.get("/api/v1/devices", headers=headers, params={"loan_state": "issued"}).json()
    assert [d["device_id"] for d in issued] == ["pd-0001", "pd-0002"]
    assert client.get("/api/v1/devices", headers=headers, params={"loan_state": "returned"}).json() == []
    one = client.get("/api/v1/devices/pd-0002", headers=headers).json()
    assert one["case_ref"] == "case-2" and one["health"]["connectivity"] == "never_seen"
    events = client.get("/api/v1/health-events", headers=headers, params={"device_id": "pd-0001"}).json()
    assert {e["aspect"] for e in events} == {"connectivity", "battery"}
    assert all(e["device_id"] == "pd-0001" and e["new"] for e in events)


@pytest.mark.parametrize("role", ["dispatcher", "supervisor", "police_it", "technician", "admin"])
def test_every_role_reads_the_fleet_and_only_some_see_case_references(
    client, engine, classified, role
) -> None:
    headers = bearer(engine, "someone", role)
    assert client.get("/api/v1/fleet/summary", headers=headers).status_code == 200
    assert client.get("/api/v1/health-events", headers=headers).status_code == 200
    listed = client.get("/api/v1/devices", headers=headers).json()
    shown = {d["device_id"]: d["case_ref"] for d in listed}
    expected = "case-1" if role in ("dispatcher", "supervisor", "police_it") else None
    assert shown["pd-0001"] == expected
    assert client.get("/api/v1/devices/pd-0001", headers=headers).json()["case_ref"] == expected


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/devices", {"loan_state": "lost"}),
        ("/api/v1/devices", {"connectivity": "asleep"}),
        ("/api/v1/devices", {"flag": "haunted"}),
        ("/api/v1/devices", {"battery": "full"}),
        ("/api/v1/health-events", {"limit": 5000}),
        ("/api/v1/health-events", {"since": "last tuesday"}),
    ],
)
def test_an_unknown_filter_value_is_422(client, engine, classified, path, params) -> None:
    refused = client.get(path, headers=bearer(engine, "ivan", "police_it"), params=params)
    assert refused.status_code == 422
    [name] = params
    assert name in refused.json()["problems"][0]


def test_each_device_shows_its_supervision_and_a_change_waits_for_its_next_heartbeat(
    client, engine, classified, ingest, clock, pendant_settings: Settings
) -> None:
    headers = bearer(engine, "ivan", "police_it")
    shown = client.get("/api/v1/devices/pd-0001", headers=headers).json()["health"]
    assert (shown["supervision"], shown["heartbeat_s"], shown["late_after_s"], shown["offline_after_s"]) == (
        "SP4",
        180,
        240,
        600,
    )
    configs.set_config(engine, scope="pd-0001", changes={"sms": ["+31612345678"]}, author="it", now=clock())
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=1))  # it runs rev 1, every 180 s
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 1800}, author="it", now=clock())
    monitor.sweep(engine, now=clock(), settings=pendant_settings)
    changed = client.get("/api/v1/devices/pd-0001", headers=headers).json()["health"]
    shown_now = (changed["supervision"], changed["heartbeat_s"], changed["interval_in_force"])
    assert shown_now == ("SP3", 1800, 180)
    assert changed["supervision_pending"] is True and changed["late_after_s"] == 240
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=2))
    monitor.sweep(engine, now=clock(), settings=pendant_settings)
    running = client.get("/api/v1/devices/pd-0001", headers=headers).json()["health"]
    assert (running["interval_in_force"], running["late_after_s"], running["offline_after_s"]) == (
        1800,
        1860,
        5460,
    )
    assert running["supervision_pending"] is False


def test_an_unknown_device_is_404(client, engine, devices) -> None:
    missing = client.get("/api/v1/devices/pd-0404", headers=bearer(engine, "ivan", "police_it"))
    assert missing.status_code == 404 and "there is no device pd-0404" in missing.json()["detail"]
