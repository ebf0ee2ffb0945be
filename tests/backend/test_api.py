"""The HTTP API: tokens (no default access), fleet summary, devices, health events, alarms with trail,
ack and resolve under the token's name."""

from __future__ import annotations

import pytest
from backend_samples import alarm, tele, topic
from fastapi.testclient import TestClient

from pendant_backend import monitor, tokens
from pendant_backend.api import create_app
from pendant_backend.settings import Settings


@pytest.fixture
def client(engine, devices) -> TestClient:
    return TestClient(create_app(engine))


@pytest.fixture
def auth(engine) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create_token(engine, name='Ann (dispatch)')}"}


def test_nothing_without_a_valid_token(client, engine) -> None:
    assert client.get("/api/v1/fleet/summary").status_code == 401
    assert client.get("/api/v1/alarms", headers={"Authorization": "Bearer pdt_nonsense"}).status_code == 401
    token = tokens.create_token(engine, name="Bob")
    tokens.revoke_token(engine, name="Bob")
    assert client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_tokens_are_stored_only_as_hashes(engine) -> None:
    token = tokens.create_token(engine, name="Carol")
    [row] = [t for t in tokens.list_tokens(engine) if t.name == "Carol"]
    assert token not in row.token_hash and row.token_hash == tokens.token_hash(token)
    with pytest.raises(tokens.TokenError, match="already a token named"):
        tokens.create_token(engine, name="Carol")


def test_alarm_ack_resolve_and_trail(client, auth, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0001", "tele"), tele())
    [listed] = client.get("/api/v1/alarms?open_only=true", headers=auth).json()
    assert listed["ref"] == "pd-0001/12-3" and listed["state"] == "received" and "payload" not in listed
    trail = client.get("/api/v1/alarms/pd-0001/12-3/trail", headers=auth).json()
    assert [p["source"] for p in trail] == ["alarm", "tele"]
    acked = client.post("/api/v1/alarms/pd-0001/12-3/ack", headers=auth)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "Ann (dispatch)"
    again = client.post("/api/v1/alarms/pd-0001/12-3/ack", headers=auth)
    assert again.status_code == 409 and "already acknowledged by Ann (dispatch)" in again.json()["detail"]
    bad = client.post("/api/v1/alarms/pd-0001/12-3/resolve", headers=auth, json={"resolution": "maybe"})
    assert bad.status_code == 409
    done = client.post(
        f"/api/v1/alarms/{listed['id']}/resolve",
        headers=auth,
        json={"resolution": "incident", "note": "on site"},
    )
    assert done.status_code == 200 and done.json()["state"] == "resolved"
    assert client.get("/api/v1/alarms/pd-0001/12-3", headers=auth).json()["note"] == "on site"
    assert client.get("/api/v1/alarms/pd-0001/99-9", headers=auth).status_code == 404


def test_fleet_devices_and_health_events(client, auth, engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    monitor.evaluate(engine, now=clock(), settings=Settings(data_dir=".", db_url=""))
    summary = client.get("/api/v1/fleet/summary", headers=auth).json()
    assert summary["connectivity"]["online"] == 1 and summary["connectivity"]["never_seen"] == 1
    online = client.get("/api/v1/devices?connectivity=online", headers=auth).json()
    assert [d["device_id"] for d in online] == ["pd-0001"] and "password_hash" not in online[0]
    assert client.get("/api/v1/devices/pd-0002", headers=auth).json()["case_ref"] == "case-2"
    assert client.get("/api/v1/devices/pd-0404", headers=auth).status_code == 404
    events = client.get("/api/v1/health-events?device_id=pd-0001", headers=auth).json()
    assert {e["aspect"] for e in events} == {"connectivity", "battery"}
