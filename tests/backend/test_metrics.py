"""Prometheus metrics of `pendant backend run`: the running backend on the real broker, scraped over HTTP
after real messages; the database counts and the webhook results on their own."""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from backend_samples import T0, Clock, alarm, tele, topic
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine

from pendant_backend import notify
from pendant_backend.db import make_engine, session_scope
from pendant_backend.metrics import BackendMetrics, StoreCollector
from pendant_backend.models import Alarm, Notification
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings, secret_key
from pendant_backend.webhook_sink import WebhookSink

from support import free_port

WAIT_S = 20.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample /metrics serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(port: int, condition: Callable[[Samples], bool], what: str) -> Samples:
    deadline = time.monotonic() + WAIT_S
    while not condition(samples := scrape(port)):
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {WAIT_S} s"
        time.sleep(0.05)
    return samples


@pytest.fixture
def sink(broker) -> Iterator[WebhookSink]:
    with WebhookSink(secret_key(broker.settings.webhook_key_path)) as instance:
        yield instance


# One database is enough here: the count queries run on both in test_the_database_is_counted_not_read.
@pytest.mark.broker
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_running_backend_counts_what_it_ingests(broker, sink, mqtt_client) -> None:
    from pendant_backend.accounts import provision_device

    clock = Clock()
    settings = dataclasses.replace(broker.settings, rules_interval_s=0.2, webhook_url=sink.url)
    engine = make_engine(settings.db_url)
    port = free_port()
    try:
        with BackendService(settings, engine=engine, clock=clock, metrics_port=port) as service:
            assert service.wait_ready(WAIT_S)
            pendant = mqtt_client(provision_device(settings, "pd-0001", engine=engine))
            assert not pendant.subscribe(topic("pd-0001", "alarm/ack")).is_failure
            pendant.publish(topic("pd-0001", "tele"), tele())
            pendant.publish(topic("pd-0001", "tele"), b"{not json")
            pendant.publish(topic("pd-0001", "alarm"), alarm())
            pendant.expect(topic("pd-0001", "alarm/ack"))

            samples = wait_for(
                port,
                lambda s: (
                    value(s, "pendant_ingest_messages_total", topic="tele", result="stored") == 1
                    and value(s, "pendant_webhook_attempts_total", event="alarm", result="delivered") == 1
                    and value(s, "pendant_devices", health="online") == 1
                ),
                "the heartbeat, the alarm's webhook and the pendant online",
            )
            assert value(samples, "pendant_ingest_messages_total", topic="alarm", result="stored") == 1
            assert value(samples, "pendant_ingest_rejected_total", reason="bad_json") == 1
            assert value(samples, "pendant_ingest_rejected_total", reason="unknown_device") == 0
            assert value(samples, "pendant_alarm_ack_seconds_count") == 1
            assert 0 < value(samples, "pendant_alarm_ack_seconds_sum") < WAIT_S
            assert value(samples, "pendant_ingest_lag_seconds_count", session="alarm") == 1
            assert value(samples, "pendant_ingest_lag_seconds_count", session="ingest") == 2
            assert value(samples, "pendant_alarms", state="received") == 1
            assert value(samples, "pendant_alarms", state="acknowledged") == 0
            assert value(samples, "pendant_alarms_past_escalation") == 0
            assert value(samples, "pendant_devices_loan", loan_state="provisioned") == 1
            assert value(samples, "pendant_store_up") == 1
            for session in ("alarm", "ingest"):
                assert value(samples, "pendant_broker_connected", session=session) == 1
                assert value(samples, "pendant_broker_connections_total", session=session) == 1
                assert value(samples, "pendant_ingest_queue_depth", session=session) == 0

            clock.advance(settings.escalate_after_s + 1)  # nobody took it
            wait_for(port, lambda s: value(s, "pendant_alarms_past_escalation") == 1, "the escalation")
        with pytest.raises(OSError):
            scrape(port)  # stopped with the service
    finally:
        engine.dispose()


