"""The audit log: every change of an alarm (and of a device's credentials, loan, config and data) is an
event in one hash chain (pendant_backend.chain), and the verifier replays it against the tables.

Events hold digests of personal data, never the data: `alarm_received` holds the digest of the alarm's
content, `alarm_location` the digest of one trail point, `alarm_resolved` the digest of the note.
Checking the chain is itself recorded (`audit_verified`, and for case exports `alarm_exported` and
`export_verified`, in pendant_backend.export), with who did it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session, col, select

from pendant_backend import chain
from pendant_backend.db import lock_audit_chain, session_scope
from pendant_backend.models import Alarm, AlarmLocation, AuditEvent, iso, utc_now

log = logging.getLogger(__name__)

SYSTEM = "system"
# session.info key: the events of an open `deferred` block, not written yet.
_PENDING = "audit_pending"
VERIFIED = "audit_verified"


def alarm_content(alarm: Alarm) -> dict[str, Any]:
    """The parts of an alarm that never change after it is stored (what `alarm_received` commits to).
    The flags of fields set aside are there only when one is set, so that alarms stored before they
    existed keep their digest."""
    content: dict[str, Any] = {
        "device_id": alarm.device_id,
        "alarm_id": alarm.alarm_id,
        "occurrence": alarm.occurrence,
        "kind": alarm.kind,
        "test": alarm.test,
        "device_time": alarm.device_time,
        "received_at": iso(alarm.received_at),
        "lat": alarm.lat,
        "lon": alarm.lon,
        "acc": alarm.acc,
        "loc_time": alarm.loc_time,
        "loc_src": alarm.loc_src,
        "cell": alarm.cell,
        "batt": alarm.batt,
        "payload": alarm.payload,
    }
    if alarm.set_aside:
        content["set_aside"] = alarm.set_aside
    return content


def point_content(point: AlarmLocation) -> dict[str, Any]:
    """One trail point, as `alarm_location` commits to it."""
    return {
        "alarm_pk": point.alarm_pk,
        "received_at": iso(point.received_at),
        "lat": point.lat,
        "lon": point.lon,
        "acc": point.acc,
        "loc_time": point.loc_time,
        "source": point.source,
    }


def append(
    session: Session,
    *,
    kind: str,
    at: datetime,
    actor: str = SYSTEM,
    device_id: str | None = None,
    alarm_pk: int | None = None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent | None:
    """Add one event to the chain, in the caller's transaction (so it commits with the change it records),
    and return it; inside `deferred(session)` it is written when that block ends, and this returns None."""
    event_fields = {
        "kind": kind,
        "at": at,
        "actor": actor,
        "device_id": device_id,
        "alarm_pk": alarm_pk,
        "data": dict(data or {}),
    }
    pending = session.info.get(_PENDING)
    if pending is not None:
        pending.append(event_fields)
        return None
    return _write(session, [event_fields])[0]


@contextmanager
def deferred(session: Session) -> Iterator[None]:
    """The appends made in this block are written, in order, when it ends (and dropped if it raises).

    On PostgreSQL the chain's lock is then held from those writes to the commit, not from the first
    append: a transaction that works on after its first event (an ingest batch that extends an alarm's
    trail early on) no longer keeps an alarm's own `alarm_received` waiting for all of its work. The
    block must end before the commit; `_refuse_unwritten` stops a commit that would drop events."""
    if _PENDING in session.info:
        raise RuntimeError("audit.deferred() is already open on this session")
    session.info[_PENDING] = []
    try:
        yield
    except BaseException:
        session.info.pop(_PENDING, None)
        raise
    events = session.info.pop(_PENDING)
    if events:
        _write(session, events)


def _write(session: Session, events: list[dict[str, Any]]) -> list[AuditEvent]:
    lock_audit_chain(session)
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    seq, prev_hash = (last.seq, last.hash) if last else (0, chain.GENESIS)
    heads = session.info.setdefault("audit_heads", [])
    written: list[AuditEvent] = []
    for fields in events:
        seq += 1
        body = chain.event_body(
            seq=seq,
            at=iso(fields["at"]),
            kind=fields["kind"],
            actor=fields["actor"],
            device_id=fields["device_id"],
            alarm_pk=fields["alarm_pk"],
            data=fields["data"],
        )
        item = AuditEvent(
            seq=seq,
            at=fields["at"],
            kind=fields["kind"],
            actor=fields["actor"],
            device_id=fields["device_id"],
            alarm_pk=fields["alarm_pk"],
            body=body,
            prev_hash=prev_hash,
            hash=chain.link_hash(prev_hash, body),
        )
        session.add(item)
        written.append(item)
        prev_hash = item.hash
        heads.append((seq, item.hash))
    session.flush()
    return written


@event.listens_for(Session, "before_commit")
def _refuse_unwritten(session: Session) -> None:
    if session.info.get(_PENDING):
        raise RuntimeError("a commit inside audit.deferred() would drop its audit events")


@event.listens_for(Session, "after_commit")
def _log_heads(session: Session) -> None:
    # The head of the chain in the log (which is shipped elsewhere) anchors it: removing the newest
    # events from the database would contradict the log.
    for seq, digest in session.info.pop("audit_heads", []):
        log.info("audit chain head %d %s", seq, digest)


@event.listens_for(Session, "after_rollback")
def _forget_heads(session: Session) -> None:
    session.info.pop("audit_heads", None)


def link_of(item: AuditEvent) -> chain.Link:
    """An event as the pure verifier sees it."""
    return chain.Link(
        seq=item.seq,
        body=item.body,
        prev_hash=item.prev_hash,
        hash=item.hash,
        columns={
            "at": iso(item.at),
            "kind": item.kind,
            "actor": item.actor,
            "device_id": item.device_id,
            "alarm_pk": item.alarm_pk,
        },
    )


@dataclass
class AlarmStory:
    """An alarm as its events tell it: what its row must say."""

    content: str | None = None
    state: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    resolved_by: str | None = None
    resolved_at: str | None = None
    resolution: str | None = None
    note: str | None = None
    escalations: int = 0
    points: dict[int, str] = field(default_factory=dict)
    erased: bool = False


def replay(bodies: Iterable[Mapping[str, Any]]) -> tuple[dict[int, AlarmStory], set[int]]:
    """Pure: alarm pk -> its story, from event bodies in order; and the trail points purged by retention."""
    stories: dict[int, AlarmStory] = {}
    purged_points: set[int] = set()
    for body in bodies:
        kind, data, pk = body["kind"], body["data"], body.get("alarm_pk")
        story = stories.setdefault(pk, AlarmStory()) if pk is not None else None
        if kind == "alarm_received" and story is not None:
            # A second one fills in a placeholder (an alarm first known from its fallback report): the
            # content changes, what was done with the alarm meanwhile stays.
            story.content, story.state = data["content"], story.state or "received"
        elif kind == "alarm_acknowledged" and story is not None:
            story.state, story.acknowledged_by, story.acknowledged_at = (
                "acknowledged",
                body["actor"],
                body["at"],
            )
        elif kind == "alarm_resolved" and story is not None:
            story.state, story.resolved_by, story.resolved_at = "resolved", body["actor"], body["at"]
            story.resolution, story.note = data["resolution"], data["note"]
        elif kind == "alarm_escalated" and story is not None:
            story.escalations = data["level"]
        elif kind == "alarm_location" and story is not None:
            story.points[data["point"]] = data["content"]
        elif kind == "device_erased":
            for erased_pk in data.get("alarms", []):
                stories.setdefault(erased_pk, AlarmStory()).erased = True
        elif kind == "retention_purge":
            purged_points.update(data.get("points", []))
    return stories, purged_points


def compare_alarm(alarm: Alarm, story: AlarmStory) -> list[str]:
    """Pure: how the row of `alarm` differs from what its events say."""
    found = []
    if story.content is None:
        return [f"alarm {alarm.ref} (#{alarm.id}) has no alarm_received event (its event was removed?)"]
    if chain.digest(alarm_content(alarm)) != story.content:
        found.append(f"alarm {alarm.ref} (#{alarm.id}) differs from what was received (it was edited)")
    row = {
        "state": alarm.state,
        "acknowledged_by": alarm.acknowledged_by,
        "acknowledged_at": iso(alarm.acknowledged_at),
        "resolved_by": alarm.resolved_by,
        "resolved_at": iso(alarm.resolved_at),
        "resolution": alarm.resolution,
        "note": chain.digest(alarm.note) if alarm.note is not None else None,
        "escalations": alarm.escalations,
    }
    for key, value in row.items():
        if getattr(story, key) != value:
            found.append(f"alarm {alarm.ref} (#{alarm.id}): {key} differs from its audit events (edited)")
    return found


def verify_database(engine: Engine) -> list[str]:
    """Check the whole chain and every alarm and trail point against it; an empty list means intact."""
    with Session(engine) as session:
        events = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))))
        alarms = list(session.exec(select(Alarm)))
        points = list(session.exec(select(AlarmLocation)))
    problems = [str(p) for p in chain.verify_links(link_of(e) for e in events)]
    bodies = []
    for item in events:
        try:
            bodies.append(json.loads(item.body))
        except ValueError:
            continue
    stories, purged = replay(bodies)
    seen_alarms = set()
    for alarm in alarms:
        seen_alarms.add(alarm.id)
        problems += compare_alarm(alarm, stories.get(alarm.id, AlarmStory()))
    for pk, story in stories.items():
        if story.content is not None and pk not in seen_alarms and not story.erased:
            problems.append(f"alarm #{pk} was received but its row is gone (it was deleted)")
    seen_points = set()
    for point in points:
        seen_points.add(point.id)
        expected = stories.get(point.alarm_pk, AlarmStory()).points.get(point.id)
        if expected is None:
            problems.append(f"trail point #{point.id} has no alarm_location event")
        elif chain.digest(point_content(point)) != expected:
            problems.append(f"trail point #{point.id} differs from what was recorded (it was edited)")
    for pk, story in stories.items():
        for point_id in story.points:
            if point_id not in seen_points and point_id not in purged and not story.erased:
                problems.append(f"trail point #{point_id} of alarm #{pk} is gone (it was deleted)")
    return problems


def alarm_events(engine: Engine, alarm_pk: int) -> list[AuditEvent]:
    """The alarm's own events, oldest first: its audit timeline."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.alarm_pk == alarm_pk).order_by(col(AuditEvent.seq))
            )
        )


def event_data(item: AuditEvent) -> dict[str, Any]:
    """The `data` an event's body records; {} for a body that cannot be read (verify_database reports it)."""
    try:
        data = json.loads(item.body).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def chain_head(engine: Engine) -> tuple[int, str]:
    """(seq, hash) of the newest event, (0, GENESIS) for an empty chain."""
    with Session(engine) as session:
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    return (last.seq, last.hash) if last else (0, chain.GENESIS)


def record_verification(
    engine: Engine, *, actor: str, checked: tuple[int, str], problems: list[str]
) -> AuditEvent:
    """Record that `actor` verified the chain up to `checked` (seq, hash) and what was found
    (`audit_verified`): a later reader sees who looked, and when."""
    seq, head = checked
    with session_scope(engine) as session:
        return append(
            session,
            kind=VERIFIED,
            at=utc_now(),
            actor=actor,
            data={"events": seq, "head": head, "intact": not problems, "problems": len(problems)},
        )
