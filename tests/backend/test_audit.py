"""The audit chain in the database: every change of an alarm is an event, and an edited or deleted row
(alarm, trail point or event) is detected; erasure and retention leave a chain that still verifies."""

from __future__ import annotations

import json

import pytest
from backend_samples import alarm, tele, topic
from sqlalchemy import text
from sqlmodel import Session, col, select

from pendant_backend import audit, retention
from pendant_backend.alarms import acknowledge_alarm, resolve_alarm
from pendant_backend.db import AUDIT_LOCK_KEY, session_scope
from pendant_backend.models import AuditEvent


@pytest.fixture
def story(engine, ingest, clock) -> None:
    """An alarm with a trail, acknowledged and resolved; a second alarm left open."""
    ingest.handle(topic("pd-0001", "alarm"), alarm("12-3"))
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    clock.advance(30)
    acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock())
    clock.advance(30)
    resolve_alarm(
        engine, ref="pd-0001/12-3", operator="Ann", resolution="incident", note="unit 12", now=clock()
    )
    ingest.handle(topic("pd-0002", "alarm"), alarm("1-1"))


def kinds(engine) -> list[str]:
    with Session(engine) as session:
        return [e.kind for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)))]


def sql(engine, statement: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def test_every_change_of_an_alarm_is_an_event_and_the_chain_verifies(engine, story) -> None:
    assert kinds(engine) == [
        "alarm_received",
        "alarm_location",
        "alarm_location",
        "alarm_acknowledged",
        "alarm_resolved",
        "alarm_received",
        "alarm_location",
    ]
    assert audit.verify_database(engine) == []


def test_events_hold_no_position_and_no_note(engine, story) -> None:
    with Session(engine) as session:
        bodies = " ".join(e.body for e in session.exec(select(AuditEvent)))
    assert "52.37" not in bodies and "4.89" not in bodies and "unit 12" not in bodies


def test_an_edited_alarm_position_is_detected(engine, story) -> None:
    sql(engine, "UPDATE alarms SET lat = 52.0 WHERE alarm_id = '12-3'")
    assert any("pd-0001/12-3" in p and "edited" in p for p in audit.verify_database(engine))


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("state", "'received'"),
        ("acknowledged_by", "'Bob'"),
        ("resolution", "'false'"),
        ("note", "'nothing'"),
        ("escalations", "3"),
    ],
)
def test_an_edited_lifecycle_field_is_detected(engine, story, column: str, value: str) -> None:
    sql(engine, f"UPDATE alarms SET {column} = {value} WHERE alarm_id = '12-3'")
    assert any(column in p for p in audit.verify_database(engine))


def test_a_deleted_alarm_is_detected(engine, story) -> None:
    sql(engine, "DELETE FROM alarm_locations WHERE alarm_pk = (SELECT id FROM alarms WHERE alarm_id = '1-1')")
    sql(engine, "DELETE FROM alarms WHERE alarm_id = '1-1'")
    problems = audit.verify_database(engine)
    assert any("row is gone" in p for p in problems)


def test_an_edited_or_deleted_trail_point_is_detected(engine, story) -> None:
    sql(engine, "UPDATE alarm_locations SET lon = 5.0 WHERE id = (SELECT min(id) FROM alarm_locations)")
    assert any("trail point" in p and "edited" in p for p in audit.verify_database(engine))
    sql(engine, "DELETE FROM alarm_locations WHERE id = (SELECT max(id) FROM alarm_locations)")
    assert any("trail point" in p and "deleted" in p for p in audit.verify_database(engine))


def test_an_edited_event_is_detected(engine, story) -> None:
    with Session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.kind == "alarm_acknowledged")).one()
    body = event.body.replace('"actor":"Ann"', '"actor":"Bob"')
    sql(engine, "UPDATE audit_events SET body = :body WHERE seq = :seq", body=body, seq=event.seq)
    assert any(f"event {event.seq}" in p and "edited" in p for p in audit.verify_database(engine))


def test_a_deleted_event_is_detected(engine, story) -> None:
    sql(engine, "DELETE FROM audit_events WHERE seq = 4")  # the acknowledgement
    problems = audit.verify_database(engine)
    assert any("event 5" in p and "missing" in p for p in problems)
    # And the alarm row no longer agrees with its story.
    assert any("acknowledged_by" in p for p in problems)


def test_every_new_head_of_the_chain_is_logged(engine, ingest, caplog: pytest.LogCaptureFixture) -> None:
    # Removing the newest events together with their alarm leaves a shorter chain that is consistent in
    # itself: the heads in the log, which is shipped elsewhere, are what such a cut contradicts.
    with caplog.at_level("INFO", logger="pendant_backend.audit"):
        ingest.handle(topic("pd-0001", "alarm"), alarm("12-3"))
    seq, head = audit.chain_head(engine)
    assert f"audit chain head {seq} {head}" in caplog.text


def test_erasure_and_retention_leave_a_chain_that_verifies(engine, story, clock) -> None:
    counts = retention.erase_device(engine, device_id="pd-0001", actor="it", reason="request 7", now=clock())
    assert counts["alarms"] == 1 and counts["points"] == 2
    assert audit.verify_database(engine) == []
    with Session(engine) as session:
        erased = session.exec(select(AuditEvent).where(AuditEvent.kind == "device_erased")).one()
    assert erased.actor == "it" and "request 7" not in erased.body
    assert json.loads(erased.body)["data"]["counts"]["alarms"] == 1


def test_deferred_appends_are_written_in_order_when_the_block_ends(engine, story, clock) -> None:
    before = kinds(engine)
    with session_scope(engine) as session, audit.deferred(session):
        audit.append(session, kind="first_deferred", at=clock())
        audit.append(session, kind="second_deferred", at=clock(), data={"n": 2})
        assert kinds(engine) == before  # nothing written yet, by this session or any other
    assert kinds(engine) == [*before, "first_deferred", "second_deferred"]
    assert audit.verify_database(engine) == []


def test_deferred_appends_of_a_block_that_raises_are_dropped(engine, story, clock) -> None:
    before = kinds(engine)
    with pytest.raises(ZeroDivisionError), session_scope(engine) as session, audit.deferred(session):
        audit.append(session, kind="never_written", at=clock())
        _ = 1 / 0
    assert kinds(engine) == before


def test_a_commit_inside_a_deferred_block_is_refused(engine, clock) -> None:
    with Session(engine) as session, audit.deferred(session):
        audit.append(session, kind="left_behind", at=clock())
        with pytest.raises(RuntimeError, match="drop its audit events"):
            session.commit()
        session.rollback()


def test_a_deferred_block_takes_the_chains_lock_only_at_its_end(engine, story, clock) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the chain's lock is PostgreSQL's advisory lock; SQLite locks the whole database")

    def chain_is_free() -> bool:
        with engine.connect() as other:
            free = other.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": AUDIT_LOCK_KEY}).scalar()
            if free:
                other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": AUDIT_LOCK_KEY})
            return bool(free)

    with session_scope(engine) as session:
        with audit.deferred(session):
            audit.append(session, kind="late_lock", at=clock())
            assert chain_is_free()
        assert not chain_is_free()  # written: held until the commit
    assert chain_is_free()
    assert kinds(engine)[-1] == "late_lock"
