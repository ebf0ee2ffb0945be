"""A broker that crashes (kill -9) loses what changed since its last save; nothing of it may stay lost.

The pendants here act as the firmware does: MQTT 3.1.1 on their own accounts, a persistent session, the
subscriptions made again on every connect, and each alarm resent until its `alarm/ack`. Waits poll for
a state with a generous limit; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, col, func, select

from pendant_backend import broker as broker_module
from pendant_backend import commands, configs, outbound, recovery
from pendant_backend.broker import add_missing_service_acls, dynsec_document, new_password
from pendant_backend.db import engine_for
from pendant_backend.models import Alarm, Command, Device, Outbound, utc_now
from pendant_backend.service import BackendService

pytestmark = pytest.mark.broker

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
WAIT_S = 30.0
RESEND_S = 1.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout} s"
        time.sleep(0.05)


def alarm(alarm_id: str) -> bytes:
    data = json.loads((EXAMPLES / "alarm.json").read_bytes())
    data["alarm_id"] = alarm_id
    return json.dumps(data, separators=(",", ":")).encode()


class Pendant:
    """A device account that behaves like the firmware towards the broker: keeps every alarm until its
    `alarm/ack` and resends it every RESEND_S while it waits; records the commands and configs it gets."""

    def __init__(self, settings: Any, config: dict[str, Any]) -> None:
        self.device_id = config["device_id"]
        self.root = f"pendant/v1/{self.device_id}/"
        self.outbox: dict[str, bytes] = {}
        self.acks: list[str] = []
        self.commands: list[str] = []
        self.configs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self.client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = settings.mqtt_host, settings.mqtt_port
        self._resender = threading.Thread(target=self._resend, daemon=True)

    def start(self) -> Pendant:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._resender.start()
        wait_until(self.client.is_connected, f"{self.device_id} to connect")
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def raise_alarm(self, alarm_id: str) -> None:
        with self._lock:
            self.outbox[alarm_id] = alarm(alarm_id)
        self.client.publish(self.root + "alarm", alarm(alarm_id), qos=1)

    def waiting(self) -> int:
        with self._lock:
            return len(self.outbox)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(self.root + leaf, 1) for leaf in ("alarm/ack", "config", "cmd")])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        data = json.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/alarm/ack"):
                self.acks.append(data["alarm_id"])
                self.outbox.pop(data["alarm_id"], None)
            elif message.topic.endswith("/cmd"):
                self.commands.append(data["id"])
            elif message.topic.endswith("/config"):
                self.configs.append(data)

    def _resend(self) -> None:
        while not self._stop.wait(RESEND_S):
            with self._lock:
                waiting = list(self.outbox.values())
            if self.client.is_connected():
                for payload in waiting:
                    self.client.publish(self.root + "alarm", payload, qos=1)


def retained_config(settings: Any, config: dict[str, Any]) -> dict[str, Any] | None:
    """The config the broker holds for the device, read by a fresh clean session on its account."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=config["device_id"],
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
    topic = f"pendant/v1/{config['device_id']}/config"
    probe_topic = f"pendant/v1/{config['device_id']}/cmd"

    def on_connect(c: paho.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(c: paho.Client, u: Any, mid: int, reasons: Any, p: Any) -> None:
        # A retained message comes right after the SUBACK; a second SUBACK tells that it had its chance.
        if not done.is_set():
            c.subscribe(probe_topic, qos=1)
            done.set()
        else:
            finished.set()

    finished = threading.Event()
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda c, u, m: got.append(m.payload) if m.topic == topic else None
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30)
    client.loop_start()
    try:
        assert finished.wait(WAIT_S), f"no SUBACK for {config['device_id']}"
    finally:
        client.disconnect()
        client.loop_stop()
    return json.loads(got[-1]) if got else None


def alarm_counts(engine: Any) -> dict[tuple[str, str], int]:
    """(device id, alarm id) -> how many rows the database holds for it."""
    with Session(engine) as session:
        rows = session.exec(
            select(Alarm.device_id, Alarm.alarm_id, func.count()).group_by(
                col(Alarm.device_id), col(Alarm.alarm_id)
            )
        )
        return {(device_id, alarm_id): count for device_id, alarm_id, count in rows}


