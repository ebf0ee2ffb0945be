"""Case exports: one alarm, its trail and its audit events in a file that can be verified later, without
the database, by `pendant alarms verify FILE` (docs/operations.md, "Verifying a case export").

The file holds the alarm's own events in full and, for the stretch of the chain they span, only the
numbers and hashes of the other events (which belong to other pendants and are not disclosed). It is
signed with HMAC-SHA256 under the backend's key, so that the file as a whole cannot be altered either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, alarms, audit, chain
from pendant_backend.models import AlarmLocation, AuditEvent, iso, utc_now
from pendant_backend.queries import alarm_as_dict
from pendant_backend.settings import Settings, secret_key

FORMAT = "pendant-case-export/1"


class ExportError(BackendError):
    """An export could not be made or read."""


def _signature(settings: Settings, document: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    key = secret_key(settings.signing_key_path)
    return hmac.new(key, chain.canonical(unsigned).encode(), hashlib.sha256).hexdigest()


def export_alarm(
    settings: Settings, engine: Engine, *, ref: str, actor: str = audit.SYSTEM
) -> dict[str, Any]:
    """The export document of one alarm (write it with `json.dump`)."""
    with Session(engine) as session:
        alarm = alarms.find_alarm(session, ref)
        if alarm is None:
            raise ExportError(f"no alarm {ref}: see `pendant alarms list`")
        points = list(
            session.exec(
                select(AlarmLocation)
                .where(AlarmLocation.alarm_pk == alarm.id)
                .order_by(col(AlarmLocation.id))
            )
        )
        own = list(
            session.exec(
                select(AuditEvent).where(AuditEvent.alarm_pk == alarm.id).order_by(col(AuditEvent.seq))
            )
        )
        if not own:
            raise ExportError(f"alarm {ref} has no audit events: run `pendant alarms verify` on the database")
        span = list(
            session.exec(
                select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash)
                .where(AuditEvent.seq >= own[0].seq, AuditEvent.seq <= own[-1].seq)
                .order_by(col(AuditEvent.seq))
            )
        )
    document: dict[str, Any] = {
        "format": FORMAT,
        "exported_at": iso(utc_now()),
        "exported_by": actor,
        "alarm": alarm_as_dict(alarm),
        "content": audit.alarm_content(alarm),
        "trail": [audit.point_content(p) | {"id": p.id} for p in points],
        "events": [{"seq": e.seq, "body": e.body, "prev_hash": e.prev_hash, "hash": e.hash} for e in own],
        "chain": [{"seq": seq, "prev_hash": prev, "hash": digest} for seq, prev, digest in span],
    }
    document["signature"] = _signature(settings, document)
    return document


def verify_export(settings: Settings, document: dict[str, Any], *, engine: Engine | None = None) -> list[str]:
    """Everything wrong with an export document; an empty list means it is intact. With `engine`, also
    checks that the database still holds the same chain for that stretch."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        return [f"not a case export (format {found!r})"]
    try:
        return _verify(settings, document, engine)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"the file is not a complete case export ({type(exc).__name__}: {exc})"]


def _verify(settings: Settings, document: dict[str, Any], engine: Engine | None) -> list[str]:
    problems: list[str] = []
    if not hmac.compare_digest(_signature(settings, document), str(document.get("signature", ""))):
        problems.append("the signature does not match: the file was altered, or signed with another key")
    skeleton = {item["seq"]: item for item in document["chain"]}
    links = [
        chain.Link(seq=i["seq"], body="", prev_hash=i["prev_hash"], hash=i["hash"], columns={})
        for i in document["chain"]
    ]
    for i in range(1, len(links)):
        if links[i].seq != links[i - 1].seq + 1:
            problems.append(f"the chain skips from event {links[i - 1].seq} to {links[i].seq}")
        if links[i].prev_hash != links[i - 1].hash:
            problems.append(f"event {links[i].seq} does not link to event {links[i - 1].seq}")
    bodies = []
    for item in document["events"]:
        if chain.link_hash(item["prev_hash"], item["body"]) != item["hash"]:
            problems.append(f"event {item['seq']}: its content does not match its hash (it was edited)")
        if skeleton.get(item["seq"], {}).get("hash") != item["hash"]:
            problems.append(f"event {item['seq']} is not the one in the chain")
        bodies.append(json.loads(item["body"]))
    stories, _ = audit.replay(bodies)
    story = stories.get(document["alarm"]["id"], audit.AlarmStory())
    if story.content != chain.digest(document["content"]):
        problems.append("the alarm's content differs from what was received")
    alarm = document["alarm"]
    for key in (
        "state",
        "acknowledged_by",
        "acknowledged_at",
        "resolved_by",
        "resolved_at",
        "resolution",
        "escalations",
    ):
        if getattr(story, key) != alarm.get(key):
            problems.append(f"the alarm's {key} differs from its audit events")
    note = alarm.get("note")
    if story.note != (chain.digest(note) if note is not None else None):
        problems.append("the alarm's note differs from its audit events")
    for key in (
        "device_id",
        "alarm_id",
        "occurrence",
        "kind",
        "test",
        "device_time",
        "lat",
        "lon",
        "acc",
        "batt",
    ):
        if alarm.get(key) != document["content"].get(key):
            problems.append(f"the alarm's {key} differs from its received content")
    for point in document["trail"]:
        recorded = story.points.get(point["id"])
        content = {k: v for k, v in point.items() if k != "id"}
        if recorded is None or recorded != chain.digest(content):
            problems.append(f"trail point #{point['id']} differs from what was recorded")
    if engine is not None:
        with Session(engine) as session:
            stored = {
                seq: digest
                for seq, digest in session.exec(
                    select(AuditEvent.seq, AuditEvent.hash).where(col(AuditEvent.seq).in_(list(skeleton)))
                )
            }
        for seq, item in skeleton.items():
            if stored.get(seq) != item["hash"]:
                problems.append(
                    f"event {seq} differs from the database's (the export or the database changed)"
                )
    return problems
