"""pendant_backend.locations (both databases): only a dispatcher or a supervisor reads where a person is,
every read is a `location_viewed` audit event naming who, how and which points, a refused read leaves
none, and `after_point` reads only the newer part of the trail."""

from __future__ import annotations

import json

import pytest
from backend_samples import alarm, tele, topic
from sqlmodel import Session, col, select

from pendant_backend import audit, locations, queries
from pendant_backend.models import AuditEvent
from pendant_backend.users import Person

DISPATCHER = Person(username="ann", roles=("dispatcher",))


@pytest.fixture
def alarm_pk(engine, ingest, clock) -> int:
    """pd-0001's alarm 12-3 with a GNSS fix, and one heartbeat after it (two trail points)."""
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    return queries.find_alarm(engine, "pd-0001/12-3").id


def _viewed(engine) -> list[AuditEvent]:  # noqa: ANN001
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.kind == "location_viewed").order_by(col(AuditEvent.seq))
            )
        )


@pytest.mark.parametrize("roles", [("technician",), ("police_it",), ("admin",), ("police_it", "technician")])
def test_those_who_may_not_see_locations_are_refused_and_nothing_is_recorded(engine, alarm_pk, roles) -> None:
    person = Person(username="someone", roles=roles)
    with pytest.raises(locations.NotAllowed, match="needs the role dispatcher or supervisor"):
        locations.read(engine, alarm_pk=alarm_pk, person=person, via="api")
    assert _viewed(engine) == []


def test_a_read_returns_the_fix_and_trail_and_is_recorded(engine, alarm_pk) -> None:
    view = locations.read(engine, alarm_pk=alarm_pk, person=DISPATCHER, via="cli")
    assert view.position == {
        "lat": 52.373101,
        "lon": 4.892203,
        "acc": 8,
        "loc_time": 1764403190,
        "loc_src": "gnss",
    }
    assert view.cell is None and [p.source for p in view.trail] == ["alarm", "tele"]
    [event] = _viewed(engine)
    assert (event.actor, event.alarm_pk, event.device_id) == ("ann", alarm_pk, "pd-0001")
    assert json.loads(event.body)["data"] == {
        "via": "cli",
        "position": True,
        "points": [p.id for p in view.trail],
    }
    assert audit.verify_database(engine) == []


def test_after_point_reads_only_the_newer_points(engine, ingest, clock, alarm_pk) -> None:
    first = locations.read(engine, alarm_pk=alarm_pk, person=DISPATCHER, via="console")
    clock.advance(60)
    ingest.handle(topic("pd-0001", "tele"), tele())
    newer = locations.read(
        engine, alarm_pk=alarm_pk, person=DISPATCHER, via="console", after_point=first.trail[-1].id
    )
    assert len(newer.trail) == 1 and newer.trail[0].id > first.trail[-1].id
    assert newer.position == first.position
    recorded = [json.loads(e.body)["data"]["points"] for e in _viewed(engine)]
    assert recorded == [[p.id for p in first.trail], [newer.trail[0].id]]


def test_an_unknown_alarm_or_door_is_refused(engine, alarm_pk) -> None:
    with pytest.raises(KeyError):
        locations.read(engine, alarm_pk=alarm_pk + 1000, person=DISPATCHER, via="api")
    with pytest.raises(ValueError, match="via must be one of"):
        locations.read(engine, alarm_pk=alarm_pk, person=DISPATCHER, via="email")
    assert _viewed(engine) == []


def test_case_references_only_for_those_who_may_see_them(engine, devices) -> None:
    assert (
        locations.case_ref_for(engine, "pd-0001", Person(username="ivan", roles=("police_it",))) == "case-1"
    )
    assert locations.case_ref_for(engine, "pd-0001", Person(username="tom", roles=("technician",))) is None
    assert locations.case_ref_for(engine, "pd-0404", DISPATCHER) is None
