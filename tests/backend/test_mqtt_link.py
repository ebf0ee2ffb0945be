"""The order of the link's acknowledgements, on a fake paho client: PUBACK only after the reply's PUBACK."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from pendant_backend.ingest import Reply
from pendant_backend.mqtt_link import MqttLink, Priority


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


# ---- batches -------------------------------------------------------------------------------------

TELE = "pendant/v1/pd-0001/tele"
ALARM = "pendant/v1/pd-0001/alarm"


def make_batch_link(batch_handler, handler=lambda topic, payload: []) -> MqttLink:
    return MqttLink(
        host="127.0.0.1",
        port=1,
        username="u",
        password="p",
        subscriptions=["t/#"],
        handler=handler,
        batch_handler=batch_handler,
        batch_size=3,
    )


def test_a_batch_is_handled_in_arrival_order_and_each_message_waits_for_its_own_replies() -> None:
    seen: list[list[str]] = []

    def batch(messages):
        seen.append([payload.decode() for _, payload in messages])
        return [[ACK] if topic == ALARM else [] for topic, _ in messages]

    link, client = make_batch_link(batch), FakeClient()
    link._on_message(client, None, Message(TELE, b"1", mid=1))
    link._on_message(client, None, Message(ALARM, b"2", mid=2))
    assert seen == [] and client.acked == []  # the batch is still open
    link._on_message(client, None, Message(TELE, b"3", mid=3))  # the batch is full: handled now
    assert seen == [["1", "2", "3"]]
    # The heartbeats are acked once committed; the alarm only when the broker took its ack.
    assert client.acked == [1, 3]
    [(_, _, reply_mid)] = client.published
    link._on_publish(client, None, reply_mid, Reason(), None)
    assert client.acked == [1, 3, 2]


def test_a_message_the_batch_could_not_store_stays_unacknowledged() -> None:
    link, client = make_batch_link(lambda messages: [[], None, []]), FakeClient()
    for mid in (1, 2, 3):
        link._on_message(client, None, Message(TELE, str(mid).encode(), mid=mid))
    assert client.acked == [1, 3]
    assert link._reconnect_requested


def test_a_failing_batch_handler_falls_back_to_one_message_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def batch(messages):
        raise RuntimeError("bug in the batch path")

    one_by_one: list[bytes] = []

    def handler(topic: str, payload: bytes):
        one_by_one.append(payload)
        if payload == b"2":
            raise OSError("database gone")
        return []

    link, client = make_batch_link(batch, handler), FakeClient()
    for mid in (1, 2, 3):
        link._on_message(client, None, Message(TELE, str(mid).encode(), mid=mid))
    assert one_by_one == [b"1", b"2", b"3"]
    assert client.acked == [1, 3] and link._reconnect_requested
    assert "handling 3 messages together failed" in caplog.text


def test_an_open_batch_is_dropped_on_a_new_connection() -> None:
    # Its packet ids belong to the old connection; the broker delivers the messages again.
    handled: list[int] = []

    def batch(messages):
        handled.append(len(messages))
        return [[]] * len(messages)

    link, client = make_batch_link(batch), FakeClient()
    link._on_message(client, None, Message(TELE, b"1", mid=1))
    link._on_connect(client, None, Flags(), Reason(), None)
    link._on_message(client, None, Message(TELE, b"2", mid=1))
    link._on_message(client, None, Message(TELE, b"3", mid=2))
    link._on_message(client, None, Message(TELE, b"4", mid=3))
    assert handled == [3] and client.acked == [1, 2, 3]


def test_a_link_names_its_own_session_and_drops_retired_subscriptions() -> None:
    unsubscribed: list[list[str]] = []

    class Client(FakeClient):
        def unsubscribe(self, topics):
            unsubscribed.append(topics)
            return 0, 2

    link = MqttLink(
        host="127.0.0.1",
        port=1,
        username="u",
        password="p",
        client_id="u-alarms",
        subscriptions=["a/+"],
        unsubscribe=["b/+"],
        handler=lambda topic, payload: [],
    )
    assert link.client_id == "u-alarms"
    link._on_connect(Client(), None, Flags(), Reason(), None)
    assert unsubscribed == [["b/+"]]


def test_a_batch_waits_while_the_alarm_session_handles_an_alarm() -> None:
    priority = Priority()
    alarm_started, alarm_may_finish = threading.Event(), threading.Event()
    order: list[str] = []

    def alarm_handler(topic, payload):
        alarm_started.set()
        assert alarm_may_finish.wait(5)
        order.append("alarm stored")
        return []

    def batch(messages):
        order.append("batch stored")
        return [[] for _ in messages]

    alarm_link = MqttLink(
        host="127.0.0.1",
        port=1,
        username="a",
        password="p",
        subscriptions=["t/#"],
        handler=alarm_handler,
        holds=priority,
    )
    ingest_link = make_batch_link(batch)
    ingest_link.yields_to = priority
    alarm = threading.Thread(
        target=alarm_link._on_message, args=(FakeClient(), None, Message(ALARM, b"a", mid=1))
    )
    alarm.start()
    assert alarm_started.wait(5)
    ingest = threading.Thread(
        target=lambda: [
            ingest_link._on_message(FakeClient(), None, Message(TELE, b"%d" % n, mid=n)) for n in (1, 2, 3)
        ]
    )
    ingest.start()
    ingest.join(0.3)
    assert ingest.is_alive() and order == []  # the full batch waits for the alarm
    alarm_may_finish.set()
    alarm.join(5)
    ingest.join(5)
    assert order == ["alarm stored", "batch stored"]


def test_the_wait_for_an_alarm_is_bounded() -> None:
    priority = Priority()
    with priority.first():
        assert priority.wait_turn(0.05) is False  # held: the batch goes on after the bound
    assert priority.wait_turn(0.05) is True
