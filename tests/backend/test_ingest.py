"""Ingest on SQLite and PostgreSQL, without MQTT: store once, answer every time, the `sess` rule, id
collisions, unknown devices, and nothing valid dropped."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from pendant_backend import alarms, audit, chain, commands, health, payloads, queries
from pendant_backend.db import make_engine, session_scope
from pendant_backend.ingest import ROUTINE_BATT_ABOVE, ROUTINE_RECHECK_S, Ingest, will_is_stale
from pendant_backend.models import Alarm, AuditEvent, Command, Device, Heartbeat, Notification, as_utc
from pendant_backend.models.devices import RECHECK

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
ALARM = (EXAMPLES / "alarm.json").read_bytes().rstrip(b"\n")
ALARM_TOPIC = "pendant/v1/pd-0001/alarm"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def engine(engine):
    """The shared engine (both databases) with pd-0001 and pd-0002 registered."""
    with session_scope(engine) as session:
        session.add(Device(device_id="pd-0001", password_hash="x", loan_state="issued"))
        session.add(Device(device_id="pd-0002", password_hash="x", loan_state="issued"))
    return engine


@pytest.fixture
def ingest(engine) -> Ingest:
    return Ingest(engine, clock=lambda: NOW)


def stored_alarms(engine) -> list[Alarm]:
    with Session(engine) as session:
        return list(session.exec(select(Alarm)))


def alarm_payload(alarm_id: str, **changes: object) -> bytes:
    data = {**json.loads(ALARM), "alarm_id": alarm_id, **changes}
    return json.dumps(data, separators=(",", ":")).encode()


def test_alarm_is_stored_and_acked(ingest: Ingest, engine) -> None:
    outcome = ingest.handle(ALARM_TOPIC, ALARM)
    assert outcome.new and outcome.invalid is None
    [reply] = outcome.replies
    assert reply.topic == "pendant/v1/pd-0001/alarm/ack"
    assert reply.payload == (EXAMPLES / "alarm-ack.json").read_bytes().rstrip(b"\n")
    [alarm] = stored_alarms(engine)
    assert (alarm.device_id, alarm.alarm_id, alarm.kind, alarm.state) == (
        "pd-0001",
        "12-3",
        "panic",
        "received",
    )
    assert (alarm.lat, alarm.lon, alarm.acc, alarm.loc_time, alarm.batt) == (
        52.373101,
        4.892203,
        8,
        1764403190,
        87,
    )
    assert alarm.device_time == 1764403200 and alarm.test is False and alarm.cell is None
    assert json.loads(alarm.payload) == json.loads(ALARM)


def test_duplicate_is_stored_once_and_acked_again(ingest: Ingest, engine) -> None:
    first = ingest.handle(ALARM_TOPIC, ALARM)
    second = ingest.handle(ALARM_TOPIC, ALARM)
    third = ingest.handle(ALARM_TOPIC, ALARM)
    assert first.new and not second.new and not third.new
    assert first.replies == second.replies == third.replies
    [alarm] = stored_alarms(engine)
    assert alarm.resends == 2


def test_duplicate_is_acked_with_the_current_state(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    with session_scope(engine) as session:
        alarm = session.exec(select(Alarm)).one()
        alarm.state = "acknowledged"
        session.add(alarm)
    [reply] = ingest.handle(ALARM_TOPIC, ALARM).replies
    assert json.loads(reply.payload) == {"alarm_id": "12-3", "state": "acknowledged"}


def test_same_alarm_id_on_two_devices_are_two_alarms(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    ingest.handle("pendant/v1/pd-0002/alarm", ALARM)
    assert sorted(a.ref for a in stored_alarms(engine)) == ["pd-0001/12-3", "pd-0002/12-3"]


def test_alarm_without_fix_keeps_the_cell(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, (EXAMPLES / "alarm-no-fix.json").read_bytes())
    [alarm] = stored_alarms(engine)
    assert alarm.lat is None and alarm.device_time is None
    assert alarm.cell == {"mcc": 204, "mnc": 8, "lac": "0x2B5C", "cid": "0x01A2F30", "rat": "LTE"}
    # No pendant clock: the time of receipt stands in.
    assert alarm.raised_at == NOW


def test_unknown_device_gets_a_row_and_keeps_its_alarm(ingest: Ingest, engine) -> None:
    outcome = ingest.handle("pendant/v1/pd-0777/alarm", ALARM)
    assert outcome.new and outcome.replies
    with Session(engine) as session:
        device = session.get(Device, "pd-0777")
    assert device is not None and device.password_hash is None and device.first_seen_at is not None
    assert [a.ref for a in stored_alarms(engine)] == ["pd-0777/12-3"]
    # Stored, but counted and logged: the registry and the broker disagree.
    assert ingest.invalid_counts == {"unknown_device_alarm": 1}


@pytest.mark.parametrize("leaf", ["tele", "status", "evt", "cmd/res"])
def test_other_messages_of_an_unknown_device_are_rejected_and_counted(
    leaf: str, ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    examples = {
        "tele": "tele.json",
        "status": "status-online.json",
        "evt": "evt.json",
        "cmd/res": "cmd-res.json",
    }
    with caplog.at_level(logging.WARNING, logger="pendant_backend.ingest"):
        outcome = ingest.handle(f"pendant/v1/pd-0777/{leaf}", (EXAMPLES / examples[leaf]).read_bytes())
    assert outcome.invalid == "unknown_device"
    assert ingest.invalid_counts == {"unknown_device": 1}
    assert f"pendant/v1/pd-0777/{leaf}" in caplog.text and "unknown_device" in caplog.text
    with Session(engine) as session:
        assert session.get(Device, "pd-0777") is None


def test_a_reused_alarm_id_with_other_content_is_a_new_alarm(ingest: Ingest, engine) -> None:
    # A pendant that lost its state and outbox (re-flashed) may count its alarm ids from the start again.
    first = ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=1764403200))
    resend = ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=1764403200))
    reused = ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=1764999999))
    reused_again = ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=1764999999))
    assert first.new and not resend.new and reused.new and not reused_again.new
    alarms = sorted(stored_alarms(engine), key=lambda a: a.occurrence)
    assert [(a.ref, a.id_collision, a.resends) for a in alarms] == [
        ("pd-0001/1-1", False, 1),
        ("pd-0001/1-1#1", True, 1),
    ]
    # Both are acked under the id the pendant knows.
    assert json.loads(reused.replies[0].payload) == {"alarm_id": "1-1", "state": "received"}
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.kind == "alarm_received")).all()
    assert [json.loads(e.body)["data"]["id_collision"] for e in events] == [False, True]


def test_a_reused_alarm_id_of_another_kind_is_a_new_alarm(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=None, kind="panic"))
    assert ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=None, kind="power_off")).new
    assert len(stored_alarms(engine)) == 2


def test_the_log_line_names_the_alarm_but_not_the_position(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        ingest.handle(ALARM_TOPIC, ALARM)
        ingest.handle("pendant/v1/pd-0001/tele", (EXAMPLES / "tele.json").read_bytes())
        ingest.handle(
            "pendant/v1/pd-0001/evt",
            b'{"evt":"power_off","tst":1,"loc":{"lat":52.1,"lon":4.2,"acc":5,"tst":1,"src":"gnss"}}',
        )
    assert "ALARM pd-0001/12-3 panic" in caplog.text and "fix ±8 m" in caplog.text
    for secret in ("52.37", "4.89", "52.1", "4.2"):
        assert secret not in caplog.text


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "invalid").glob("*.json")))
def test_invalid_alarm_is_counted_logged_with_topic_and_not_acked(
    name: str, ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pendant_backend.ingest"):
        outcome = ingest.handle(ALARM_TOPIC, (EXAMPLES / "invalid" / name).read_bytes())
    assert outcome.invalid is not None and outcome.replies == ()
    assert ingest.invalid_counts == {outcome.invalid: 1}
    assert ALARM_TOPIC in caplog.text and outcome.invalid in caplog.text
    assert stored_alarms(engine) == []


def test_ingest_goes_on_after_invalid_messages(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, b"{not json")
    ingest.handle(ALARM_TOPIC, b"{not json either")
    ingest.handle("pendant/v1/pd-0001/nonsense", b"{}")
    assert ingest.handle(ALARM_TOPIC, ALARM).new
    assert ingest.invalid_counts == {"bad_json": 2, "unknown_topic": 1}


def test_birth_and_stale_will(ingest: Ingest, engine) -> None:
    def device() -> Device:
        with Session(engine) as session:
            return session.get(Device, "pd-0001")

    ingest.handle("pendant/v1/pd-0001/status", b'{"online":true,"boot":12,"sess":40,"fw":"0.1.0"}')
    assert (device().online, device().sess, device().boot, device().fw) == (True, 40, 12, "0.1.0")
    # The will of the previous connection arrives late: the device stays online.
    ingest.handle("pendant/v1/pd-0001/status", b'{"online":false,"boot":12,"sess":39}')
    assert device().online is True and device().sess == 40
    # The will of this connection: offline.
    ingest.handle("pendant/v1/pd-0001/status", b'{"online":false,"boot":12,"sess":40}')
    assert device().online is False
    ingest.handle("pendant/v1/pd-0001/status", b'{"online":true,"boot":13,"sess":41,"fw":"0.1.1"}')
    assert (device().online, device().sess, device().boot) == (True, 41, 13)


@pytest.mark.parametrize(
    ("last_birth", "will", "stale"), [(None, 5, False), (40, 39, True), (40, 40, False), (40, 41, False)]
)
def test_will_is_stale(last_birth: int | None, will: int, stale: bool) -> None:
    assert will_is_stale(last_birth, will) is stale


def test_heartbeat_is_stored(ingest: Ingest, engine) -> None:
    outcome = ingest.handle("pendant/v1/pd-0001/tele", (EXAMPLES / "tele.json").read_bytes())
    assert outcome.error is None and outcome.invalid is None and outcome.replies == ()
    beat = queries.latest_heartbeat(engine, "pd-0001")
    assert isinstance(beat, Heartbeat)
    assert (beat.batt, beat.mv, beat.rssi, beat.reg, beat.cfg, beat.heap) == (87, 3987, -71, "home", 3, 41216)


def test_events_and_command_results_are_accepted(ingest: Ingest) -> None:
    for leaf, name in (("evt", "evt.json"), ("cmd/res", "cmd-res.json")):
        outcome = ingest.handle(f"pendant/v1/pd-0001/{leaf}", (EXAMPLES / name).read_bytes())
        assert outcome.invalid is None and outcome.error is None


def test_storage_failure_on_an_alarm_raises(ingest: Ingest, engine) -> None:
    # The caller must leave the message on the broker, so the failure may not be swallowed.
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alarm_locations"))
        connection.execute(text("DROP TABLE alarms"))
    with pytest.raises(DBAPIError):
        ingest.handle(ALARM_TOPIC, ALARM)


def test_storage_failure_elsewhere_is_logged_and_counted(
    ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE heartbeats"))
    with caplog.at_level(logging.ERROR, logger="pendant_backend.ingest"):
        outcome = ingest.handle("pendant/v1/pd-0001/tele", (EXAMPLES / "tele.json").read_bytes())
    assert outcome.error is not None
    assert ingest.invalid_counts["handler_error"] == 1
    assert "pendant/v1/pd-0001/tele" in caplog.text
    assert ingest.handle(ALARM_TOPIC, ALARM).new


def test_database_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:  # SQLite only
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() > 0
    assert stat.S_IMODE(os.stat(tmp_path / "p.db").st_mode) == 0o600
    engine.dispose()


def test_bug_in_validation_drops_the_message_instead_of_stalling_ingest(
    ingest: Ingest, engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(payload: bytes):
        raise KeyError("bug")

    monkeypatch.setitem(payloads.PARSERS, "tele", broken)
    with caplog.at_level(logging.ERROR, logger="pendant_backend.ingest"):
        outcome = ingest.handle("pendant/v1/pd-0001/tele", b"{}")
    assert outcome.invalid == "validation_error" and outcome.replies == ()
    assert "pendant/v1/pd-0001/tele" in caplog.text
    assert ingest.handle(ALARM_TOPIC, ALARM).new


def test_times_after_2038_are_stored(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=2**32 - 1))
    [alarm] = stored_alarms(engine)
    assert alarm.device_time == 2**32 - 1


# ---- command results -----------------------------------------------------------------------------

CMD_RES_TOPIC = "pendant/v1/pd-0001/cmd/res"
LOCATE_RESULT = json.loads((EXAMPLES / "events" / "cmd-res-locate.json").read_bytes())


def locate_answer(command_id: str, **changes: object) -> bytes:
    return json.dumps({**LOCATE_RESULT, "id": command_id, **changes}, separators=(",", ":")).encode()


def test_a_locate_answer_is_stored_and_joins_the_trail(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    [alarm] = stored_alarms(engine)
    sent = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="ann", alarm_pk=alarm.id)
    outcome = ingest.handle(CMD_RES_TOPIC, locate_answer(sent.command_id))
    assert outcome.invalid is None and outcome.error is None
    [answered] = commands.for_alarm(engine, alarm.id)
    assert (answered.ok, answered.answered_at, answered.err) == (True, NOW, None)
    assert answered.result == {"loc": LOCATE_RESULT["loc"], "cell": None}
    assert [(p.source, p.lat) for p in alarms.trail(engine, alarm_pk=alarm.id)] == [
        ("alarm", 52.373101),
        ("locate", LOCATE_RESULT["loc"]["lat"]),
    ]
    with Session(engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.kind == "command_answered")).one()


def test_a_failed_command_keeps_its_reason(ingest: Ingest, engine) -> None:
    sent = commands.send(engine, device_id="pd-0001", cmd="selftest", requested_by="ann")
    payload = json.dumps({"id": sent.command_id, "ok": False, "err": "modem busy"}).encode()
    assert ingest.handle(CMD_RES_TOPIC, payload).error is None
    with Session(engine) as session:
        row = session.exec(select(Command)).one()
    assert (row.ok, row.err, row.result) == (False, "modem busy", None)


@pytest.mark.parametrize(
    "payload",
    [b'{"id":"c-81"}', b'{"id":"c-81","ok":false}', b'{"ok":true}', b'{"id":"c-81","ok":"yes"}', b"[]"],
)
def test_a_malformed_result_is_set_aside_and_ingest_goes_on(
    payload: bytes, ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    sent = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="ann")
    with caplog.at_level(logging.WARNING, logger="pendant_backend.ingest"):
        outcome = ingest.handle(CMD_RES_TOPIC, payload.replace(b"c-81", sent.command_id.encode()))
    assert outcome.invalid is not None and CMD_RES_TOPIC in caplog.text
    with Session(engine) as session:
        assert session.exec(select(Command)).one().answered_at is None
    assert ingest.handle(ALARM_TOPIC, ALARM).new


def test_a_locate_answer_with_a_broken_position_is_stored_without_a_trail_point(
    ingest: Ingest, engine
) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    [alarm] = stored_alarms(engine)
    sent = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="ann", alarm_pk=alarm.id)
    broken = {"lat": 200, "lon": 4.9, "acc": 8, "tst": None, "src": "gnss"}
    assert ingest.handle(CMD_RES_TOPIC, locate_answer(sent.command_id, loc=broken)).error is None
    assert commands.for_alarm(engine, alarm.id)[0].answered_at == NOW
    assert [p.source for p in alarms.trail(engine, alarm_pk=alarm.id)] == ["alarm"]


def test_an_answer_to_a_command_we_never_sent_changes_nothing(ingest: Ingest, engine) -> None:
    outcome = ingest.handle(CMD_RES_TOPIC, locate_answer("c-000000000000"))
    assert outcome.invalid is None and outcome.error is None
    with Session(engine) as session:
        assert session.exec(select(Command)).all() == []


# ---- fallback reports ------------------------------------------------------------------------------

EVT_TOPIC = "pendant/v1/pd-0001/evt"
FALLBACK = json.loads((EXAMPLES / "events" / "evt-fallback.json").read_bytes())


def fallback(**changes: object) -> bytes:
    return json.dumps({**FALLBACK, **changes}, separators=(",", ":")).encode()


def audit_bodies(engine, kind: str) -> list[dict]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.seq))
        return [json.loads(e.body) for e in rows]


def test_a_fallback_report_is_kept_on_its_alarm_and_audited_without_numbers(
    ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    with caplog.at_level(logging.INFO):
        outcome = ingest.handle(EVT_TOPIC, fallback())
    assert outcome.invalid is None and outcome.error is None
    [alarm] = stored_alarms(engine)
    assert alarm.fallback == {k: v for k, v in FALLBACK.items() if k not in ("evt", "alarm_id")}
    assert alarm.fallback_at == NOW
    [event] = audit_bodies(engine, "alarm_fallback")
    assert event["alarm_pk"] == alarm.id
    assert event["data"] == {
        "ref": "pd-0001/12-3",
        "report": chain.digest(alarm.fallback),
        "sms": 1,
        "sms_failed": 0,
        "calls": 2,
        "answered": True,
        "call_s": 95,
        "rounds": 1,
    }
    with Session(engine) as session:
        bodies = " ".join(e.body for e in session.exec(select(AuditEvent)))
    # The full number nowhere; the short one not as a value (its digits may occur in any hash).
    assert "+31612345678" not in bodies and "+31612345678" not in caplog.text
    assert '"112"' not in bodies and " 112" not in caplog.text
    assert "fallback of pd-0001/12-3: 1 SMS sent" in caplog.text
    assert audit.verify_database(engine) == []


def test_the_same_report_again_is_recorded_once_and_a_new_one_replaces_it(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    ingest.handle(EVT_TOPIC, fallback())
    ingest.handle(EVT_TOPIC, fallback())  # redelivered
    assert len(audit_bodies(engine, "alarm_fallback")) == 1
    ingest.handle(EVT_TOPIC, fallback(rounds=2, answered=None, call_s=0))  # after a reboot it went on
    [alarm] = stored_alarms(engine)
    assert (alarm.fallback["rounds"], alarm.fallback["answered"]) == (2, None)
    assert len(audit_bodies(engine, "alarm_fallback")) == 2


def test_a_report_before_its_alarm_queues_a_placeholder_that_the_alarm_fills_in(
    ingest: Ingest, engine
) -> None:
    assert ingest.handle(EVT_TOPIC, fallback()).error is None
    [placeholder] = stored_alarms(engine)
    assert (placeholder.ref, placeholder.state, placeholder.kind, placeholder.test) == (
        "pd-0001/12-3",
        "received",
        "unknown",
        False,
    )
    assert placeholder.fallback["sms"] == ["+31612345678"] and placeholder.lat is None
    # Dispatch hears of it at once: the pendant says an alarm exists.
    with Session(engine) as session:
        [hook] = [json.loads(n.body) for n in session.exec(select(Notification))]
    assert (hook["event"], hook["alarm"]["ref"], hook["placeholder"]) == ("alarm", "pd-0001/12-3", True)
    assert audit.verify_database(engine) == []

    outcome = ingest.handle(ALARM_TOPIC, ALARM)
    assert outcome.new
    assert json.loads(outcome.replies[0].payload) == {"alarm_id": "12-3", "state": "received"}
    [alarm] = stored_alarms(engine)
    assert alarm.id == placeholder.id and not alarm.id_collision
    assert (alarm.kind, alarm.lat, alarm.device_time, alarm.batt) == ("panic", 52.373101, 1764403200, 87)
    assert alarm.fallback == placeholder.fallback
    assert json.loads(alarm.payload) == json.loads(ALARM)
    assert [b["data"].get("completes") for b in audit_bodies(engine, "alarm_received")] == [None, True]
    assert audit.verify_database(engine) == []
    # A resend after that is a duplicate as usual.
    assert not ingest.handle(ALARM_TOPIC, ALARM).new


def test_a_placeholder_acknowledged_before_its_alarm_stays_acknowledged(ingest: Ingest, engine) -> None:
    ingest.handle(EVT_TOPIC, fallback())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=NOW)
    [reply] = ingest.handle(ALARM_TOPIC, ALARM).replies
    assert json.loads(reply.payload) == {"alarm_id": "12-3", "state": "acknowledged"}
    [alarm] = stored_alarms(engine)
    assert (alarm.state, alarm.acknowledged_by, alarm.kind) == ("acknowledged", "Ann", "panic")
    assert audit.verify_database(engine) == []


@pytest.mark.parametrize(
    "changes", [{"alarm_id": "nope"}, {"sms": "+31612345678"}, {"calls": -2}, {"answered": "x"}]
)
def test_a_malformed_fallback_report_is_counted_and_changes_no_alarm(
    changes: dict, ingest: Ingest, engine, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.handle(ALARM_TOPIC, ALARM)
    with caplog.at_level(logging.WARNING, logger="pendant_backend.ingest"):
        outcome = ingest.handle(EVT_TOPIC, fallback(**changes))
    assert outcome.error is None
    assert "ignored the fallback report from pd-0001" in caplog.text
    assert sum(ingest.invalid_counts.values()) == 1
    [alarm] = stored_alarms(engine)
    assert alarm.fallback is None and audit_bodies(engine, "alarm_fallback") == []


def test_a_report_goes_to_the_newest_alarm_with_its_id(ingest: Ingest, engine) -> None:
    ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=100))
    ingest.handle(ALARM_TOPIC, alarm_payload("1-1", tst=200))  # a reused id: 1-1#1
    ingest.handle(EVT_TOPIC, fallback(alarm_id="1-1"))
    refs = {a.ref: a.fallback is not None for a in stored_alarms(engine)}
    assert refs == {"pd-0001/1-1": False, "pd-0001/1-1#1": True}


# ---- batches ---------------------------------------------------------------------------------------

TELE_TOPIC = "pendant/v1/pd-0001/tele"


def heartbeat(up: int, **changes: object) -> bytes:
    data = {**json.loads((EXAMPLES / "tele.json").read_bytes()), "up": up, **changes}
    return json.dumps(data, separators=(",", ":")).encode()


def heartbeat_count(engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Heartbeat)).all())


def test_a_batch_stores_every_heartbeat_and_the_latest_state_in_arrival_order(ingest: Ingest, engine) -> None:
    outcomes = ingest.handle_batch(
        [
            (TELE_TOPIC, heartbeat(100, batt=90, fw="0.1.0")),
            ("pendant/v1/pd-0002/tele", heartbeat(100)),
            ("pendant/v1/pd-0001/status", b'{"online":true,"boot":12,"sess":40,"fw":"0.1.0"}'),
            (TELE_TOPIC, heartbeat(280, batt=80, fw="0.1.1")),
            ("pendant/v1/pd-0001/status", b'{"online":false,"boot":12,"sess":40}'),
        ]
    )
    assert all(o is not None and o.error is None and o.invalid is None for o in outcomes)
    assert heartbeat_count(engine) == 3
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
    # The last of each kind wins: the device's state after the batch is the state after its last message.
    assert (device.fw, device.online, device.last_heartbeat_at) == ("0.1.1", False, NOW)
    assert queries.latest_heartbeat(engine, "pd-0001").batt == 80


def test_a_redelivered_heartbeat_makes_no_second_row(ingest: Ingest, engine) -> None:
    first = ingest.handle_batch([(TELE_TOPIC, heartbeat(100)), (TELE_TOPIC, heartbeat(100))])
    again = ingest.handle_batch([(TELE_TOPIC, heartbeat(100))])
    one = ingest.handle(TELE_TOPIC, heartbeat(100))
    assert [o.duplicate for o in first] == [False, True]
    assert again[0].duplicate and one.duplicate
    assert heartbeat_count(engine) == 1


def test_a_batch_with_one_redelivered_heartbeat_stores_the_others(ingest: Ingest, engine) -> None:
    # On SQLite the bulk insert is tried first and undone when it skipped a row (pendant_backend.bulk):
    # the insert that answers its keys then tells the duplicate from the new ones.
    ingest.handle_batch([(TELE_TOPIC, heartbeat(100))])
    outcomes = ingest.handle_batch(
        [(TELE_TOPIC, heartbeat(300)), (TELE_TOPIC, heartbeat(100)), (TELE_TOPIC, heartbeat(400))]
    )
    assert [o.duplicate for o in outcomes] == [False, True, False]
    with Session(engine) as session:
        assert sorted(session.exec(select(Heartbeat.up))) == [100, 300, 400]
        assert session.get(Device, "pd-0001").heartbeat_up == 400


def stored_as(engine, table: str, device_id: str) -> tuple[object, ...]:
    """A row as the database holds it (text, numbers), read past SQLAlchemy's types, without its keys."""
    with engine.connect() as connection:
        row = connection.exec_driver_sql(f"SELECT * FROM {table} WHERE device_id = '{device_id}'").one()
        names = list(connection.exec_driver_sql(f"SELECT * FROM {table} LIMIT 0").keys())
    return tuple(value for name, value in zip(names, row, strict=True) if name not in ("id", "device_id"))


