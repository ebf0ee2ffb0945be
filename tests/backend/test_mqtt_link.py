"""The order of the link's acknowledgements, on a fake paho client: PUBACK only after the reply's PUBACK."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pendant_backend.ingest import Reply
from pendant_backend.mqtt_link import MqttLink


@dataclass
class Reason:
    is_failure: bool = False
    value: int = 0


@dataclass
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1


@dataclass
class PublishInfo:
    mid: int
    rc: int = 0


@dataclass
class FakeClient:
    """Records what the link does to paho."""

    acked: list[int] = field(default_factory=list)
    published: list[tuple[str, bytes, int]] = field(default_factory=list)
    next_mid: int = 100

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> PublishInfo:
        self.next_mid += 1
        self.published.append((topic, payload, self.next_mid))
        return PublishInfo(self.next_mid)

    def ack(self, mid: int, qos: int) -> int:
        self.acked.append(mid)
        return 0

    def subscribe(self, topics):
        return 0, 1


@dataclass
class Flags:
    session_present: bool = True


def make_link(handler) -> MqttLink:
    return MqttLink(
        host="127.0.0.1", port=1, username="u", password="p", subscriptions=["t/#"], handler=handler
    )


ACK = Reply("pendant/v1/pd-0001/alarm/ack", b'{"alarm_id":"1-1","state":"received"}')


def test_alarm_is_pubacked_only_after_the_broker_took_the_ack() -> None:
    link, client = make_link(lambda topic, payload: [ACK]), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=7))
    [(topic, payload, reply_mid)] = client.published
    assert (topic, payload) == (ACK.topic, ACK.payload)
    assert client.acked == []  # stored and ack sent, but the broker has not confirmed the ack yet
    link._on_publish(client, None, reply_mid, Reason(), None)
    assert client.acked == [7]


def test_message_without_replies_is_pubacked_after_handling() -> None:
    link, client = make_link(lambda topic, payload: []), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/tele", b"{}", mid=8))
    assert client.acked == [8] and client.published == []


def test_failing_handler_leaves_the_message_unacknowledged_and_asks_to_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(topic: str, payload: bytes):
        raise OSError("database gone")

    link, client = make_link(handler), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=9))
    assert client.acked == [] and client.published == []
    assert link._reconnect_requested
    assert "pendant/v1/pd-0001/alarm" in caplog.text


def test_reply_confirmed_after_a_reconnect_acks_nothing() -> None:
    # Packet ids of an old connection mean other messages in the new one: never PUBACK across them.
    link, client = make_link(lambda topic, payload: [ACK]), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=7))
    [(_, _, reply_mid)] = client.published
    link._on_connect(client, None, Flags(), Reason(), None)
    link._on_publish(client, None, reply_mid, Reason(), None)
    assert client.acked == []


def test_refused_reply_still_releases_the_stored_alarm(caplog: pytest.LogCaptureFixture) -> None:
    link, client = make_link(lambda topic, payload: [ACK]), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=7))
    [(_, _, reply_mid)] = client.published
    link._on_publish(client, None, reply_mid, Reason(is_failure=True, value=135), None)
    assert client.acked == [7]
    assert "refused our reply" in caplog.text


def test_each_message_waits_for_its_own_reply() -> None:
    link, client = make_link(lambda topic, payload: [ACK]), FakeClient()
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=1))
    link._on_message(client, None, Message("pendant/v1/pd-0001/alarm", b"{}", mid=2))
    first, second = (mid for _, _, mid in client.published)
    link._on_publish(client, None, second, Reason(), None)
    assert client.acked == [2]
    link._on_publish(client, None, first, Reason(), None)
    assert client.acked == [2, 1]


def test_connected_follows_the_broker_accepting_and_dropping_the_connection() -> None:
    link, client = make_link(lambda topic, payload: []), FakeClient()
    assert link.connected is False
    link._on_connect(client, None, Flags(), Reason(is_failure=True, value=135), None)
    assert link.connected is False  # refused: not connected
    link._on_connect(client, None, Flags(), Reason(), None)
    assert link.connected is True
    link._on_disconnect(client, None, None, Reason(), None)
    assert link.connected is False