def test_an_ingest_worker_serves_no_metrics_unless_asked(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings.for_data_dir(tmp_path), metrics_port=18890)
    assert BackendService(settings).metrics_port == 18890
    assert BackendService(settings, ingest_only=True).metrics_port == 0
    assert BackendService(settings, ingest_only=True, worker="w2", metrics_port=18891).metrics_port == 18891


def test_a_metrics_port_in_use_is_logged_and_the_backend_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    first, second = BackendMetrics(), BackendMetrics()
    port = free_port()
    assert first.serve(port)
    try:
        assert not second.serve(port)
    finally:
        first.close()
    assert second.port is None
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line and "PENDANT_METRICS_PORT" in line


def _add_alarm(engine: Engine, alarm_id: str, *, state: str, received_s: float, test: bool = False) -> None:
    with session_scope(engine) as session:
        session.add(
            Alarm(
                device_id="pd-0001",
                alarm_id=alarm_id,
                kind="panic",
                test=test,
                state=state,
                received_at=T0 + timedelta(seconds=received_s),
                payload="{}",
            )
        )


def test_the_database_is_counted_not_read(engine: Engine, devices: list[str], tmp_path: Path) -> None:
    _add_alarm(engine, "1-1", state="received", received_s=0)  # waiting past escalation at T0 + 61 s
    _add_alarm(engine, "1-2", state="received", received_s=30)  # not yet
    _add_alarm(engine, "1-3", state="acknowledged", received_s=0)
    _add_alarm(engine, "1-4", state="received", received_s=0, test=True)  # test alarms never count
    collector = StoreCollector(lambda: engine, escalate_after_s=60, clock=lambda: T0 + timedelta(seconds=61))
    samples = {(s.name, tuple(s.labels.values())): s.value for m in collector.collect() for s in m.samples}
    assert samples[("pendant_store_up", ())] == 1
    assert samples[("pendant_alarms", ("received",))] == 2
    assert samples[("pendant_alarms", ("acknowledged",))] == 1
    assert samples[("pendant_alarms", ("resolved",))] == 0
    assert samples[("pendant_alarms_past_escalation", ())] == 1
    assert samples[("pendant_devices", ("never_seen",))] == 2  # the two issued pendants, not seen yet
    assert samples[("pendant_devices_loan", ("issued",))] == 2
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    broken = StoreCollector(lambda: create_engine(f"sqlite:///{garbage}"), escalate_after_s=60, clock=Clock())
    assert [(m.name, m.samples[0].value) for m in broken.collect()] == [("pendant_store_up", 0.0)]


def test_webhook_attempts_are_counted_by_result(engine: Engine, devices: list[str]) -> None:
    metrics = BackendMetrics()
    with session_scope(engine) as session:
        for _ in range(2):
            notify.enqueue(session, event="alarm", body={}, now=T0)

    def refuse(url: str, key: bytes, item: object, now: object) -> None:
        raise OSError("connection refused")

    kwargs = {"url": "http://127.0.0.1:9/", "key": b"k", "on_result": metrics.webhook_result}
    notify.deliver_due(engine, now=T0, send=refuse, limit=1, **kwargs)
    notify.deliver_due(engine, now=T0, send=lambda *args: None, limit=1, **kwargs)
    with session_scope(engine) as session:  # the first one's last attempt
        first = session.get(Notification, 1)
        first.attempts = notify.MAX_ATTEMPTS - 1
        session.add(first)
    notify.deliver_due(engine, now=T0 + timedelta(days=1), send=refuse, **kwargs)

    def count(result: str) -> float | None:
        return metrics.registry.get_sample_value(
            "pendant_webhook_attempts_total", {"event": "alarm", "result": result}
        )

    assert (count("failed"), count("delivered"), count("gave_up")) == (1, 1, 1)
    assert (
        metrics.registry.get_sample_value(
            "pendant_webhook_attempts_total", {"event": "health", "result": "failed"}
        )
        == 0
    )