def test_the_lean_path_stores_what_a_single_heartbeat_stores(ingest: Ingest, engine) -> None:
    # The lean path's statements run through the driver (pendant_backend.bulk): its rows must hold the
    # same text and numbers as those SQLAlchemy writes (a time at a whole second, as NOW is, is where
    # the driver's own text for a datetime would differ).
    ingest.handle_batch([(TELE_TOPIC, heartbeat(100))])
    ingest.handle("pendant/v1/pd-0002/tele", heartbeat(100))
    assert stored_as(engine, "heartbeats", "pd-0001") == stored_as(engine, "heartbeats", "pd-0002")
    assert stored_as(engine, "devices", "pd-0001") == stored_as(engine, "devices", "pd-0002")


def readings(engine, device_id: str = "pd-0001") -> tuple[object, ...]:
    with Session(engine) as session:
        device = session.get(Device, device_id)
        return device.boot, device.heartbeat_up, device.fw, device.config_applied_rev


NEWER = heartbeat(500, boot=13, fw="0.2.0", cfg=5)
OLDER = (heartbeat(9000, boot=12, fw="0.1.0", cfg=4), heartbeat(400, boot=13, fw="0.1.9", cfg=4))


@pytest.mark.parametrize("older", OLDER, ids=["earlier-boot", "same-boot-earlier-up"])
@pytest.mark.parametrize("path", ["lean", "orm", "single"])
def test_a_heartbeat_stored_late_by_another_worker_puts_no_reading_back(
    engine, path: str, older: bytes
) -> None:
    # Two workers on the shared subscription: one stores the newer heartbeat first, the other the older
    # one a moment later. Both are history; the row keeps the newer one's boot, firmware and config.
    first, second = Ingest(engine, clock=lambda: NOW), Ingest(engine, clock=lambda: NOW)

    def store(ingest: Ingest, payload: bytes) -> None:
        if path == "single":
            outcome = ingest.handle(TELE_TOPIC, payload)
        else:
            # "orm": a device that sent more than heartbeats in the batch goes through the ORM.
            extra = (
                [("pendant/v1/pd-0001/evt", (EXAMPLES / "events" / "evt-low-battery.json").read_bytes())]
                if path == "orm"
                else []
            )
            outcome = ingest.handle_batch([*extra, (TELE_TOPIC, payload)])[-1]
        assert outcome is not None and outcome.error is None and not outcome.duplicate

    store(first, NEWER)
    assert readings(engine) == (13, 500, "0.2.0", 5)
    store(second, older)
    assert readings(engine) == (13, 500, "0.2.0", 5)
    assert heartbeat_count(engine) == 2
    with Session(engine) as session:
        assert as_utc(session.get(Device, "pd-0001").last_heartbeat_at) == NOW