@pytest.fixture
def long_autosave(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker saves only when told (SIGUSR1) or on a clean stop, so the test decides what it loses."""
    monkeypatch.setattr(broker_module, "AUTOSAVE_INTERVAL_S", 3600)


@pytest.fixture
def fleet(long_autosave: None, broker, provision) -> Iterator[dict[str, dict[str, Any]]]:  # noqa: ANN001
    # The broker fixture started before the patch took effect: restart it on the patched config.
    broker.broker.stop()
    broker.broker.start()
    yield {f"pd-{n:04d}": provision(f"pd-{n:04d}") for n in range(1, 7)}


def settled(service: BackendService) -> bool:
    """The recovery has checked the current connection and its mark was taken, and nothing waits."""
    assert service.recovery is not None and service.engine is not None
    with Session(service.engine) as session:
        waiting = session.exec(select(func.count()).where(col(Outbound.sent_at).is_(None))).one()
    return service.recovery.idle and waiting == 0


def crash(broker, *, lose_everything: bool) -> None:  # noqa: ANN001
    broker.broker.kill()
    if lose_everything:
        (broker.broker.persistence_dir / "mosquitto.db").unlink(missing_ok=True)
    broker.broker.start()


@pytest.mark.parametrize("lose_everything", [True, False], ids=["nothing-saved", "saved-before"])
def test_kill_9_with_alarms_in_flight_loses_nothing(broker, fleet, lose_everything: bool) -> None:  # noqa: ANN001
    settings = broker.settings
    engine = engine_for(settings)
    pendants = {device_id: Pendant(settings, config).start() for device_id, config in fleet.items()}
    try:
        with BackendService(settings) as service:
            assert service.wait_ready(WAIT_S)
            wait_until(lambda: settled(service), "the configs to be taken and the first mark written")
            if not lose_everything:
                os.kill(broker.broker.pid, signal.SIGUSR1)  # the last save before the crash
                wait_until(lambda: (broker.broker.persistence_dir / "mosquitto.db").exists(), "the save")
                time.sleep(0.5)  # the broker writes the file whole; let it finish before we change more
            # After the save: a config change and commands the broker takes, then loses in the crash.
            configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 600})
            sent = [
                commands.send(engine, device_id=device_id, cmd="vibrate", requested_by="test").command_id
                for device_id in ("pd-0002", "pd-0003")
            ]
            wait_until(lambda: settled(service), "the change and the commands to be taken")
            wait_until(
                lambda: all(
                    c in pendants[d].commands for c, d in zip(sent, ("pd-0002", "pd-0003"), strict=True)
                ),
                "the pendants to get the commands",
            )
        # The backend is down; the pendants raise alarms that the broker queues for it.
        alarm_ids = {device_id: [f"7-{n}" for n in range(1, 4)] for device_id in pendants}
        for device_id, ids in alarm_ids.items():
            for alarm_id in ids:
                pendants[device_id].raise_alarm(alarm_id)
        time.sleep(RESEND_S * 2)  # resends pile up on the broker too: each must be counted once
        # The pendants did not answer the commands: from the backend's view they are still open.
        for pendant in pendants.values():
            pendant.commands.clear()
        crash(broker, lose_everything=lose_everything)
        for pendant in pendants.values():
            wait_until(pendant.client.is_connected, f"{pendant.device_id} to reconnect")
        pendants["pd-0001"].stop()  # its client id, for a fresh subscriber that reads what the broker holds
        before = retained_config(settings, fleet["pd-0001"])
        pendants["pd-0001"] = Pendant(settings, fleet["pd-0001"]).start()
        for alarm_id in alarm_ids["pd-0001"]:
            pendants["pd-0001"].raise_alarm(alarm_id)  # still on its flash
        # What the crash lost: the change to pd-0001's config (and, with nothing saved, every config).
        with Session(engine) as session:
            rev = session.get(Device, "pd-0001").config_rev
        assert before is None or before["rev"] < rev

        with BackendService(settings) as service:
            assert service.wait_ready(WAIT_S)
            wait_until(lambda: all(p.waiting() == 0 for p in pendants.values()), "every alarm to be acked")
            wait_until(lambda: settled(service), "the recovery to finish")
            assert service.recovery.recoveries == 1
            assert service.recovery.last is not None
            assert service.recovery.last["full"] is lose_everything
            wait_until(
                lambda: all(
                    c in pendants[d].commands for c, d in zip(sent, ("pd-0002", "pd-0003"), strict=True)
                ),
                "the unanswered commands to be sent again",
            )
        assert alarm_counts(engine) == {(d, a): 1 for d, ids in alarm_ids.items() for a in ids}
        for pendant in pendants.values():
            pendant.stop()
        with Session(engine) as session:
            expected = {d.device_id: configs.published_message(d) for d in session.exec(select(Device))}
        for device_id, config in fleet.items():
            held = retained_config(settings, config)
            assert held is not None, f"the broker holds no config for {device_id}"
            assert held == json.loads(expected[device_id][1]), device_id
    finally:
        for pendant in pendants.values():
            pendant.stop()
        engine.dispose()


def test_a_backend_restart_on_an_intact_broker_sends_nothing_again(broker, provision) -> None:  # noqa: ANN001
    provision("pd-0001")
    with BackendService(broker.settings) as service:
        assert service.wait_ready(WAIT_S)
        wait_until(lambda: settled(service), "the first mark")
        assert service.recovery.recoveries == 1  # the broker had no mark: its first start
    with BackendService(broker.settings) as service:
        assert service.wait_ready(WAIT_S)
        wait_until(lambda: settled(service), "the check")
        assert service.recovery.recoveries == 0


def test_the_backend_subscribes_again_on_a_broker_that_lost_its_session(broker, provision) -> None:  # noqa: ANN001
    config = provision("pd-0001")
    with BackendService(broker.settings) as service:
        assert service.wait_ready(WAIT_S)
        connections = service.link.connect_count
        crash(broker, lose_everything=True)
        wait_until(
            lambda: service.link.connect_count > connections and service.link.subscribed.is_set(),
            "the backend to reconnect and subscribe",
        )
        pendant = Pendant(broker.settings, config).start()
        try:
            pendant.raise_alarm("3-1")
            wait_until(lambda: pendant.acks == ["3-1"], "the ack from the fresh broker")
        finally:
            pendant.stop()


def test_a_device_cannot_read_or_write_the_mark(broker, provision, mqtt_client) -> None:  # noqa: ANN001
    client = mqtt_client(provision("pd-0001"))
    assert client.subscribe(broker_module.MARK_TOPIC).is_failure


# ---- pure parts and the database ------------------------------------------------------------------


def test_assess_trusts_only_a_mark_that_names_a_message_the_database_holds() -> None:
    mark = recovery.Mark(seq=5, at="2026-12-04T10:00:00+00:00")
    assert recovery.assess(None, stored_at=None, doubtful=False).after is None
    assert recovery.assess(mark, stored_at=mark.at, doubtful=False).after == 5
    assert recovery.assess(mark, stored_at=None, doubtful=False).after is None
    assert recovery.assess(mark, stored_at="2026-12-04T10:00:01+00:00", doubtful=False).after is None
    assert recovery.assess(mark, stored_at=mark.at, doubtful=True).after is None
    assert recovery.assess(recovery.Mark(0, None), stored_at=None, doubtful=False).after == 0


def test_marks_round_trip_and_junk_is_no_mark() -> None:
    mark = recovery.Mark(seq=12, at="2026-12-04T10:00:00+00:00")
    assert recovery.parse_mark(recovery.encode_mark(mark)) == mark
    for junk in (b"", b"[]", b'{"seq":-1,"at":null}', b'{"seq":"3","at":null}', b'{"probe":"x"}'):
        assert recovery.parse_mark(junk) is None


def test_an_older_dynsec_file_gets_the_mark_acls_once() -> None:
    secrets = broker_module.BrokerSecrets("pendant_admin", new_password(), "pendant_backend", new_password())
    document = dynsec_document(secrets)
    for role in document["roles"]:
        role["acls"] = [a for a in role["acls"] if a["topic"] != broker_module.MARK_TOPIC]
    assert add_missing_service_acls(document)
    assert not add_missing_service_acls(document)
    assert document["roles"] == dynsec_document(secrets)["roles"]


def test_outbound_serves_acks_before_configs_and_knows_its_high_water(engine) -> None:  # noqa: ANN001
    now = utc_now()
    with Session(engine) as session:
        for n in range(3):
            outbound.enqueue(
                session, topic=f"pendant/v1/pd-000{n}/config", payload=b"{}", now=now, retain=True
            )
        outbound.enqueue(session, topic="pendant/v1/pd-0001/alarm/ack", payload=b"{}", now=now)
        session.commit()
        assert outbound.high_water(session) == 0
    due = outbound.due(engine, now=now)
    assert [m.topic for m in due][0] == "pendant/v1/pd-0001/alarm/ack"
    assert [m.retain for m in due] == [False, True, True, True]
    first_config = min(m.id for m in due if m.retain)
    outbound.mark_sent(engine, [(first_config, now)])
    with Session(engine) as session:
        assert outbound.high_water(session) == first_config
        assert outbound.send_again_after(session, 0) == 1
        session.commit()
        assert outbound.high_water(session) == 0


def test_unanswered_commands_are_queued_again_once(engine, devices) -> None:  # noqa: ANN001
    first = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="test")
    answered = commands.send(engine, device_id="pd-0002", cmd="vibrate", requested_by="test")
    with Session(engine) as session:
        row = session.get(Command, answered.id)
        row.answered_at = utc_now()
        session.add(row)
        for message in session.exec(select(Outbound)):
            message.sent_at = utc_now()
            session.add(message)
        session.commit()
        assert commands.send_unanswered_again(session, now=utc_now()) == 1
        session.commit()
        # A second pass finds the message waiting and queues nothing more.
        assert commands.send_unanswered_again(session, now=utc_now()) == 0
        waiting = session.exec(select(Outbound).where(col(Outbound.sent_at).is_(None))).all()
        assert [commands.command_id_of(m.payload) for m in waiting] == [first.command_id]
        everything = session.exec(select(Outbound)).all()
        [carrier] = [m.id for m in everything if commands.command_id_of(m.payload) == answered.command_id]
        assert commands.answered_messages(session, everything) == {carrier}
