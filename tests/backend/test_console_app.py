"""The console's pages over HTTP (FastAPI's TestClient, both databases): logging in, lock-out, CSRF,
sessions that end, who may see what, and clear answers to bad input with nothing changed.
What only a browser can show (live updates, the map, the alert) is tested in tests/e2e."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from backend_samples import alarm, topic
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from pendant_backend import configs, users
from pendant_backend.console.auth import safe_next
from pendant_backend.db import session_scope
from pendant_backend.ingest import Ingest
from pendant_backend.models import Alarm, AuditEvent, WebSession, utc_now
from pendant_backend.settings import Settings
from pendant_backend.web import create_app

from support import PASSWORD, add_account


@pytest.fixture
def app_client(engine, pendant_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(engine, pendant_settings), follow_redirects=False) as client:
        yield client


@pytest.fixture
def alarm_pk(engine, ingest: Ingest) -> int:
    ingest.handle(topic("pd-0001", "alarm"), alarm("7-1"))
    with Session(engine) as session:
        return session.exec(select(Alarm.id).where(Alarm.alarm_id == "7-1")).one()


def _hidden(html: str, name: str = "csrf_token") -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


def _log_in(client: TestClient, username: str, password: str = PASSWORD) -> object:
    form = client.get("/login")
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": _hidden(form.text)}
    )


def _csrf(client: TestClient) -> str:
    page = client.get("/account/password")
    return _hidden(page.text)


def _events(engine, kind: str) -> list[AuditEvent]:  # noqa: ANN001
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == kind)))


def _state(engine, pk: int) -> tuple[str, str | None]:  # noqa: ANN001
    with Session(engine) as session:
        stored = session.get(Alarm, pk)
        return stored.state, stored.acknowledged_by


def test_pages_need_a_login_and_come_back_after_it(engine, app_client: TestClient) -> None:
    answer = app_client.get("/console", headers={"Accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/console"
    assert app_client.get("/console/whoami").status_code == 401
    add_account(engine, "dana", "dispatcher")
    form = app_client.get("/login?next=/fleet")
    answer = app_client.post(
        "/login",
        data={
            "username": "dana",
            "password": PASSWORD,
            "csrf_token": _hidden(form.text),
            "next": _hidden(form.text, "next"),
        },
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/fleet")
    assert app_client.get("/console/whoami").json()["username"] == "dana"


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        (None, "/"),
        ("/fleet?x=1", "/fleet?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil", "/"),
    ],
)
def test_after_login_only_paths_on_this_site(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_a_wrong_password_is_refused_and_the_fifth_locks_the_account(engine, app_client: TestClient) -> None:
    add_account(engine, "dana", "dispatcher")
    for _ in range(4):
        answer = _log_in(app_client, "dana", "not the password at all")
        assert answer.status_code == 401
        assert "Wrong username or password." in answer.text
    answer = _log_in(app_client, "dana", "not the password at all")
    assert answer.status_code == 401
    assert "locked for 15 minutes" in answer.text
    # Locked: even the right password is refused, and no session starts.
    answer = _log_in(app_client, "dana")
    assert answer.status_code == 401
    assert "the account is locked until" in answer.text
    assert app_client.get("/console/whoami").status_code == 401
    assert [json.loads(e.body)["data"]["username"] for e in _events(engine, "account_locked")] == ["dana"]
    # An administrator's reset unlocks it (with a one-time password that must be replaced).
    one_time = users.reset_password(engine, username="dana", actor="test")
    answer = _log_in(app_client, "dana", one_time)
    assert (answer.status_code, answer.headers["location"]) == (303, "/account/password")


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(app_client: TestClient) -> None:
    answer = _log_in(app_client, "nobody", "whatever it is")
    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text


def test_a_login_form_without_its_csrf_token_is_refused(engine, app_client: TestClient) -> None:
    add_account(engine, "dana", "dispatcher")
    app_client.get("/login")
    answer = app_client.post(
        "/login", data={"username": "dana", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert answer.status_code == 403
    assert "did not come from this console" in answer.text
    assert app_client.get("/console/whoami").status_code == 401


def test_a_one_time_password_must_be_replaced_before_anything_else(engine, app_client: TestClient) -> None:
    _, one_time = users.add_user(engine, username="newbie", role_names=["dispatcher"], actor="test")
    assert _log_in(app_client, "newbie", one_time).headers["location"] == "/account/password"
    answer = app_client.get("/console", headers={"Accept": "text/html"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/account/password")
    assert app_client.get("/console/queue").status_code == 403
    csrf = _csrf(app_client)
    answer = app_client.post(
        "/account/password", data={"current": one_time, "new": "short", "repeat": "short", "csrf_token": csrf}
    )
    assert answer.status_code == 422
    new = "my own long password"
    answer = app_client.post(
        "/account/password", data={"current": one_time, "new": new, "repeat": new, "csrf_token": csrf}
    )
    assert answer.status_code == 303
    assert app_client.get("/console").status_code == 200


def test_a_state_change_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    engine, app_client: TestClient, alarm_pk: int, caplog: pytest.LogCaptureFixture
) -> None:
    add_account(engine, "dana", "dispatcher")
    _log_in(app_client, "dana")
    assert app_client.post(f"/console/alarms/{alarm_pk}/ack").status_code == 403
    answer = app_client.post(f"/console/alarms/{alarm_pk}/ack", headers={"X-CSRF-Token": "forged"})
    assert answer.status_code == 403
    assert "CSRF token" in answer.json()["detail"]
    assert "refused POST" in caplog.text
    assert _state(engine, alarm_pk) == ("received", None)
    answer = app_client.post(f"/console/alarms/{alarm_pk}/ack", headers={"X-CSRF-Token": _csrf(app_client)})
    assert answer.status_code == 200
    assert _state(engine, alarm_pk) == ("acknowledged", "dana")


def test_a_session_past_its_lifetime_or_idle_too_long_is_over(engine, app_client: TestClient) -> None:
    add_account(engine, "dana", "dispatcher")
    _log_in(app_client, "dana")
    assert app_client.get("/console").status_code == 200
    with session_scope(engine) as session:
        row = session.exec(select(WebSession)).one()
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.add(row)
    answer = app_client.get("/console", headers={"Accept": "text/html"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert app_client.get("/console/whoami").json()["detail"] == "your session has ended: log in again"

    _log_in(app_client, "dana")
    with session_scope(engine) as session:
        row = session.exec(
            select(WebSession).where(WebSession.ended_at.is_(None), WebSession.expires_at > utc_now())
        ).one()
        row.last_seen_at = utc_now() - timedelta(hours=2)  # idle longer than session_idle_min
        session.add(row)
    assert app_client.get("/console/whoami").status_code == 401


def test_logging_out_ends_the_session(engine, app_client: TestClient) -> None:
    add_account(engine, "dana", "dispatcher")
    _log_in(app_client, "dana")
    csrf = _csrf(app_client)
    cookie = app_client.cookies.get("pendant_session")
    assert app_client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    app_client.cookies.set("pendant_session", cookie)  # even the old cookie, replayed
    assert app_client.get("/console/whoami").status_code == 401


@pytest.mark.parametrize(
    ("role", "status"), [("dispatcher", 200), ("supervisor", 200), ("police_it", 403), ("technician", 403)]
)
def test_only_dispatchers_and_supervisors_load_a_location_and_each_load_is_audited(
    engine, app_client: TestClient, alarm_pk: int, role: str, status: int
) -> None:
    add_account(engine, "someone", role)
    _log_in(app_client, "someone")
    answer = app_client.get(f"/console/alarms/{alarm_pk}/location.json")
    assert answer.status_code == status
    viewed = [(e.actor, json.loads(e.body)["data"]["via"]) for e in _events(engine, "location_viewed")]
    if status == 200:
        assert answer.json()["position"]["lat"] == pytest.approx(52.373101)
        assert viewed == [("someone", "console")]
    else:
        assert "dispatcher" in answer.json()["detail"]
        assert viewed == []


def test_police_it_sees_the_fleet_and_the_queue_without_positions(
    engine, app_client: TestClient, alarm_pk: int
) -> None:
    add_account(engine, "ivo", "police_it")
    _log_in(app_client, "ivo")
    queue = app_client.get("/console/queue")
    assert queue.status_code == 200
    assert "pd-0001" in queue.text and "52.37" not in queue.text
    details = app_client.get(f"/console/alarms/{alarm_pk}/details")
    assert "position withheld" in details.text and "52.37" not in details.text
    assert "Acknowledge" not in details.text
    assert app_client.get("/fleet").status_code == 200


def test_the_fleet_and_a_pendants_page_show_its_supervision(engine, app_client: TestClient, devices) -> None:
    configs.set_config(engine, scope="pd-0002", changes={"heartbeat_s": 1800}, author="it")
    add_account(engine, "ivo", "police_it")
    _log_in(app_client, "ivo")
    fleet = app_client.get("/fleet").text
    assert ">SP4</span>" in fleet and ">SP3 (pending)</span>" in fleet
    page = app_client.get("/fleet/devices/pd-0001").text
    assert "SP4: a heartbeat every 180 s · late after 240 s, offline after 600 s of silence" in page
    waiting = app_client.get("/fleet/devices/pd-0002").text
    assert "SP3: a heartbeat every 1800 s from its next heartbeat; until then every 180 s" in waiting


def test_a_technician_is_offered_no_alarm_and_no_location(
    engine, app_client: TestClient, alarm_pk: int
) -> None:
    add_account(engine, "tom", "technician")
    _log_in(app_client, "tom")
    assert app_client.get("/").headers["location"] == "/fleet"
    fleet = app_client.get("/fleet")
    assert fleet.status_code == 200
    assert "/console/alarms" not in fleet.text and ">Alarms<" not in fleet.text
    assert app_client.get(f"/console/alarms/{alarm_pk}", headers={"Accept": "text/html"}).status_code == 403


def test_unknown_ids_and_malformed_fields_get_clear_answers_and_change_nothing(
    engine, app_client: TestClient, alarm_pk: int
) -> None:
    add_account(engine, "dana", "dispatcher")
    _log_in(app_client, "dana")
    csrf = {"X-CSRF-Token": _csrf(app_client)}
    assert app_client.get("/console/alarms/999999/details").status_code == 404
    page = app_client.get("/console/alarms/999999", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "no alarm #999999" in page.text
    assert app_client.get("/console/alarms/not-a-number").status_code == 422
    assert app_client.get("/console/alarms/99999999999999999999/details").status_code == 422
    assert app_client.get("/fleet/devices/pd-9999").status_code == 404
    assert app_client.get("/fleet/table?connectivity=sideways").status_code == 422
    assert app_client.get("/fleet/table?connectivity=&flag=").status_code == 200  # "any"
    assert app_client.post(f"/console/alarms/{alarm_pk}/ack", headers=csrf).status_code == 200
    answer = app_client.post(
        f"/console/alarms/{alarm_pk}/resolve", data={"resolution": "made_up", "note": ""}, headers=csrf
    )
    assert answer.status_code == 422
    assert "resolution" in " ".join(answer.json()["problems"])
    assert _state(engine, alarm_pk) == ("acknowledged", "dana")


def test_front_end_files_come_from_the_npm_packages_and_nothing_else(engine, app_client: TestClient) -> None:
    for name, kind in (
        ("htmx.min.js", "text/javascript"),
        ("leaflet.css", "text/css"),
        ("countries-50m.json", "application/json"),
    ):
        answer = app_client.get(f"/vendor/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
    assert app_client.get("/vendor/../package.json").status_code == 404
    assert app_client.get("/vendor/leaflet/dist/leaflet-src.js").status_code == 404
    add_account(engine, "dana", "dispatcher")
    _log_in(app_client, "dana")
    html = app_client.get("/console").text
    # Nothing from another host: a police network is offline.
    assert not re.search(r'(src|href)="(https?:)?//', html)
