"""received -> acknowledged -> resolved, by named operators; escalation of unacknowledged alarms by the
clock (an event and the webhook again); test alarms never dispatched; the pendant hears each change."""

from __future__ import annotations

import json

import pytest
from backend_samples import alarm, tele, topic
from sqlmodel import Session, col, select

from pendant_backend import alarms
from pendant_backend.lifecycle import TransitionError
from pendant_backend.models import Alarm, AuditEvent, Notification, Outbound
from pendant_backend.settings import Settings


def stored(engine, ref: str = "pd-0001/12-3") -> Alarm:
    with Session(engine) as session:
        return alarms.find_alarm(session, ref)


def notifications(engine) -> list[dict]:
    with Session(engine) as session:
        return [json.loads(n.body) for n in session.exec(select(Notification).order_by(col(Notification.id)))]


def outbound(engine) -> list[tuple[str, dict, bool]]:
    with Session(engine) as session:
        rows = session.exec(select(Outbound).order_by(col(Outbound.id)))
        return [(m.topic, json.loads(m.payload), m.retain) for m in rows]


def events(engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.seq)))
        )


def test_ack_and_resolve_by_name_and_the_pendant_hears_both(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    clock.advance(20)
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock())
    acked = stored(engine)
    assert (acked.state, acked.acknowledged_by, acked.acknowledged_at) == ("acknowledged", "Ann", clock())
    clock.advance(600)
    alarms.resolve_alarm(
        engine,
        ref="pd-0001/12-3",
        operator="Bob",
        resolution="precautionary",
        note="she is safe",
        now=clock(),
    )
    done = stored(engine)
    assert (done.state, done.resolved_by, done.resolution, done.note) == (
        "resolved",
        "Bob",
        "precautionary",
        "she is safe",
    )
    assert [(t, p["state"]) for t, p, _ in outbound(engine)] == [
        ("pendant/v1/pd-0001/alarm/ack", "acknowledged"),
        ("pendant/v1/pd-0001/alarm/ack", "resolved"),
    ]
    assert [e.actor for e in events(engine, "alarm_acknowledged") + events(engine, "alarm_resolved")] == [
        "Ann",
        "Bob",
    ]
    # A resend after the ack is answered with the alarm's state now.
    [reply] = ingest.handle(topic("pd-0001", "alarm"), alarm()).replies
    assert json.loads(reply.payload)["state"] == "resolved"


def test_a_second_ack_names_who_took_it(engine, ingest) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann")
    with pytest.raises(TransitionError, match="already acknowledged by Ann"):
        alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Bob")
    with pytest.raises(alarms.AlarmNotFound):
        alarms.acknowledge_alarm(engine, ref="pd-0001/99-9", operator="Bob")


def test_an_alarm_is_resolved_only_after_an_ack(engine, ingest) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    with pytest.raises(TransitionError, match="acknowledge it first"):
        alarms.resolve_alarm(engine, ref="pd-0001/12-3", operator="Ann", resolution="false")
    assert stored(engine).state == "received"


def test_the_alarm_webhook_carries_the_case_and_the_position(engine, ingest) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    [body] = notifications(engine)
    assert body["event"] == "alarm"
    assert body["alarm"]["case_ref"] == "case-1" and body["alarm"]["test"] is False
    assert body["alarm"]["position"]["lat"] == pytest.approx(52.373101)


def test_an_unacknowledged_alarm_escalates_every_interval_up_to_the_maximum(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    received = clock()
    assert alarms.escalate_due(engine, now=clock.advance(59), after_s=60, max_count=2) == []
    assert len(alarms.escalate_due(engine, now=clock.advance(1), after_s=60, max_count=2)) == 1
    assert alarms.escalate_due(engine, now=clock.advance(30), after_s=60, max_count=2) == []
    assert len(alarms.escalate_due(engine, now=clock.advance(30), after_s=60, max_count=2)) == 1
    assert alarms.escalate_due(engine, now=clock.advance(600), after_s=60, max_count=2) == []
    assert stored(engine).escalations == 2
    assert [json.loads(e.body)["data"]["level"] for e in events(engine, "alarm_escalated")] == [1, 2]
    hooks = notifications(engine)
    assert [h["event"] for h in hooks] == ["alarm", "escalation", "escalation"]
    assert [h["unacknowledged_s"] for h in hooks[1:]] == [60, 120]
    assert received  # the clock, not the wall clock, drove all of it


def test_by_default_an_alarm_escalates_every_interval_until_someone_acknowledges_it(
    engine, ingest, clock
) -> None:
    assert Settings.from_env({}).escalate_max == 0
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    for level in range(1, 13):  # twelve minutes nobody took it
        assert alarms.escalate_due(engine, now=clock.advance(59), after_s=60, max_count=0) == []
        [escalated] = alarms.escalate_due(engine, now=clock.advance(1), after_s=60, max_count=0)
        assert escalated.escalations == level
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock.advance(1))
    assert alarms.escalate_due(engine, now=clock.advance(3600), after_s=60, max_count=0) == []
    assert [json.loads(e.body)["data"]["level"] for e in events(engine, "alarm_escalated")] == list(
        range(1, 13)
    )
    hooks = [h for h in notifications(engine) if h["event"] == "escalation"]
    assert [h["level"] for h in hooks] == list(range(1, 13))
    assert hooks[-1]["unacknowledged_s"] == 720


def test_an_acknowledged_alarm_does_not_escalate(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock.advance(30))
    assert alarms.escalate_due(engine, now=clock.advance(3600), after_s=60, max_count=0) == []


def test_a_test_alarm_runs_the_lifecycle_but_is_never_dispatched(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm("5-1", kind="test", test=True))
    assert alarms.escalate_due(engine, now=clock.advance(3600), after_s=60, max_count=0) == []
    [hook] = notifications(engine)
    assert hook["alarm"]["test"] is True
    alarms.acknowledge_alarm(engine, ref="pd-0001/5-1", operator="bench", now=clock())
    alarms.resolve_alarm(engine, ref="pd-0001/5-1", operator="bench", resolution="test", now=clock())
    assert stored(engine, "pd-0001/5-1").state == "resolved"


def test_fixes_while_an_alarm_is_open_extend_its_trail(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    pk = stored(engine).id
    clock.advance(30)
    ingest.handle(
        topic("pd-0001", "tele"), tele(loc={"lat": 52.4, "lon": 4.9, "acc": 5, "tst": None, "src": "gnss"})
    )
    clock.advance(30)
    ingest.handle(
        topic("pd-0001", "evt"),
        b'{"evt":"power_off","tst":null,"loc":{"lat":52.5,"lon":4.95,"acc":6,"tst":null,"src":"gnss"}}',
    )
    ingest.handle(topic("pd-0002", "tele"), tele())  # another pendant's fix is not in this trail
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock())
    alarms.resolve_alarm(engine, ref="pd-0001/12-3", operator="Ann", resolution="false", now=clock())
    ingest.handle(topic("pd-0001", "tele"), tele())  # after it is resolved: not in the trail
    trail = alarms.trail(engine, alarm_pk=pk)
    assert [(p.lat, p.source) for p in trail] == [(52.373101, "alarm"), (52.4, "tele"), (52.5, "evt")]


def test_references_by_number_and_by_occurrence(engine, ingest) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm("1-1", tst=100))
    ingest.handle(topic("pd-0001", "alarm"), alarm("1-1", tst=200))
    first, second = stored(engine, "pd-0001/1-1"), stored(engine, "pd-0001/1-1#1")
    assert (first.device_time, second.device_time) == (100, 200)
    assert stored(engine, str(second.id)).ref == "pd-0001/1-1#1"
