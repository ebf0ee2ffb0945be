"""The API's alarms (both databases): who may read an alarm, its location and its timeline; acks and
resolutions recorded under the person's username; the location read as an audit event; `locate`;
and clear refusals (403, 404, 409, 422) that change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from api_support import bearer
from backend_samples import alarm, example, tele, topic
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from pendant_backend import queries
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, AuditEvent, Command, Outbound
from pendant_backend.settings import Settings
from pendant_backend.web import create_app

ALARM = "/api/v1/alarms/pd-0001/12-3"


@pytest.fixture
def client(engine, pendant_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(engine, pendant_settings, console=False)) as client:
        yield client


@pytest.fixture
def raised(ingest, clock) -> None:
    """pd-0001 raised alarm 12-3 with a GNSS fix; a heartbeat added a trail point."""
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())


def _events(engine, kind: str) -> list[AuditEvent]:  # noqa: ANN001
    with Session(engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.seq)))
        )


def test_an_alarm_shows_no_position_only_its_kind_and_accuracy(client, engine, ingest, raised) -> None:
    ingest.handle(topic("pd-0002", "alarm"), example("alarm-no-fix.json", alarm_id="3-1"))
    reader = bearer(engine, "ivan", "police_it")
    listed = client.get("/api/v1/alarms", headers=reader).json()
    assert [a["ref"] for a in listed] == ["pd-0002/3-1", "pd-0001/12-3"]
    cell_only, with_fix = listed
    assert with_fix["location_kind"] == "gnss" and with_fix["location_accuracy_m"] == 8
    assert cell_only["location_kind"] == "cell" and cell_only["location_accuracy_m"] is None
    for shown in [*listed, client.get(ALARM, headers=reader).json()]:
        assert not {"lat", "lon", "acc", "loc_time", "cell", "payload"} & set(shown)
        assert "52.37" not in json.dumps(shown)
    by_number = client.get(f"/api/v1/alarms/{with_fix['id']}", headers=reader).json()
    assert by_number["ref"] == "pd-0001/12-3" and by_number["state"] == "received"
    # `#<occurrence>` travels as %23 (occurrence 0 is the first alarm with that id).
    assert client.get(f"{ALARM}%230", headers=reader).json()["id"] == with_fix["id"]


@pytest.mark.parametrize(
    ("role", "alarms", "location"),
    [
        ("dispatcher", 200, 200),
        ("supervisor", 200, 200),
        ("police_it", 200, 403),
        ("technician", 403, 403),
        ("admin", 403, 403),
    ],
)
def test_roles_decide_who_sees_alarms_and_locations(client, engine, raised, role, alarms, location) -> None:
    headers = bearer(engine, "someone", role)
    assert client.get("/api/v1/alarms", headers=headers).status_code == alarms
    assert client.get(ALARM, headers=headers).status_code == alarms
    assert client.get(f"{ALARM}/timeline", headers=headers).status_code == alarms
    where = client.get(f"{ALARM}/location", headers=headers)
    assert where.status_code == location
    assert client.get(f"{ALARM}/trail", headers=headers).status_code == location
    if location == 403:
        assert "dispatcher or supervisor" in where.json()["detail"]
        assert "52.37" not in where.text
        assert _events(engine, "location_viewed") == []


def test_a_location_read_is_an_audit_event_through_the_api(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    where = client.get(f"{ALARM}/location", headers=headers)
    assert where.status_code == 200 and where.headers["cache-control"] == "no-store"
    body = where.json()
    assert body["location_kind"] == "gnss" and body["ref"] == "pd-0001/12-3"
    assert body["position"] == {
        "lat": 52.373101,
        "lon": 4.892203,
        "acc": 8,
        "loc_time": 1764403190,
        "loc_src": "gnss",
    }
    assert [p["source"] for p in body["trail"]] == ["alarm", "tele"]
    [viewed] = _events(engine, "location_viewed")
    assert viewed.actor == "ann" and viewed.alarm_pk == body["alarm_id"] and viewed.device_id == "pd-0001"
    data = json.loads(viewed.body)["data"]
    assert data["via"] == "api" and data["points"] == [p["id"] for p in body["trail"]]


def test_the_trail_after_a_point_and_each_read_recorded(client, engine, ingest, clock, raised) -> None:
    headers = bearer(engine, "sue", "supervisor")
    answer = client.get(f"{ALARM}/trail", headers=headers)
    assert answer.headers["cache-control"] == "no-store"
    first = answer.json()
    assert [p["source"] for p in first] == ["alarm", "tele"]
    clock.advance(60)
    ingest.handle(topic("pd-0001", "tele"), tele())
    newer = client.get(f"{ALARM}/trail", headers=headers, params={"after_point": first[-1]["id"]}).json()
    assert len(newer) == 1 and newer[0]["id"] > first[-1]["id"]
    reads = _events(engine, "location_viewed")
    assert [json.loads(e.body)["data"]["points"] for e in reads] == [
        [p["id"] for p in first],
        [newer[0]["id"]],
    ]
    assert client.get(f"{ALARM}/trail", headers=headers, params={"after_point": -1}).status_code == 422


def test_a_cell_only_alarm_answers_its_cell(client, engine, ingest) -> None:
    ingest.handle(topic("pd-0002", "alarm"), example("alarm-no-fix.json", alarm_id="3-1"))
    body = client.get(
        "/api/v1/alarms/pd-0002/3-1/location", headers=bearer(engine, "ann", "dispatcher")
    ).json()
    assert body["location_kind"] == "cell" and body["position"] is None and body["trail"] == []
    assert body["cell"] == {"mcc": 204, "mnc": 8, "lac": "0x2B5C", "cid": "0x01A2F30", "rat": "LTE"}
    # No cell database is configured: the area is unknown rather than guessed.
    assert body["cell_area"] is None


def test_ack_and_resolve_record_the_person(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    acked = client.post(f"{ALARM}/ack", headers=headers)
    assert acked.status_code == 200
    assert acked.json()["state"] == "acknowledged" and acked.json()["acknowledged_by"] == "ann"
    [event] = _events(engine, "alarm_acknowledged")
    assert event.actor == "ann"
    again = client.post(f"{ALARM}/ack", headers=bearer(engine, "sue", "supervisor"))
    assert again.status_code == 409 and "already acknowledged by ann" in again.json()["detail"]
    done = client.post(
        f"{ALARM}/resolve", headers=headers, json={"resolution": "incident", "note": " on site "}
    )
    assert done.status_code == 200
    assert done.json()["resolved_by"] == "ann" and done.json()["note"] == "on site"
    twice = client.post(f"{ALARM}/resolve", headers=headers, json={"resolution": "false"})
    assert twice.status_code == 409 and "already resolved" in twice.json()["detail"]
    stored = queries.find_alarm(engine, "pd-0001/12-3")
    assert (stored.state, stored.resolution, stored.resolved_by) == ("resolved", "incident", "ann")


def test_bad_input_is_422_and_changes_nothing(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    client.post(f"{ALARM}/ack", headers=headers)
    bad_class = client.post(f"{ALARM}/resolve", headers=headers, json={"resolution": "maybe"})
    assert bad_class.status_code == 422 and "resolution" in bad_class.json()["problems"][0]
    too_long = client.post(
        f"{ALARM}/resolve", headers=headers, json={"resolution": "false", "note": "x" * 2001}
    )
    assert too_long.status_code == 422
    assert client.post(f"{ALARM}/resolve", headers=headers).status_code == 422
    assert queries.find_alarm(engine, "pd-0001/12-3").state == "acknowledged"
    assert client.get("/api/v1/alarms", headers=headers, params={"state": "maybe"}).status_code == 422
    assert client.get("/api/v1/alarms", headers=headers, params={"limit": 0}).status_code == 422


def test_resolving_before_acknowledging_is_409(client, engine, raised) -> None:
    refused = client.post(
        f"{ALARM}/resolve", headers=bearer(engine, "ann", "dispatcher"), json={"resolution": "false"}
    )
    assert refused.status_code == 409 and "acknowledge it first" in refused.json()["detail"]
    assert queries.find_alarm(engine, "pd-0001/12-3").state == "received"


def test_an_unknown_alarm_is_404(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    for ref in ("pd-0001/99-9", "99999", "99999999999999999999", "nonsense"):
        missing = client.get(f"/api/v1/alarms/{ref}", headers=headers)
        assert missing.status_code == 404 and f"there is no alarm {ref}" in missing.json()["detail"], ref
    for method, leaf in (
        ("get", "location"),
        ("get", "trail"),
        ("get", "timeline"),
        ("post", "ack"),
        ("post", "locate"),
    ):
        assert (
            client.request(method, f"/api/v1/alarms/pd-0001/99-9/{leaf}", headers=headers).status_code == 404
        )
    assert _events(engine, "location_viewed") == []


def test_a_technician_handles_test_alarms_only(client, engine, ingest, raised) -> None:
    ingest.handle(topic("pd-0002", "alarm"), alarm("4-1", test=True))
    technician = bearer(engine, "tom", "technician")
    acked = client.post("/api/v1/alarms/pd-0002/4-1/ack", headers=technician)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "tom"
    done = client.post("/api/v1/alarms/pd-0002/4-1/resolve", headers=technician, json={"resolution": "test"})
    assert done.status_code == 200 and done.json()["resolved_by"] == "tom"
    refused = client.post(f"{ALARM}/ack", headers=technician)
    assert refused.status_code == 403 and "not a test alarm" in refused.json()["detail"]
    police = client.post(f"{ALARM}/ack", headers=bearer(engine, "ivan", "police_it"))
    assert police.status_code == 403
    assert client.post(f"{ALARM}/locate", headers=technician).status_code == 403
    assert queries.find_alarm(engine, "pd-0001/12-3").state == "received"


def test_locate_queues_a_command_for_the_pendant(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    answer = client.post(f"{ALARM}/locate", headers=headers)
    assert answer.status_code == 202
    sent = answer.json()
    assert sent["cmd"] == "locate" and sent["requested_by"] == "ann" and sent["answered_at"] is None
    alarm_pk = queries.find_alarm(engine, "pd-0001/12-3").id
    with Session(engine) as session:
        [row] = session.exec(select(Command))
        [queued] = session.exec(select(Outbound).where(Outbound.topic == "pendant/v1/pd-0001/cmd"))
    assert (row.command_id, row.alarm_pk, row.requested_by) == (sent["command_id"], alarm_pk, "ann")
    assert json.loads(queued.payload)["id"] == sent["command_id"]
    assert client.post(f"{ALARM}/locate", headers=bearer(engine, "ivan", "police_it")).status_code == 403


def test_locate_is_refused_once_the_alarm_is_resolved(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    client.post(f"{ALARM}/ack", headers=headers)
    client.post(f"{ALARM}/resolve", headers=headers, json={"resolution": "false"})
    refused = client.post(f"{ALARM}/locate", headers=headers)
    assert refused.status_code == 409 and "resolved" in refused.json()["detail"]
    with Session(engine) as session:
        assert list(session.exec(select(Command))) == []


def test_the_timeline_tells_the_alarm_in_order(client, engine, raised) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    client.get(f"{ALARM}/location", headers=headers)
    client.post(f"{ALARM}/ack", headers=headers)
    timeline = client.get(f"{ALARM}/timeline", headers=bearer(engine, "ivan", "police_it")).json()
    kinds = [e["kind"] for e in timeline]
    assert kinds[0] == "alarm_received" and kinds[-2:] == ["location_viewed", "alarm_acknowledged"]
    assert [e["seq"] for e in timeline] == sorted(e["seq"] for e in timeline)
    assert timeline[-1]["actor"] == "ann" and timeline[-2]["data"]["via"] == "api"
    assert "52.37" not in json.dumps(timeline)


def test_the_pendants_fallback_report_is_shown(client, engine, raised) -> None:
    report = {
        "alarm_id": "12-3",
        "sms": ["+31612345678"],
        "sms_failed": [],
        "calls": 2,
        "answered": "112",
        "call_s": 95,
        "rounds": 1,
    }
    with session_scope(engine) as session:
        stored = session.get(Alarm, queries.find_alarm(engine, "pd-0001/12-3").id)
        stored.fallback, stored.fallback_at = report, stored.received_at
        session.add(stored)
    shown = client.get(ALARM, headers=bearer(engine, "ann", "dispatcher")).json()
    assert shown["fallback"] == {
        "sms": ["+31612345678"],
        "sms_failed": [],
        "calls": 2,
        "answered": "112",
        "call_s": 95,
        "rounds": 1,
    }
    assert shown["fallback_at"] == shown["received_at"]
