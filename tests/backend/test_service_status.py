"""Whether ingest is alive, as the console reads it: the pure rule, the beats in the database (SQLite and
PostgreSQL), and a real backend on the real broker beating, losing the broker and stopping."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from backend_samples import T0
from sqlmodel import Session, select

from pendant_backend import service_status
from pendant_backend.db import make_engine
from pendant_backend.models import ServiceBeat, utc_now
from pendant_backend.service import BackendService
from pendant_backend.service_status import IngestStatus
from pendant_backend.settings import Settings

WAIT_S = 20.0


def beat_row(age_s: float, *, stopped: bool = False, connected: bool = True, host: str = "a") -> ServiceBeat:
    at = T0 - timedelta(seconds=age_s)
    return ServiceBeat(
        instance=f"{host}:{age_s}",
        host=host,
        pid=1,
        started_at=T0 - timedelta(hours=1),
        beat_at=at,
        stopped_at=at if stopped else None,
        broker_connected=connected,
        webhook_configured=True,
    )


def classify(*rows: ServiceBeat) -> IngestStatus:
    return service_status.classify(list(rows), now=T0, stale_after_s=20)


def test_no_beat_ever_is_never() -> None:
    assert classify() == IngestStatus("never", None, False, False, None, None)


def test_a_recent_beat_is_running_and_an_old_one_stale() -> None:
    running = classify(beat_row(20))
    assert (running.state, running.age_s, running.broker_connected, running.host) == (
        "running",
        20,
        True,
        "a",
    )
    assert running.started_at == T0 - timedelta(hours=1) and running.webhook_configured
    stale = classify(beat_row(20.5))
    # A backend gone silent may have lost the broker too: it is not said to be connected.
    assert (stale.state, stale.age_s, stale.broker_connected) == ("stale", 20.5, False)


def test_a_backend_that_said_it_stopped_is_stopped_at_once() -> None:
    assert classify(beat_row(0, stopped=True)).state == "stopped"


def test_a_running_backend_speaks_for_ingest_whatever_the_others_did() -> None:
    status = classify(
        beat_row(0, stopped=True, host="old"), beat_row(3, host="new"), beat_row(50, host="dead")
    )
    assert (status.state, status.host) == ("running", "new")
    # Of two live ones, the one that reaches the broker.
    status = classify(beat_row(1, connected=False, host="cut"), beat_row(4, host="linked"))
    assert (status.host, status.broker_connected) == ("linked", True)
    # None live: the newest says how the last one ended.
    assert classify(beat_row(30, stopped=True), beat_row(60)).state == "stopped"
    assert classify(beat_row(60, stopped=True), beat_row(30)).state == "stale"


def test_a_beat_from_a_clock_a_little_ahead_is_fresh() -> None:
    assert classify(beat_row(-2)).age_s == 0


def test_stale_after_a_few_rules_ticks() -> None:
    settings = dataclasses.replace(Settings.from_env({}), rules_interval_s=5.0)
    assert service_status.ingest_stale_after_s(settings) == 3 * 5.0 + service_status.MARGIN_S


def test_beats_and_the_stop_in_the_database(engine) -> None:
    now = utc_now()
    assert service_status.latest(engine, now=now, stale_after_s=20).state == "never"
    started = now - timedelta(minutes=5)
    mine = {"host": "ingest-1", "started_at": started, "pid": 42}
    service_status.beat(engine, **mine, broker_connected=False, webhook_configured=True, now=now)
    service_status.beat(
        engine, **mine, broker_connected=True, webhook_configured=True, now=now + timedelta(seconds=5)
    )
    status = service_status.latest(engine, now=now + timedelta(seconds=6), stale_after_s=20)
    assert (status.state, status.broker_connected, status.webhook_configured, status.host) == (
        "running",
        True,
        True,
        "ingest-1",
    )
    assert status.age_s == pytest.approx(1.0) and status.started_at == started
    assert service_status.latest(engine, now=now + timedelta(seconds=26), stale_after_s=20).state == "stale"
    service_status.stopped(engine, **mine, webhook_configured=True, now=now + timedelta(seconds=30))
    status = service_status.latest(engine, now=now + timedelta(seconds=30), stale_after_s=20)
    assert (status.state, status.broker_connected) == ("stopped", False)


def test_a_restart_in_the_same_process_is_a_new_backend(engine) -> None:
    now = utc_now()
    first = {"host": "h", "pid": 7, "started_at": now - timedelta(hours=1)}
    service_status.beat(engine, **first, broker_connected=True, webhook_configured=False, now=now)
    service_status.stopped(engine, **first, webhook_configured=False, now=now)
    service_status.beat(
        engine, host="h", pid=7, started_at=now, broker_connected=True, webhook_configured=False, now=now
    )
    status = service_status.latest(engine, now=now, stale_after_s=20)
    assert (status.state, status.started_at) == ("running", now)


def test_backends_silent_for_a_week_are_forgotten(engine) -> None:
    long_ago = utc_now() - timedelta(days=8)
    service_status.beat(
        engine,
        host="old",
        pid=1,
        started_at=long_ago,
        broker_connected=True,
        webhook_configured=False,
        now=long_ago,
    )
    now = utc_now()
    service_status.beat(
        engine, host="new", pid=2, started_at=now, broker_connected=True, webhook_configured=False, now=now
    )
    with Session(engine) as session:
        assert [row.host for row in session.exec(select(ServiceBeat))] == ["new"]


# ---- a real backend ----------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def status_of(broker) -> Iterator[Callable[[], IngestStatus]]:
    engine = make_engine(broker.settings.db_url)

    def read() -> IngestStatus:
        return service_status.latest(engine, now=utc_now(), stale_after_s=WAIT_S)

    yield read
    engine.dispose()


@pytest.mark.broker
def test_a_running_backend_beats_and_says_when_it_stops(broker, status_of) -> None:
    service = BackendService(dataclasses.replace(broker.settings, rules_interval_s=0.2))
    service.start()
    try:
        assert service.wait_ready(WAIT_S)
        wait_for(lambda: status_of().broker_connected, "a beat that says the broker is connected")
        status = status_of()
        assert (status.state, status.webhook_configured, status.host) == (
            "running",
            False,
            socket.gethostname(),
        )
        assert status.started_at == service.started_at
    finally:
        service.stop()
    # Said at once, not a few ticks later.
    assert (status_of().state, status_of().broker_connected) == ("stopped", False)


@pytest.mark.broker
def test_a_backend_that_lost_the_broker_beats_on_and_says_so(broker, backend, status_of) -> None:
    wait_for(lambda: status_of().broker_connected, "the backend to report the broker")
    broker.broker.kill()
    wait_for(lambda: not status_of().broker_connected, "the beat to report the broken link")
    assert status_of().state == "running"  # ingest is there; the broker is what is missing
    broker.broker.start()
    wait_for(lambda: status_of().broker_connected, "the beat to report the link back")


@pytest.mark.broker
def test_without_a_webhook_the_backend_warns_at_start(broker, caplog: pytest.LogCaptureFixture) -> None:
    assert broker.settings.webhook_url == ""
    with (
        caplog.at_level(logging.WARNING, logger="pendant_backend.service"),
        BackendService(broker.settings) as service,
    ):
        assert service.wait_ready(WAIT_S)
    [warning] = [r for r in caplog.records if "no webhook configured" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "alarms reach only the console" in warning.getMessage()
    assert "PENDANT_WEBHOOK_URL" in warning.getMessage()