def test_the_newest_heartbeat_of_a_batch_sets_the_readings_whatever_its_place(ingest: Ingest, engine) -> None:
    ingest.handle_batch([(TELE_TOPIC, NEWER), (TELE_TOPIC, OLDER[1])])
    assert readings(engine) == (13, 500, "0.2.0", 5)


def test_a_birth_of_another_boot_restarts_the_order_even_for_a_lower_boot(ingest: Ingest, engine) -> None:
    # A pendant whose flash was erased counts its boots from 1 again: its birth is the new start.
    ingest.handle(TELE_TOPIC, NEWER)
    ingest.handle("pendant/v1/pd-0001/status", b'{"online":true,"boot":1,"sess":1,"fw":"0.3.0"}')
    assert readings(engine) == (1, None, "0.3.0", 5)
    ingest.handle_batch([(TELE_TOPIC, heartbeat(180, boot=1, fw="0.3.0", cfg=6))])
    assert readings(engine) == (1, 180, "0.3.0", 6)
    # A reconnect within the same boot keeps the order it had.
    ingest.handle("pendant/v1/pd-0001/status", b'{"online":true,"boot":1,"sess":2,"fw":"0.3.0"}')
    ingest.handle(TELE_TOPIC, heartbeat(120, boot=1, fw="0.3.0", cfg=2))
    assert readings(engine) == (1, 180, "0.3.0", 6)


