"""The backend on the real broker: every alarm stored once and acked, whatever stops or crashes.

The pendant clients connect as the firmware does: MQTT 3.1.1, persistent session, subscribed to their
`alarm/ack`. Waits poll for a state with a generous limit; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select

from pendant_backend import mqtt_link
from pendant_backend.db import engine_for
from pendant_backend.models import Alarm
from pendant_backend.mqtt_link import RETRY_WITH_ALARMS_MAX_S
from pendant_backend.service import BackendService

pytestmark = pytest.mark.broker

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
WAIT_S = 20.0


def alarm(alarm_id: str) -> bytes:
    data = json.loads((EXAMPLES / "alarm.json").read_bytes())
    data["alarm_id"] = alarm_id
    return json.dumps(data, separators=(",", ":")).encode()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout} s"
        time.sleep(0.05)


def stored(settings) -> dict[str, int]:
    """alarm_id -> resends, for every stored alarm."""
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            return {a.alarm_id: a.resends for a in session.exec(select(Alarm))}
    finally:
        engine.dispose()


def acked_ids(pendant, count: int) -> list[str]:
    """The alarm ids of the next `count` acks the pendant receives."""
    return [json.loads(pendant.expect(timeout=WAIT_S).payload)["alarm_id"] for _ in range(count)]


@pytest.fixture
def pendant(provision, mqtt_client):
    """pd-0001, connected and subscribed to its acks."""
    client = mqtt_client(provision("pd-0001"))
    assert not client.subscribe("pendant/v1/pd-0001/alarm/ack").is_failure
    return client


def test_alarm_is_stored_before_the_ack_reaches_the_pendant(broker, backend, pendant) -> None:
    pendant.publish("pendant/v1/pd-0001/alarm", alarm("12-3"))
    ack = pendant.expect("pendant/v1/pd-0001/alarm/ack")
    assert ack.payload == (EXAMPLES / "alarm-ack.json").read_bytes().rstrip(b"\n")
    # The ack is sent only after the commit, so the alarm is there the moment the ack is.
    assert stored(broker.settings) == {"12-3": 0}


def test_duplicate_alarm_is_stored_once_and_acked_twice(broker, backend, pendant) -> None:
    pendant.publish("pendant/v1/pd-0001/alarm", alarm("12-3"))
    pendant.publish("pendant/v1/pd-0001/alarm", alarm("12-3"))
    assert acked_ids(pendant, 2) == ["12-3", "12-3"]
    assert stored(broker.settings) == {"12-3": 1}


def test_malformed_alarm_is_logged_with_its_topic_and_ingest_goes_on(
    broker, backend, pendant, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pendant_backend.ingest"):
        pendant.publish(
            "pendant/v1/pd-0001/alarm", (EXAMPLES / "invalid" / "alarm-truncated.json").read_bytes()
        )
        pendant.publish(
            "pendant/v1/pd-0001/alarm", (EXAMPLES / "invalid" / "alarm-long-id.json").read_bytes()
        )
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("1-1"))
        # The first ack is for the valid alarm: the invalid ones were not acked.
        assert acked_ids(pendant, 1) == ["1-1"]
    assert stored(broker.settings) == {"1-1": 0}
    assert backend.ingest.invalid_counts == {"bad_json": 1, "bad_alarm_id": 1}
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 2
    assert all("pendant/v1/pd-0001/alarm" in line for line in rejected)


def test_alarms_sent_while_the_backend_is_stopped_arrive_when_it_starts(broker, backend, pendant) -> None:
    backend.stop()
    ids = [f"3-{n}" for n in range(1, 11)]
    for alarm_id in ids:
        pendant.publish("pendant/v1/pd-0001/alarm", alarm(alarm_id))
    with BackendService(broker.settings):
        assert sorted(acked_ids(pendant, len(ids))) == sorted(ids)
    assert stored(broker.settings) == dict.fromkeys(ids, 0)


def test_a_failed_store_leaves_the_alarm_on_the_broker_until_it_succeeds(
    broker, backend, pendant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = backend.ingest._store_alarm
    failures = []

    def fail_once(*args, **kwargs):
        if not failures:
            failures.append(args)
            raise OSError("disk unplugged")
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.ingest, "_store_alarm", fail_once)
    with caplog.at_level(logging.ERROR, logger="pendant_backend.mqtt_link"):
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("5-1"))
        # Not acked, so the broker delivers it again after the link reconnects, and then it is stored.
        assert acked_ids(pendant, 1) == ["5-1"]
    assert failures and stored(broker.settings) == {"5-1": 0}
    assert any("pendant/v1/pd-0001/alarm" in r.getMessage() for r in caplog.records)


def test_handler_exception_on_other_topics_never_stops_ingest(
    broker, backend, pendant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("bug in heartbeat handling")

    # Every path (the lean batch, the ORM batch and one by one) makes a heartbeat's row through it.
    monkeypatch.setattr(backend.ingest, "_heartbeat_row", broken)

    with caplog.at_level(logging.ERROR, logger="pendant_backend.ingest"):
        pendant.publish("pendant/v1/pd-0001/tele", (EXAMPLES / "tele.json").read_bytes())
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("6-1"))
        assert acked_ids(pendant, 1) == ["6-1"]
        # The heartbeat comes on the other session: it may be handled after the alarm.
        wait_until(lambda: backend.ingest.invalid_counts["handler_error"] == 1, "the heartbeat to fail")
    assert any("pendant/v1/pd-0001/tele" in r.getMessage() for r in caplog.records)
    assert backend.ingest.invalid_counts["handler_error"] == 1


class BackendProcess:
    """`pendant backend run` as a child process, so that it can be killed with SIGKILL."""

    def __init__(self, settings) -> None:
        env = {
            **os.environ,
            "PENDANT_DATA_DIR": str(settings.data_dir),
            "PENDANT_MQTT_PORT": str(settings.mqtt_port),
            "PENDANT_DB_URL": settings.db_url,
        }
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from pendant_tools.cli import main; main()", "backend", "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if "ready: every session" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(WAIT_S), "the backend did not subscribe:\n" + "".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def backend_process(broker):
    started: list[BackendProcess] = []

    def start() -> BackendProcess:
        process = BackendProcess(broker.settings)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.kill()


def test_kill_9_of_the_backend_loses_and_doubles_nothing(broker, pendant, backend_process) -> None:
    first = backend_process()
    before = [f"7-{n}" for n in range(1, 31)]
    for alarm_id in before:
        pendant.publish("pendant/v1/pd-0001/alarm", alarm(alarm_id))
    # Kill it in the middle of its work: some alarms stored, probably some not yet.
    wait_until(lambda: len(stored(broker.settings)) >= 1, "the first alarm to be stored")
    first.kill()
    after = [f"8-{n}" for n in range(1, 11)]
    for alarm_id in after:
        pendant.publish("pendant/v1/pd-0001/alarm", alarm(alarm_id))
    second = backend_process()
    wait_until(lambda: len(stored(broker.settings)) == len(before + after), "all alarms to be stored")
    assert set(stored(broker.settings)) == set(before + after)
    # Every alarm is acked at least once (twice if the first backend died between ack and PUBACK).
    acked: set[str] = set()
    while acked != set(before + after):
        acked.update(acked_ids(pendant, 1))
    assert any("ALARM pd-0001/8-10" in line for line in second.lines), "no readable alarm line in the log"


def test_pendant_backend_run_says_when_no_webhook_is_configured(broker, backend_process) -> None:
    # Nobody is pushed an alarm then: the person starting it must read that before it runs.
    process = backend_process()
    [line] = [line for line in process.lines if "no webhook configured" in line]
    assert "WARNING" in line and "alarms reach only the console" in line and "PENDANT_WEBHOOK_URL" in line


def test_alarms_queued_on_the_broker_survive_its_kill_9(broker, backend, pendant) -> None:
    backend.stop()
    ids = [f"9-{n}" for n in range(1, 6)]
    for alarm_id in ids:
        pendant.publish("pendant/v1/pd-0001/alarm", alarm(alarm_id))
    # The broker saves every 30 s: make it save now (SIGUSR1), wait until it has, then crash it. What it
    # would lose without a save, the pendant resends (tests/backend/test_broker_recovery.py).
    db_file = broker.broker.persistence_dir / "mosquitto.db"
    os.kill(broker.broker.pid, signal.SIGUSR1)
    wait_until(
        lambda: db_file.exists() and all(alarm(i) in db_file.read_bytes() for i in ids),
        "the broker to save the queued alarms",
    )
    broker.broker.kill()
    broker.broker.start()
    with BackendService(broker.settings) as service:
        assert service.wait_ready(WAIT_S)
        wait_until(lambda: set(stored(broker.settings)) == set(ids), "the queued alarms to be stored")
        # The pendant reconnects to the restarted broker on its own and gets every ack.
        assert sorted(acked_ids(pendant, len(ids))) == sorted(ids)


def test_backend_reconnects_after_a_broker_restart(broker, backend, pendant) -> None:
    connections = backend.link.connect_count
    broker.broker.kill()
    broker.broker.start()
    wait_until(
        lambda: backend.link.connect_count > connections and backend.link.subscribed.is_set(),
        "the backend to reconnect and subscribe",
    )
    pendant.publish("pendant/v1/pd-0001/alarm", alarm("10-1"))
    assert acked_ids(pendant, 1) == ["10-1"]


def test_backend_publishes_retained_config_that_the_pendant_receives(broker, backend, pendant) -> None:
    config = (EXAMPLES / "config.json").read_bytes().rstrip(b"\n")
    # Once the backend has put back what a fresh broker lacks (its own configs, pendant_backend.recovery).
    wait_until(lambda: backend.recovery.idle, "the backend to check the broker's mark")
    taken = threading.Event()
    backend.link.publish("pendant/v1/pd-0001/config", config, retain=True, on_taken=taken.set)
    assert taken.wait(WAIT_S), "the broker did not take the config"
    assert not pendant.subscribe("pendant/v1/pd-0001/config").is_failure
    assert pendant.expect("pendant/v1/pd-0001/config").payload == config
    # Once it has arrived, the broker holds it: every new subscription gets it as retained.
    assert not pendant.subscribe("pendant/v1/pd-0001/config").is_failure
    message = pendant.expect("pendant/v1/pd-0001/config")
    assert (message.payload, message.retain) == (config, True)


def test_a_message_queued_by_another_thread_goes_out_without_waiting_for_the_link(
    broker, backend, pendant, monkeypatch
) -> None:
    # The link's idle wait made longer than the test waits: only the wake-up can send these in time.
    monkeypatch.setattr(mqtt_link, "IDLE_WAIT_S", 60.0)
    wait_until(lambda: backend.recovery.idle, "the backend to check the broker's mark")
    assert not pendant.subscribe("pendant/v1/pd-0001/cmd").is_failure
    time.sleep(0.3)  # the link's thread is in its long wait now
    for n in range(3):
        taken = threading.Event()
        payload = b'{"id":"wake-%d","op":"locate"}' % n
        backend.link.publish("pendant/v1/pd-0001/cmd", payload, on_taken=taken.set)
        assert taken.wait(15), f"message {n} waited for the link's idle wait"
        assert pendant.expect("pendant/v1/pd-0001/cmd").payload == payload


def refuse_alarms(engine, refuse: bool) -> None:
    """Make the database refuse (or accept again) every new alarm, as a full disk would."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON alarms BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                if refuse
                else "DROP TRIGGER refuse"
            )
        elif refuse:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ "
                "LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON alarms FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            connection.exec_driver_sql("DROP TRIGGER refuse ON alarms")
            connection.exec_driver_sql("DROP FUNCTION refuse()")


def test_with_an_alarm_pending_the_backend_retries_the_database_often(broker, backend, pendant) -> None:
    engine = engine_for(broker.settings)
    try:
        refuse_alarms(engine, True)
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("11-1"))
        # Enough failed tries for a 1, 2, 4, 8 s backoff to have grown past its 2 s ceiling.
        wait_until(lambda: backend.link.retries >= 4, "four retries", timeout=60)
        assert backend.link.longest_retry_pause_s <= RETRY_WITH_ALARMS_MAX_S
        assert stored(broker.settings) == {}
        refuse_alarms(engine, False)
        assert acked_ids(pendant, 1) == ["11-1"]
        assert stored(broker.settings) == {"11-1": 0}
    finally:
        engine.dispose()
