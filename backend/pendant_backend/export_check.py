"""The checks of a case export beyond its signature: every hash and link of the chain it carries, the
alarm and its trail against its own audit events, and (with a database) that the database still holds
the same chain. Even an export signed with a stolen key fails these if its content was changed."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import audit, chain
from pendant_backend.models import AuditEvent

# What an alarm's row says that its audit events must agree with.
STORY_FIELDS = (
    "state",
    "acknowledged_by",
    "acknowledged_at",
    "resolved_by",
    "resolved_at",
    "resolution",
    "escalations",
)
# What an alarm's row says that its received content must agree with.
CONTENT_FIELDS = (
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
)


def check_content(document: dict[str, Any], engine: Engine | None = None) -> list[str]:
    """Everything wrong with the export's chain, alarm and trail (its signature is checked elsewhere).
    Raises KeyError/TypeError/ValueError for a document that lacks a part (the caller reports it)."""
    problems = _check_chain(document)
    problems += _check_alarm(document)
    if engine is not None:
        problems += _check_database(document, engine)
    return problems


def _check_chain(document: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    skeleton = {item["seq"]: item for item in document["chain"]}
    links = document["chain"]
    for before, after in zip(links, links[1:], strict=False):
        if after["seq"] != before["seq"] + 1:
            problems.append(f"the chain skips from event {before['seq']} to {after['seq']}")
        if after["prev_hash"] != before["hash"]:
            problems.append(f"event {after['seq']} does not link to event {before['seq']}")
    alarm_pk = document["alarm"]["id"]
    for item in document["events"]:
        if chain.link_hash(item["prev_hash"], item["body"]) != item["hash"]:
            problems.append(f"event {item['seq']}: its content does not match its hash (it was edited)")
        if skeleton.get(item["seq"], {}).get("hash") != item["hash"]:
            problems.append(f"event {item['seq']} is not the one in the chain")
        body = json.loads(item["body"])
        if body.get("seq") != item["seq"]:
            problems.append(f"event {item['seq']}: its number differs from the number in its body")
        if body.get("alarm_pk") != alarm_pk:
            problems.append(f"event {item['seq']} belongs to another alarm")
    return problems


def _check_alarm(document: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    stories, _ = audit.replay(json.loads(item["body"]) for item in document["events"])
    alarm = document["alarm"]
    story = stories.get(alarm["id"], audit.AlarmStory())
    if story.content != chain.digest(document["content"]):
        problems.append("the alarm's content differs from what was received")
    for key in STORY_FIELDS:
        if getattr(story, key) != alarm.get(key):
            problems.append(f"the alarm's {key} differs from its audit events")
    note = alarm.get("note")
    if story.note != (chain.digest(note) if note is not None else None):
        problems.append("the alarm's note differs from its audit events")
    for key in CONTENT_FIELDS:
        if alarm.get(key) != document["content"].get(key):
            problems.append(f"the alarm's {key} differs from its received content")
    for point in document["trail"]:
        recorded = story.points.get(point["id"])
        content = {k: v for k, v in point.items() if k != "id"}
        if recorded is None or recorded != chain.digest(content):
            problems.append(f"trail point #{point['id']} differs from what was recorded")
    return problems


def _check_database(document: dict[str, Any], engine: Engine) -> list[str]:
    skeleton = {item["seq"]: item["hash"] for item in document["chain"]}
    with Session(engine) as session:
        stored = dict(
            session.exec(
                select(AuditEvent.seq, AuditEvent.hash).where(col(AuditEvent.seq).in_(list(skeleton)))
            ).all()
        )
    return [
        f"event {seq} differs from the database's (the export or the database changed)"
        for seq, digest in skeleton.items()
        if stored.get(seq) != digest
    ]