def test_heartbeats_alone_write_the_state_a_single_heartbeat_writes(ingest: Ingest, engine) -> None:
    # A device that sent only heartbeats in a batch takes the lean path (columns, not ORM rows): its
    # row must end as handle() leaves it, and an open alarm's trail must grow by one point per fix.
    assert ingest.handle(ALARM_TOPIC, ALARM).new
    outcomes = ingest.handle_batch(
        [
            (TELE_TOPIC, heartbeat(100)),
            ("pendant/v1/pd-0002/tele", heartbeat(100, loc=None)),
            (TELE_TOPIC, heartbeat(280, fw="0.1.1", cfg=4)),
        ]
    )
    assert [(o.device_id, o.duplicate) for o in outcomes] == [
        ("pd-0001", False),
        ("pd-0002", False),
        ("pd-0001", False),
    ]
    with Session(engine) as session:
        one, two = session.get(Device, "pd-0001"), session.get(Device, "pd-0002")
    # tele.json's fix is 190 s older than the heartbeat, by the pendant's clock.
    age = 1764403380 - 1764403190
    assert (one.last_heartbeat_at, one.last_seen_at, one.first_seen_at) == (NOW, NOW, NOW)
    assert (one.online, one.boot, one.fw, one.config_applied_rev) == (True, 12, "0.1.1", 4)
    assert one.last_fix_at == NOW - timedelta(seconds=age)
    assert (two.online, two.last_heartbeat_at, two.last_fix_at) == (True, NOW, None)
    [alarm] = stored_alarms(engine)
    assert [p.source for p in alarms.trail(engine, alarm_pk=alarm.id)] == ["alarm", "tele", "tele"]
    assert audit.verify_database(engine) == []


