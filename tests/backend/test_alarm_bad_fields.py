"""An alarm is never thrown away for one bad field (both databases): a field that breaks the protocol is
set aside (kept raw in the payload, flagged), the alarm stored, acked and the reason counted; the console,
the API, the webhook and `pendant alarms show` say which field not to trust; a resend with a newer fix
adds it to the trail; only an alarm that cannot be acked (not JSON, not an object, no usable `alarm_id`)
is still rejected. The last test does it through the real broker and the backend service."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import bearer
from backend_samples import EXAMPLES, alarm, example, topic
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, select

from pendant_backend import alarms, audit, payloads
from pendant_backend.db import alembic_config, make_engine
from pendant_backend.ingest import Ingest
from pendant_backend.models import Alarm, Notification
from pendant_backend.models.alarms import SET_ASIDE_FLAGS
from pendant_backend.settings import Settings
from pendant_backend.web import create_app

from support import PASSWORD, add_account, run_cli

ALARM_TOPIC = topic("pd-0001", "alarm")
ACK_TOPIC = topic("pd-0001", "alarm/ack")
SET_ASIDE_DIR = EXAMPLES / "set-aside"
INVALID_DIR = EXAMPLES / "invalid"

# Each example of docs/protocol-examples/set-aside/: the flag it sets and the counter it counts.
EXAMPLE_FLAGS = {
    "alarm-bad-accuracy.json": ("location_invalid", "set_aside:loc.acc:out_of_range"),
    "alarm-bad-cell.json": ("cell_invalid", "set_aside:cell.mcc:bad_type"),
    "alarm-battery-1000.json": ("battery_invalid", "set_aside:batt:out_of_range"),
    "alarm-fix-time-in-ms.json": ("location_time_invalid", "set_aside:loc.tst:out_of_range"),
    "alarm-kind-not-a-string.json": ("kind_invalid", "set_aside:kind:bad_type"),
    "alarm-lat-200.json": ("location_invalid", "set_aside:loc.lat:out_of_range"),
    "alarm-negative-battery.json": ("battery_invalid", "set_aside:batt:out_of_range"),
    "alarm-test-not-a-flag.json": ("test_flag_invalid", "set_aside:test:bad_type"),
    "alarm-time-in-ms.json": ("time_invalid", "set_aside:tst:out_of_range"),
    "alarm-unknown-kind.json": ("kind_invalid", "set_aside:kind:unknown_kind"),
}


def stored_alarms(engine) -> list[Alarm]:  # noqa: ANN001
    with Session(engine) as session:
        return list(session.exec(select(Alarm).order_by(Alarm.id)))


def sent(name: str) -> bytes:
    return (SET_ASIDE_DIR / name).read_bytes().rstrip(b"\n")


def test_every_set_aside_example_is_covered() -> None:
    assert {p.name for p in SET_ASIDE_DIR.glob("*.json")} == set(EXAMPLE_FLAGS)
    assert {flag for flag, _ in EXAMPLE_FLAGS.values()} == set(SET_ASIDE_FLAGS.values())


# ---- ingest ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLE_FLAGS))
def test_an_alarm_with_a_bad_field_is_stored_flagged_acked_and_counted(
    name: str, ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    flag, counter = EXAMPLE_FLAGS[name]
    payload = sent(name)
    alarm_id = json.loads(payload)["alarm_id"]
    with caplog.at_level(logging.INFO, logger="pendant_backend.ingest"):
        outcome = ingest.handle(ALARM_TOPIC, payload)
    assert outcome.new and outcome.invalid is None
    assert [(r.topic, json.loads(r.payload)) for r in outcome.replies] == [
        (ACK_TOPIC, {"alarm_id": alarm_id, "state": "received"})
    ]
    [stored] = stored_alarms(engine)
    assert stored.alarm_id == alarm_id and stored.state == "received"
    assert stored.set_aside == [flag]
    assert {f for f in SET_ASIDE_FLAGS.values() if getattr(stored, f)} == {flag}
    # The broken field is kept only as it was sent.
    assert stored.payload == payload.decode()
    assert ingest.invalid_counts == {counter: 1}
    path = counter.split(":")[1]
    assert f"set aside: {path} (" in caplog.text and f"ALARM pd-0001/{alarm_id}" in caplog.text
    assert audit.verify_database(engine) == []


def test_the_fields_set_aside_are_left_out_and_the_rest_kept(ingest: Ingest, engine) -> None:
    for name in ("alarm-lat-200.json", "alarm-time-in-ms.json", "alarm-battery-1000.json"):
        ingest.handle(ALARM_TOPIC, sent(name))
    ingest.handle(ALARM_TOPIC, sent("alarm-fix-time-in-ms.json"))
    lat_200, time_ms, batt_1000, fix_time_ms = stored_alarms(engine)
    assert (lat_200.lat, lat_200.acc, lat_200.batt, lat_200.device_time) == (None, None, 87, 1764403200)
    assert (time_ms.device_time, time_ms.lat, time_ms.batt) == (None, 52.373101, 87)
    assert time_ms.raised_at == time_ms.received_at  # the time of receipt stands in
    assert (batt_1000.batt, batt_1000.device_time) == (None, 1764403200)
    # A fix whose own time is broken is still a fix, without its time.
    assert (fix_time_ms.lat, fix_time_ms.acc, fix_time_ms.loc_time) == (52.373101, 8, None)
    assert [p.loc_time for p in alarms.trail(engine, alarm_pk=fix_time_ms.id)] == [None]
    assert alarms.trail(engine, alarm_pk=lat_200.id) == []


def test_the_log_never_holds_the_position_set_aside(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        ingest.handle(ALARM_TOPIC, sent("alarm-lat-200.json"))
        ingest.handle(ALARM_TOPIC, sent("alarm-bad-accuracy.json"))
    assert "loc.lat (out_of_range)" in caplog.text and "loc.acc (out_of_range)" in caplog.text
    for secret in ("200", "4.89", "52.37"):
        assert secret not in caplog.text


def test_a_resend_of_an_alarm_with_a_bad_field_is_one_alarm_counted_once(ingest: Ingest, engine) -> None:
    first = ingest.handle(ALARM_TOPIC, sent("alarm-time-in-ms.json"))
    again = ingest.handle(ALARM_TOPIC, sent("alarm-time-in-ms.json"))
    assert first.new and not again.new and first.replies == again.replies
    [stored] = stored_alarms(engine)
    assert stored.resends == 1
    assert ingest.invalid_counts == {"set_aside:tst:out_of_range": 1}


def test_a_doubtful_kind_is_a_real_alarm_dispatched_and_escalated(ingest: Ingest, engine, clock) -> None:
    # `"kind":1, "test":true`: what was pressed cannot be read, so it is never taken for a test.
    ingest.handle(ALARM_TOPIC, sent("alarm-kind-not-a-string.json"))
    [stored] = stored_alarms(engine)
    assert (stored.kind, stored.test, stored.kind_invalid) == ("unknown", False, True)
    with Session(engine) as session:
        [hook] = [json.loads(n.body) for n in session.exec(select(Notification))]
    assert hook["alarm"]["test"] is False and hook["alarm"]["set_aside"] == ["kind_invalid"]
    escalated = alarms.escalate_due(engine, now=clock.advance(120), after_s=60, max_count=0)
    assert [a.id for a in escalated] == [stored.id]


def test_several_bad_fields_at_once_are_each_flagged_and_counted(ingest: Ingest, engine) -> None:
    outcome = ingest.handle(ALARM_TOPIC, alarm("5-1", tst=1764403200123, batt=-5, cell=[], test="yes"))
    assert outcome.new and outcome.replies
    [stored] = stored_alarms(engine)
    assert stored.set_aside == ["cell_invalid", "time_invalid", "battery_invalid", "test_flag_invalid"]
    assert (stored.lat, stored.kind, stored.test) == (52.373101, "panic", False)
    assert sorted(ingest.invalid_counts) == [
        "set_aside:batt:out_of_range",
        "set_aside:cell:bad_type",
        "set_aside:test:bad_type",
        "set_aside:tst:out_of_range",
    ]


def test_an_alarm_with_a_bad_field_fills_in_its_placeholder_with_its_flags(ingest: Ingest, engine) -> None:
    report = example("events/evt-fallback.json", alarm_id="12-9")
    ingest.handle(topic("pd-0001", "evt"), report)
    assert ingest.handle(ALARM_TOPIC, sent("alarm-battery-1000.json")).new
    [stored] = stored_alarms(engine)
    assert (stored.alarm_id, stored.kind, stored.battery_invalid) == ("12-9", "panic", True)
    assert stored.fallback is not None
    assert audit.verify_database(engine) == []


@pytest.mark.parametrize("name", sorted(p.name for p in INVALID_DIR.glob("*.json")))
def test_what_cannot_be_acked_is_still_rejected(name: str, ingest: Ingest, engine) -> None:
    # No usable alarm_id (or nothing to read): no ack could name it, and no resend could be told apart.
    outcome = ingest.handle(ALARM_TOPIC, (INVALID_DIR / name).read_bytes())
    assert outcome.invalid in payloads.REASONS and outcome.replies == ()
    assert not any(key.startswith("set_aside") for key in ingest.invalid_counts)
    assert stored_alarms(engine) == []


# ---- a resend with a newer fix ---------------------------------------------------------------------

MOVED = {"lat": 52.374, "lon": 4.8931, "acc": 12, "tst": 1764403260, "src": "gnss"}


def trail(engine, stored: Alarm) -> list[tuple[str, float, int]]:  # noqa: ANN001
    return [(p.source, p.lat, p.acc) for p in alarms.trail(engine, alarm_pk=stored.id)]


def test_a_resend_with_another_fix_adds_it_to_the_trail_once(
    ingest: Ingest, engine, clock, caplog: pytest.LogCaptureFixture
) -> None:
    first = ingest.handle(ALARM_TOPIC, alarm())
    clock.advance(30)
    with caplog.at_level(logging.INFO, logger="pendant_backend.ingest"):
        moved = ingest.handle(ALARM_TOPIC, alarm(loc=MOVED))
    assert first.new and not moved.new and moved.replies == first.replies
    assert "its new fix added to the trail" in caplog.text and "52.374" not in caplog.text
    ingest.handle(ALARM_TOPIC, alarm(loc=MOVED))  # the same copy again
    ingest.handle(ALARM_TOPIC, alarm())  # the first copy again
    [stored] = stored_alarms(engine)
    assert stored.resends == 3
    # The alarm keeps its first fix; the new one is on its trail, once.
    assert (stored.lat, stored.acc) == (52.373101, 8)
    assert trail(engine, stored) == [("alarm", 52.373101, 8), ("resend", 52.374, 12)]
    assert audit.verify_database(engine) == []


def test_a_resend_with_a_valid_fix_after_one_set_aside_adds_it_to_the_trail(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, alarm("12-4", loc={**MOVED, "lat": 200}))
    ingest.handle(ALARM_TOPIC, alarm("12-4", loc=MOVED))
    [stored] = stored_alarms(engine)
    assert stored.location_invalid and stored.lat is None and stored.resends == 1
    assert trail(engine, stored) == [("resend", 52.374, 12)]


# ---- what people see -------------------------------------------------------------------------------


@pytest.fixture
def app_client(engine, pendant_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(engine, pendant_settings), follow_redirects=False) as client:
        yield client


def _log_in(client: TestClient, engine, username: str, role: str) -> None:  # noqa: ANN001
    add_account(engine, username, role)
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303


@pytest.mark.parametrize("role", ["dispatcher", "police_it"])
def test_the_console_says_plainly_which_field_not_to_trust(
    role: str, app_client: TestClient, engine, ingest: Ingest
) -> None:
    ingest.handle(ALARM_TOPIC, sent("alarm-lat-200.json"))
    ingest.handle(ALARM_TOPIC, alarm("5-1", tst=1764403200123, batt=1000))
    ingest.handle(ALARM_TOPIC, alarm("5-2"))
    lat_200, time_and_batt, whole = stored_alarms(engine)
    _log_in(app_client, engine, "someone", role)
    queue = app_client.get("/console/queue").text
    assert queue.count("LOCATION INVALID") == 1 and queue.count("TIME INVALID") == 1
    assert "BATTERY INVALID" in queue and "battery invalid" in queue
    assert f"Alarm {lat_200.ref}, received, location invalid" in queue
    assert "Location invalid · No position" in queue
    details = app_client.get(f"/console/alarms/{lat_200.id}/details").text
    assert "Location invalid: the position the pendant sent is not valid" in details
    details = app_client.get(f"/console/alarms/{time_and_batt.id}/details").text
    assert "Time invalid: the pendant&#39;s time of the press is not valid" in details
    assert "Battery invalid: the battery level the pendant sent is not valid" in details
    assert "<strong>time invalid</strong>" in details
    assert "Do not trust" not in app_client.get(f"/console/alarms/{whole.id}/details").text
    for page in (queue, details):
        assert "4.89" not in page


def test_the_api_shows_the_flags(engine, pendant_settings: Settings, ingest: Ingest) -> None:
    ingest.handle(ALARM_TOPIC, sent("alarm-fix-time-in-ms.json"))
    ingest.handle(ALARM_TOPIC, sent("alarm-unknown-kind.json"))
    with TestClient(create_app(engine, pendant_settings, console=False)) as client:
        reader = bearer(engine, "ivan", "police_it")
        fix_time = client.get("/api/v1/alarms/pd-0001/12-11", headers=reader).json()
        kind = client.get("/api/v1/alarms/pd-0001/12-7", headers=reader).json()
    assert fix_time["location_time_invalid"] is True and fix_time["location_invalid"] is False
    assert fix_time["set_aside"] == ["location_time_invalid"] and fix_time["location_kind"] == "gnss"
    assert (kind["kind"], kind["kind_invalid"], kind["set_aside"]) == ("unknown", True, ["kind_invalid"])
    assert "payload" not in kind and "party" not in json.dumps(kind)


def test_alarms_show_names_the_fields_set_aside(pendant_settings: Settings, ingest: Ingest) -> None:
    ingest.handle(ALARM_TOPIC, sent("alarm-lat-200.json"))
    ingest.handle(ALARM_TOPIC, alarm("5-1"))
    shown = run_cli(pendant_settings, "alarms", "show", "pd-0001/12-4").output
    assert re.search(r"^set_aside: +location invalid$", shown, re.MULTILINE), shown
    assert "4.89" not in shown
    data = json.loads(run_cli(pendant_settings, "alarms", "show", "pd-0001/12-4", "--json").output)
    assert data["set_aside"] == ["location_invalid"] and data["location_invalid"] is True
    whole = run_cli(pendant_settings, "alarms", "show", "pd-0001/5-1").output
    assert re.search(r"^set_aside: +-$", whole, re.MULTILINE), whole


# ---- the schema ------------------------------------------------------------------------------------


def _insert_row(connection, table: str, values: dict[str, object]) -> None:  # noqa: ANN001
    """A row of `table` as an older schema had it: `values`, and a plain value in every other NOT NULL
    column (so that the test does not restate each table of revision 0002)."""
    plain = {"INTEGER": 0, "BOOLEAN": 0, "BIGINT": 0, "FLOAT": 0.0, "JSON": "null", "DATETIME": "2026-01-01"}
    row = dict(values)
    for column in connection.execute(text(f"PRAGMA table_info({table})")).mappings():
        if column["notnull"] and not column["pk"] and column["name"] not in row:
            row[column["name"]] = plain.get(column["type"].split("(")[0], "")
    names = ", ".join(row)
    connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in row)})"), row)


def test_migration_0003_gives_earlier_alarms_no_flags_and_goes_back(tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    try:
        command.upgrade(alembic_config(engine), "0002")
        with engine.begin() as connection:
            _insert_row(connection, "devices", {"device_id": "pd-0001", "loan_state": "issued"})
            _insert_row(connection, "alarms", {"device_id": "pd-0001", "alarm_id": "1-1", "kind": "panic"})
        command.upgrade(alembic_config(engine), "0003")
        with engine.connect() as connection:
            row = connection.execute(text("SELECT * FROM alarms")).mappings().one()
        assert row["alarm_id"] == "1-1"
        assert {flag: row[flag] for flag in SET_ASIDE_FLAGS.values()} == dict.fromkeys(
            SET_ASIDE_FLAGS.values(), 0
        )
        command.downgrade(alembic_config(engine), "0002")
        with engine.connect() as connection:
            columns = set(connection.execute(text("SELECT * FROM alarms")).keys())
        assert "alarm_id" in columns and columns.isdisjoint(SET_ASIDE_FLAGS.values())
    finally:
        engine.dispose()


# ---- through the broker ----------------------------------------------------------------------------


@pytest.mark.broker
def test_a_pendant_gets_its_ack_for_alarms_with_bad_fields(broker, backend, provision, mqtt_client) -> None:
    """The issue's report, replayed on a device's account: `loc.lat` 200, `batt` -5 and 1000, `tst` in
    milliseconds. Each was PUBACKed and never acked before; each is now stored, flagged and acked."""
    pendant = mqtt_client(provision("pd-0001"))
    assert not pendant.subscribe(ACK_TOPIC).is_failure
    sends = {
        "20-1": alarm("20-1", loc={**MOVED, "lat": 200}),
        "20-2": alarm("20-2", batt=-5),
        "20-3": alarm("20-3", batt=1000),
        "20-4": alarm("20-4", tst=1764403200000),
    }
    for payload in sends.values():
        pendant.publish(ALARM_TOPIC, payload)
    acks = [json.loads(pendant.expect(ACK_TOPIC).payload) for _ in sends]
    assert sorted(a["alarm_id"] for a in acks) == sorted(sends)
    assert {a["state"] for a in acks} == {"received"}
    engine = make_engine(broker.settings.db_url)
    try:
        flags = {a.alarm_id: a.set_aside for a in stored_alarms(engine)}
    finally:
        engine.dispose()
    assert flags == {
        "20-1": ["location_invalid"],
        "20-2": ["battery_invalid"],
        "20-3": ["battery_invalid"],
        "20-4": ["time_invalid"],
    }
    assert backend.ingest.invalid_counts == {
        "set_aside:loc.lat:out_of_range": 1,
        "set_aside:batt:out_of_range": 2,
        "set_aside:tst:out_of_range": 1,
    }
