"""The running backend on the real broker, on SQLite and on PostgreSQL: the pendant hears an operator's
ack, gets its config retained, and an unacknowledged alarm escalates to the webhook, by a clock the test
moves."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from backend_samples import Clock, alarm
from test_notify import Receiver

from pendant_backend import alarms, configs, notify
from pendant_backend.db import make_engine
from pendant_backend.service import BackendService
from pendant_backend.settings import secret_key
from pendant_backend.webhook_sink import WebhookSink

pytestmark = pytest.mark.broker
WAIT_S = 20


@pytest.fixture
def broker(broker_any_db):
    """This module's tests run on both databases: `mqtt_client` and `provision` use this broker."""
    return broker_any_db


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver([])
    yield instance
    instance.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(broker_any_db, receiver, clock) -> Iterator[BackendService]:
    settings = dataclasses.replace(
        broker_any_db.settings, rules_interval_s=0.2, escalate_after_s=60, webhook_url=receiver.url
    )
    engine = make_engine(settings.db_url)
    instance = BackendService(settings, engine=engine, clock=clock)
    instance.start()
    try:
        assert instance.wait_ready(WAIT_S)
        yield instance
    finally:
        instance.stop()
        engine.dispose()


def hooks(receiver: Receiver, event: str) -> list[tuple[dict, bytes]]:
    return [(h, b) for h, b in receiver.calls if h["X-Pendant-Event"] == event]


def wait_for(condition, what: str, timeout: float = WAIT_S) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_ack_config_and_escalation_reach_the_pendant_and_the_webhook(
    broker_any_db, service, receiver, clock, mqtt_client
) -> None:
    from pendant_backend.accounts import provision_device

    config = provision_device(broker_any_db.settings, "pd-0001", engine=service.engine)
    pendant = mqtt_client(config)
    for leaf in ("alarm/ack", "config"):
        assert not pendant.subscribe(f"pendant/v1/pd-0001/{leaf}").is_failure
    # Its first config, published when it was provisioned, is retained and arrives.
    first = pendant.expect("pendant/v1/pd-0001/config")
    assert json.loads(first.payload)["rev"] == 1

    pendant.publish("pendant/v1/pd-0001/alarm", alarm())
    assert json.loads(pendant.expect("pendant/v1/pd-0001/alarm/ack").payload)["state"] == "received"
    wait_for(lambda: len(hooks(receiver, "alarm")) == 1, "the alarm webhook")

    clock.advance(61)  # nobody took it: escalation 1, and the webhook again
    wait_for(lambda: len(hooks(receiver, "escalation")) == 1, "the escalation webhook")
    [(headers, body)] = hooks(receiver, "escalation")
    assert json.loads(body)["level"] == 1
    key = secret_key(broker_any_db.settings.webhook_key_path)
    assert notify.verify(key, headers["X-Pendant-Timestamp"], body, headers["X-Pendant-Signature"])

    alarms.acknowledge_alarm(service.engine, ref="pd-0001/12-3", operator="Ann")
    assert json.loads(pendant.expect("pendant/v1/pd-0001/alarm/ack").payload) == {
        "alarm_id": "12-3",
        "state": "acknowledged",
    }
    configs.set_config(service.engine, scope="fleet", changes={"heartbeat_s": 300}, author="it")
    second = json.loads(pendant.expect("pendant/v1/pd-0001/config").payload)
    assert (second["rev"], second["heartbeat_s"]) == (2, 300)
    assert len(hooks(receiver, "escalation")) == 1


@pytest.fixture
def sink(broker_any_db) -> Iterator[WebhookSink]:
    """The demo's receiver, with the backend's own webhook key."""
    with WebhookSink(secret_key(broker_any_db.settings.webhook_key_path)) as instance:
        yield instance


def test_an_alarm_nobody_takes_reaches_the_webhook_at_every_interval(
    broker_any_db, sink, clock, mqtt_client
) -> None:
    from pendant_backend.accounts import provision_device

    settings = dataclasses.replace(
        broker_any_db.settings, rules_interval_s=0.2, escalate_after_s=60, webhook_url=sink.url
    )
    assert settings.escalate_max == 0  # the default: no maximum
    engine = make_engine(settings.db_url)
    try:
        with BackendService(settings, engine=engine, clock=clock) as service:
            assert service.wait_ready(WAIT_S)
            pendant = mqtt_client(provision_device(settings, "pd-0001", engine=engine))
            assert not pendant.subscribe("pendant/v1/pd-0001/alarm/ack").is_failure
            pendant.publish("pendant/v1/pd-0001/alarm", alarm())
            pendant.expect("pendant/v1/pd-0001/alarm/ack")
            assert sink.wait_for(lambda seen: [d.event for d in seen] == ["alarm"], WAIT_S)
            for level in (1, 2, 3):
                clock.advance(60)
                assert sink.wait_for(
                    lambda seen, n=level: len([d for d in seen if d.event == "escalation"]) == n, WAIT_S
                ), f"escalation {level} did not reach the webhook"
            alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock())
    finally:
        engine.dispose()
    escalations = [d for d in sink.deliveries if d.event == "escalation"]
    assert [(d.alarm_ref, d.level, d.verified) for d in escalations] == [
        ("pd-0001/12-3", 1, True),
        ("pd-0001/12-3", 2, True),
        ("pd-0001/12-3", 3, True),
    ]