def well(engine, device_id: str = "pd-0001", **changes: object) -> None:
    """Make the device one whose health was all well at the last look, due again in an hour."""
    values = {
        "online": True,
        "connectivity": "online",
        "battery": "ok",
        "health_flags": 0,
        "boot": 12,
        "fw": "0.1.0",
        "config_applied_rev": 3,
        "health_due_at": NOW + timedelta(hours=1),
        **changes,
    }
    with session_scope(engine) as session:
        device = session.get(Device, device_id)
        for name, value in values.items():
            setattr(device, name, value)
        session.add(device)


def due_at(engine, device_id: str = "pd-0001") -> datetime | None:
    with Session(engine) as session:
        return as_utc(session.get(Device, device_id).health_due_at)


def test_a_routine_heartbeat_is_classified_within_2_minutes_and_the_rules_are_not_woken(engine) -> None:
    changed: list[str] = []
    ingest = Ingest(engine, clock=lambda: NOW, on_change=changed.append)
    well(engine)
    ingest.handle_batch([(TELE_TOPIC, heartbeat(100))])
    assert changed == []
    assert due_at(engine) == NOW + timedelta(seconds=ROUTINE_RECHECK_S)
    # Due sooner already (a heartbeat falling late, say): that moment stays.
    well(engine, health_due_at=NOW + timedelta(seconds=10))
    ingest.handle_batch([(TELE_TOPIC, heartbeat(280))])
    assert changed == [] and due_at(engine) == NOW + timedelta(seconds=10)
    # A flag a heartbeat cannot change (a test alarm overdue) does not make it less routine.
    well(engine, health_flags=health.flag_bits({"test_overdue": "yes", "config_drift": "yes"}))
    ingest.handle_batch([(TELE_TOPIC, heartbeat(460))])
    assert changed == [] and due_at(engine) == NOW + timedelta(seconds=ROUTINE_RECHECK_S)


