"""The rules thread publishes the outbound table; the broker's PUBACKs arrive on the link's thread, the
one that also stores and acks alarms. Recording them must cost that thread no database work: the next
tick records them, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from backend_samples import T0
from sqlalchemy import event
from sqlmodel import Session, col, select

from pendant_backend import outbound
from pendant_backend.db import session_scope
from pendant_backend.models import Outbound
from pendant_backend.service import Rules
from pendant_backend.settings import Settings

SETTINGS = Settings(data_dir=".", db_url="")


class Link:
    """Stands in for MqttLink.publish: keeps what was handed over, with its callback."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, Callable[[], None]]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool, on_taken: Callable[[], None]) -> None:
        self.handed.append((topic, on_taken))


def sent(engine) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(Outbound).where(col(Outbound.sent_at).is_not(None)).order_by(Outbound.id))
        return [row.topic for row in rows]


def test_a_puback_costs_the_link_thread_no_database_work_and_the_next_tick_records_it(engine) -> None:
    topics = [f"pendant/v1/pd-{n:04d}/config" for n in range(1, 4)]
    with session_scope(engine) as session:
        for name in topics:
            outbound.enqueue(session, topic=name, payload=b"{}", now=T0, retain=True)
    link, woken = Link(), []
    rules = Rules(engine, SETTINGS, publish=link.publish, wake=lambda: woken.append(True))
    rules.tick(T0)
    assert [name for name, _ in link.handed] == topics

    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _, taken in link.handed[:2]:
            taken()
        assert woken == []  # one is still with the broker
        link.handed[2][1]()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    assert woken == [True]  # the last one taken wakes the rules, which record them
    assert sent(engine) == []
    rules.tick(T0 + timedelta(seconds=1))
    assert sent(engine) == topics
    # Recorded, so not handed over again when they would be due for a resend.
    rules.tick(T0 + timedelta(seconds=outbound.RESEND_AFTER_S + 1))
    assert len(link.handed) == 3


def test_a_message_the_broker_never_took_is_handed_over_again(engine) -> None:
    with session_scope(engine) as session:
        outbound.enqueue(session, topic="pendant/v1/pd-0001/alarm/ack", payload=b"{}", now=T0)
    link = Link()
    rules = Rules(engine, SETTINGS, publish=link.publish)
    rules.tick(T0)
    rules.tick(T0 + timedelta(seconds=outbound.RESEND_AFTER_S + 1))
    assert len(link.handed) == 2 and sent(engine) == []
    link.handed[1][1]()
    rules.tick(T0 + timedelta(seconds=outbound.RESEND_AFTER_S + 2))
    assert sent(engine) == ["pendant/v1/pd-0001/alarm/ack"]
