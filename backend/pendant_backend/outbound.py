"""Messages to the pendants that are decided outside the ingest thread (an operator's ack, a new config):
written to the `outbound` table in the same transaction as the decision, published by the service, and
marked sent once the broker has taken them. A crash in between means a second publish, which is
harmless: an `alarm/ack` is idempotent and a `config` is the whole retained document.

Messages that are not retained (acks, commands) go first: a fleet-wide config change, or configs
published again after a broker crash (pendant_backend.recovery), never hold an ack back.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, or_, select

from pendant_backend.db import session_scope
from pendant_backend.models import Outbound

RESEND_AFTER_S = 30


def enqueue(session: Session, *, topic: str, payload: bytes, now: datetime, retain: bool = False) -> None:
    """Queue one QoS 1 message in the caller's transaction."""
    session.add(Outbound(topic=topic, payload=payload.decode(), retain=retain, created_at=now))


def due(engine: Engine, *, now: datetime, limit: int = 200) -> list[Outbound]:
    """Messages never attempted, or attempted more than RESEND_AFTER_S ago without the broker's PUBACK;
    those not retained first, then each kind oldest first."""
    retry_before = now - timedelta(seconds=RESEND_AFTER_S)
    with Session(engine) as session:
        return list(
            session.exec(
                select(Outbound)
                .where(
                    col(Outbound.sent_at).is_(None),
                    or_(
                        col(Outbound.last_attempt_at).is_(None), col(Outbound.last_attempt_at) < retry_before
                    ),
                )
                .order_by(col(Outbound.retain), col(Outbound.id))
                .limit(limit)
            )
        )


def mark_attempted(engine: Engine, ids: list[int], *, now: datetime) -> None:
    """Record that these messages were handed to the MQTT link."""
    if not ids:
        return
    with session_scope(engine) as session:
        for item in session.exec(select(Outbound).where(col(Outbound.id).in_(ids))):
            item.attempts += 1
            item.last_attempt_at = now
            session.add(item)


def mark_sent(engine: Engine, taken: list[tuple[int, datetime]]) -> None:
    """Record that the broker took these messages (id, when its PUBACK came), in one transaction."""
    if not taken:
        return
    when = dict(taken)
    with session_scope(engine) as session:
        for item in session.exec(select(Outbound).where(col(Outbound.id).in_(list(when)))):
            if item.sent_at is None:
                item.sent_at = when[item.id]
                session.add(item)


def high_water(session: Session) -> int:
    """The largest id such that the broker has taken every message up to it (0 for none)."""
    first_unsent = session.exec(select(func.min(Outbound.id)).where(col(Outbound.sent_at).is_(None))).one()
    if first_unsent is not None:
        return first_unsent - 1
    return session.exec(select(func.max(Outbound.id))).one() or 0


def last_id(session: Session) -> int:
    """The id of the newest message (0 for none)."""
    return session.exec(select(func.max(Outbound.id))).one() or 0


def send_again_after(session: Session, outbound_id: int, *, skip_ids: Collection[int] = ()) -> int:
    """Mark every message after `outbound_id` that the broker took as never sent (except `skip_ids`), so
    that the service publishes it again; returns how many. For a broker that lost them in a crash."""
    statement = (
        update(Outbound)
        .where(col(Outbound.id) > outbound_id, col(Outbound.sent_at).is_not(None))
        .values(sent_at=None, last_attempt_at=None)
    )
    if skip_ids:
        statement = statement.where(col(Outbound.id).not_in(skip_ids))
    return session.execute(statement).rowcount