@pytest.mark.parametrize(
    ("state", "beat"),
    [
        ({"connectivity": "late"}, {}),
        ({"online": False}, {}),
        ({"battery": "low"}, {}),
        ({"health_flags": health.flag_bits({"gnss_stale": "yes"})}, {}),
        ({"health_flags": health.flag_bits({"weak_signal": "yes"})}, {}),
        ({}, {"batt": ROUTINE_BATT_ABOVE}),
        ({}, {"boot": 13}),
        ({}, {"fw": "0.2.0"}),
        ({}, {"cfg": 4}),
        ({}, {"chg": True}),
        ({}, {"rssi": -106}),
        ({}, {"rssi": None}),
        ({}, {"out": 3}),
    ],
    ids=[
        "late",
        "offline",
        "battery-low",
        "gnss-stale",
        "weak-signal",
        "charge-at-50",
        "reboot",
        "new-firmware",
        "new-config",
        "on-the-charger",
        "weak-reading",
        "no-signal-reading",
        "outbox-backlog",
    ],
)
def test_any_other_heartbeat_is_classified_at_the_next_tick(engine, state: dict, beat: dict) -> None:
    changed: list[str] = []
    ingest = Ingest(engine, clock=lambda: NOW, on_change=changed.append)
    well(engine, **state)
    ingest.handle_batch([(TELE_TOPIC, heartbeat(100, **beat))])
    assert changed == ["pd-0001"]
    assert due_at(engine) == RECHECK


def test_one_bad_message_does_not_take_the_batch_with_it(
    ingest: Ingest, engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = commands.record_result

    def fails_on_c_bad(session, *, device_id, result, now):
        if result.id == "c-bad":
            raise RuntimeError("bug in command results")
        return real(session, device_id=device_id, result=result, now=now)

    monkeypatch.setattr(commands, "record_result", fails_on_c_bad)
    with caplog.at_level(logging.ERROR, logger="pendant_backend.ingest"):
        outcomes = ingest.handle_batch(
            [
                (TELE_TOPIC, heartbeat(100)),
                (CMD_RES_TOPIC, b'{"id":"c-bad","ok":true}'),
                (TELE_TOPIC, heartbeat(280)),
            ]
        )
    assert "storing 3 messages together failed" in caplog.text
    assert [o.error is not None for o in outcomes] == [False, True, False]
    assert heartbeat_count(engine) == 2
    assert ingest.invalid_counts == {"handler_error": 1}


def test_invalid_and_unknown_messages_in_a_batch_are_counted_once(ingest: Ingest, engine) -> None:
    outcomes = ingest.handle_batch(
        [
            (TELE_TOPIC, b"{not json"),
            ("pendant/v1/pd-0777/tele", heartbeat(100)),
            ("pendant/v1/pd-0001/nonsense", b"{}"),
            (TELE_TOPIC, heartbeat(100)),
        ]
    )
    assert [o.invalid for o in outcomes] == ["bad_json", "unknown_device", "unknown_topic", None]
    assert ingest.invalid_counts == {"bad_json": 1, "unknown_device": 1, "unknown_topic": 1}
    assert heartbeat_count(engine) == 1


def test_an_alarm_in_a_batch_is_stored_on_its_own_and_acked(ingest: Ingest, engine) -> None:
    outcomes = ingest.handle_batch(
        [(EVT_TOPIC, fallback()), (ALARM_TOPIC, ALARM), (TELE_TOPIC, heartbeat(1))]
    )
    assert outcomes[1] is not None and outcomes[1].new and outcomes[1].replies
    # The fallback report came first and made a placeholder; the alarm filled it in.
    [alarm] = stored_alarms(engine)
    assert alarm.kind == "panic" and alarm.fallback is not None
    # The heartbeat after it adds a point to the open alarm's trail.
    assert [p.source for p in alarms.trail(engine, alarm_pk=alarm.id)] == ["alarm", "tele"]


def test_trail_points_of_a_batch_are_audited_at_its_end_and_verify(ingest: Ingest, engine) -> None:
    assert ingest.handle(ALARM_TOPIC, ALARM).new
    ingest.handle_batch([(TELE_TOPIC, heartbeat(1)), (EVT_TOPIC, fallback()), (TELE_TOPIC, heartbeat(2))])
    [alarm] = stored_alarms(engine)
    points = alarms.trail(engine, alarm_pk=alarm.id)
    assert [p.source for p in points] == ["alarm", "tele", "tele"]
    with Session(engine) as session:
        events = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))))
    # One event per point, in the order of the points, and the fallback report's between them: in the
    # order the batch appended them.
    located = [json.loads(e.body)["data"]["point"] for e in events if e.kind == "alarm_location"]
    assert located == [p.id for p in points]
    assert [e.kind for e in events][-3:] == ["alarm_location", "alarm_fallback", "alarm_location"]
    assert audit.verify_database(engine) == []


def test_a_fallback_report_in_a_batch_before_its_alarm_on_the_other_session(ingest: Ingest, engine) -> None:
    # Alarms come on their own session: the report may be stored (in a batch) before its alarm.
    ingest.handle_batch([(TELE_TOPIC, heartbeat(1)), (EVT_TOPIC, fallback())])
    [placeholder] = stored_alarms(engine)
    assert placeholder.kind == "unknown"
    assert ingest.handle(ALARM_TOPIC, ALARM).new
    [alarm] = stored_alarms(engine)
    assert alarm.id == placeholder.id and alarm.kind == "panic"
    assert audit.verify_database(engine) == []
