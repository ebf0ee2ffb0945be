"""A standby backend: a second `pendant backend run` on the same database waits, and takes over the same
persistent sessions when the active one dies (`kill -9`) or stops, so that no alarm queued for them is
lost or stored twice.

The lock itself (pendant_backend.leader) is tested with a child process that holds it and is killed; the
takeover with two real backend processes on the real broker and one SQLite database, while pendants
publish alarms (QoS 1, each alarm once: no resends, so an alarm the takeover lost would stay lost).
Run with `-s` to see the measured takeover times.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, func, select

from pendant_backend import BackendError, leader
from pendant_backend.db import engine_for
from pendant_backend.models import Alarm, AuditEvent
from pendant_backend.service import BackendService

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
WAIT_S = 20.0
TAKEOVER_LIMIT_S = 5.0
# A child process that takes the lock of the database at argv[1], says so, and holds it until killed.
HOLDER = (
    "import sys, threading\n"
    "from pendant_backend import leader\n"
    "lease = leader.acquire(sys.argv[1], threading.Event())\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = WAIT_S,
    logs: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout} s\n{logs()}"
        time.sleep(0.02)


def new_database(cluster: Any, template: str | None = None) -> str:
    """A fresh database on the private PostgreSQL cluster (a copy of `template`, if given): its name."""
    name = f"standby_{os.getpid()}_{time.monotonic_ns()}"
    for attempt in range(50):
        try:
            cluster.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
            return name
        except Exception:  # the template is briefly in use by another connection: try again
            if attempt == 49:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only here (the tests with a broker): two processes on one database file."""
    path = tmp_path / "pendant.db"
    shutil.copyfile(sqlite_template, path)
    os.chmod(path, 0o600)
    return f"sqlite:///{path}"


@pytest.fixture
def holder() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """`holder(url)`: a child process that holds the active backend's lock of `url`; killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(url: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line == "held\n", f"the holder did not take the lock: {line!r} {process.stderr.read()}"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def acquire_in_thread(
    url: str, stop: threading.Event, **kwargs: Any
) -> tuple[threading.Thread, list[leader.Lease | None]]:
    """`leader.acquire` on a thread of its own; the list gets the lease (or None) when it returns."""
    result: list[leader.Lease | None] = []
    thread = threading.Thread(target=lambda: result.append(leader.acquire(url, stop, **kwargs)), daemon=True)
    thread.start()
    return thread, result


def standby_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("standby: another backend")]


def check_waits_then_takes_over(
    url: str, holder_process: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> leader.Lease:
    """A second acquire waits while the child holds the lock, logs once that it does, and has the lock
    within a poll of the child's kill -9; returns that lease."""
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="pendant_backend.leader"):
        thread, result = acquire_in_thread(url, stop, poll_s=0.1)
        time.sleep(0.5)
        assert thread.is_alive() and not result, "the second acquire did not wait for the holder"
        holder_process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        holder_process.wait()
        thread.join(5)
    took = time.monotonic() - killed
    [lease] = result
    assert lease is not None
    assert len(standby_lines(caplog)) == 1, "the standby must say once, not at every try, that it waits"
    assert lease.what in standby_lines(caplog)[0]
    assert lease.waited_s >= 0.5
    assert took < 1.0, f"took the lock {took:.2f} s after the holder died"
    print(f"\nlock taken {took * 1000:.0f} ms after the holder's kill -9 ({lease.what})")
    return lease


def test_the_sqlite_lock_waits_for_its_holder_and_is_free_once_it_is_killed(
    tmp_path: Path, holder: Callable[[str], subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'pendant.db'}"
    lease = check_waits_then_takes_over(url, holder(url), caplog)
    assert str(leader.lock_file(tmp_path / "pendant.db")) in lease.what
    assert oct((tmp_path / "pendant.db.backend.lock").stat().st_mode & 0o777) == "0o600"
    # Held now, here: another acquire waits; one asked to stop returns None instead of the lock.
    stopped = threading.Event()
    stopped.set()
    assert leader.acquire(url, stopped) is None
    lease.release()
    again = leader.acquire(url, stopped)
    assert again is not None
    again.release()
    # An in-memory database is nobody else's: nothing to hold.
    assert leader.acquire("sqlite://", stopped) is not None


@pytest.mark.postgresql
def test_the_postgresql_advisory_lock_waits_for_its_holder_and_a_lost_connection_is_noticed(
    postgres_cluster: Any, holder: Callable[[str], subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    name = new_database(postgres_cluster)
    url = postgres_cluster.url(name)
    lease = check_waits_then_takes_over(url, holder(url), caplog)
    assert "advisory lock" in lease.what and "postgres@" in lease.what
    # The server ends the lock's connection (a restart, an administrator): the lease notices, says so,
    # and the lock is free for a standby.
    lost = threading.Event()
    lease.release()
    lease = leader.acquire(url, threading.Event(), on_lost=lost.set)
    assert lease is not None
    with caplog.at_level(logging.ERROR, logger="pendant_backend.leader"):
        postgres_cluster.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND application_name = 'pendant backend (active lock)'"
        )
        assert lost.wait(leader.WATCH_S * 3), "the lease did not notice its connection was gone"
    assert lease.lost.is_set()
    assert any("no longer the active one" in r.getMessage() for r in caplog.records)
    stopped = threading.Event()
    stopped.set()
    other = leader.acquire(url, stopped)
    assert other is not None, "the server kept the lock of a connection that is gone"
    other.release()
    lease.release()


# ---- two backends on the real broker ----------------------------------------------------------------


def alarm(alarm_id: str) -> bytes:
    data = json.loads((EXAMPLES / "alarm.json").read_bytes())
    data["alarm_id"] = alarm_id
    return json.dumps(data, separators=(",", ":")).encode()


def alarm_counts(settings: Any) -> dict[tuple[str, str], int]:
    """(device id, alarm id) -> how many rows the database holds for it."""
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(Alarm.device_id, Alarm.alarm_id, func.count()).group_by(
                    col(Alarm.device_id), col(Alarm.alarm_id)
                )
            )
            return {(device_id, alarm_id): count for device_id, alarm_id, count in rows}
    finally:
        engine.dispose()


class BackendProcess:
    """`pendant backend run` as a child process (SIGKILL-able); its log lines with when they came."""

    def __init__(self, settings: Any) -> None:
        env = {
            **os.environ,
            "PENDANT_DATA_DIR": str(settings.data_dir),
            "PENDANT_MQTT_PORT": str(settings.mqtt_port),
            "PENDANT_MQTT_TLS_PORT": str(settings.mqtt_tls_port),
            "PENDANT_MQTT_TLS_BIND": settings.mqtt_tls_bind,
            "PENDANT_DB_URL": settings.db_url,
            # Two on one machine: each would need a metrics port of its own.
            "PENDANT_METRICS_PORT": "0",
        }
        self.lines: list[tuple[float, str]] = []
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
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))

    def said(self, text: str) -> float | None:
        """When the first line with `text` came, or None."""
        return next((at for at, line in list(self.lines) if text in line), None)

    def log(self) -> str:
        return "".join(line for _, line in self.lines[-30:])

    def kill(self) -> float:
        """SIGKILL; returns the moment it was sent."""
        at = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return at


@pytest.fixture
def backend_processes(broker: Any) -> Iterator[Callable[[], BackendProcess]]:
    started: list[BackendProcess] = []

    def start() -> BackendProcess:
        process = BackendProcess(broker.settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


class AckListener:
    """Reads a pendant client's `alarm/ack` messages on a thread, noting when each came."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.acks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.client.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if message.topic.endswith("/alarm/ack"):
                self.acks.append((time.monotonic(), json.loads(message.payload)["alarm_id"]))

    def acked(self) -> set[str]:
        return {alarm_id for _, alarm_id in list(self.acks)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


DEVICES = ("pd-0001", "pd-0002")
ALARMS_PER_DEVICE = 50
GAP_S = 0.04


def test_a_standby_takes_over_within_5_s_of_a_kill_9_and_no_alarm_is_lost_or_doubled(
    broker: Any, provision: Any, mqtt_client: Any, backend_processes: Callable[[], BackendProcess]
) -> None:
    pendants = {}
    listeners = {}
    for device_id in DEVICES:
        client = mqtt_client(provision(device_id))
        assert not client.subscribe(f"pendant/v1/{device_id}/alarm/ack").is_failure
        pendants[device_id], listeners[device_id] = client, AckListener(client)
    # Both at once: whichever takes the lock first is the active one, the other waits.
    first, second = backend_processes(), backend_processes()
    wait_until(
        lambda: (
            {bool(p.said("ready: every session")) for p in (first, second)} == {True, False}
            and any(p.said("standby: another backend holds") for p in (first, second))
        ),
        "one backend to be ready and the other to wait as a standby",
        logs=lambda: f"first:\n{first.log()}\nsecond:\n{second.log()}",
    )
    active, standby = (first, second) if first.said("ready: every session") else (second, first)
    assert "lock file" in standby.log()

    published: dict[str, dict[str, float]] = {device_id: {} for device_id in DEVICES}

    def publish_all() -> None:
        for n in range(1, ALARMS_PER_DEVICE + 1):
            for device_id, client in pendants.items():
                alarm_id = f"4-{n}"
                published[device_id][alarm_id] = time.monotonic()
                client.publish(f"pendant/v1/{device_id}/alarm", alarm(alarm_id))
            time.sleep(GAP_S)

    publisher = threading.Thread(target=publish_all, daemon=True)
    try:
        publisher.start()
        # In mid-stream: once the active one has acked a few.
        wait_until(lambda: sum(len(lis.acks) for lis in listeners.values()) >= 10, "the first acks")
        killed_at = active.kill()
        publisher.join(WAIT_S)
        assert not publisher.is_alive(), "the pendants could not publish every alarm"
        wanted = {device_id: set(ids) for device_id, ids in published.items()}
        wait_until(
            lambda: all(listeners[d].acked() >= wanted[d] for d in DEVICES),
            "every alarm to be acked",
        )
    finally:
        for listener in listeners.values():
            listener.stop()
    # Stored exactly once each: none lost with the killed process, none doubled by the redelivery.
    assert alarm_counts(broker.settings) == {(d, a): 1 for d in DEVICES for a in published[d]}
    # The pendant's view: the first ack of an alarm raised after the kill.
    after_kill = [
        at
        for device_id in DEVICES
        for at, alarm_id in listeners[device_id].acks
        if published[device_id][alarm_id] > killed_at
    ]
    assert after_kill, "the stream ended before the kill: publish more alarms"
    takeover_s = min(after_kill) - killed_at
    took_over_at = standby.said("took over as the active backend")
    assert took_over_at is not None, standby.log()
    ready_at = max(at for at, line in standby.lines if "ready: every session" in line)
    print(
        f"\ntakeover after kill -9: lock {took_over_at - killed_at:.2f} s, sessions ready "
        f"{ready_at - killed_at:.2f} s, first ack of a new alarm {takeover_s:.2f} s; "
        f"{sum(len(p) for p in published.values())} alarms, each stored once and acked"
    )
    assert takeover_s < TAKEOVER_LIMIT_S, standby.log()


def test_a_standby_takes_over_when_the_active_backend_stops_and_a_stop_ends_a_standbys_wait(
    broker: Any, provision: Any, mqtt_client: Any
) -> None:
    pendant = mqtt_client(provision("pd-0001"))
    assert not pendant.subscribe("pendant/v1/pd-0001/alarm/ack").is_failure
    active = BackendService(broker.settings)
    active.start()
    standby = BackendService(broker.settings, standby_poll_s=0.1)
    waiting = threading.Thread(target=standby.start, daemon=True)
    try:
        assert active.wait_ready(WAIT_S)
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive() and standby.link is None, (
            "the standby opened a session beside the active one"
        )
        active.stop()
        # Queued on the broker for the backend's session while nobody holds it.
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("6-1"))
        waiting.join(WAIT_S)
        assert standby.wait_ready(WAIT_S)
        message = pendant.expect("pendant/v1/pd-0001/alarm/ack")
        assert json.loads(message.payload)["alarm_id"] == "6-1"
        # A third one waits as a standby, and stop() ends its wait without starting anything.
        third = BackendService(broker.settings, standby_poll_s=0.1)
        third_waiting = threading.Thread(target=third.start, daemon=True)
        third_waiting.start()
        time.sleep(0.3)
        third.stop()
        third_waiting.join(5)
        assert not third_waiting.is_alive() and third.link is None and third.lease is None
    finally:
        active.stop()
        standby.stop()
    engine = engine_for(broker.settings)
    try:
        with Session(engine) as session:
            [event] = session.exec(select(AuditEvent).where(AuditEvent.kind == "backend_took_over")).all()
        assert json.loads(event.body)["data"]["waited_s"] > 0
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_a_backend_that_loses_its_postgresql_lock_stops_and_says_why(
    broker: Any, postgres_cluster: Any, postgres_template: str
) -> None:
    name = new_database(postgres_cluster, postgres_template)
    service = BackendService(dataclasses.replace(broker.settings, db_url=postgres_cluster.url(name)))

    def cut_the_lock_connection() -> None:
        wait_until(
            lambda: service.link is not None and service.link.subscribed.is_set(), "the backend to be ready"
        )
        postgres_cluster.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND application_name = 'pendant backend (active lock)'"
        )

    cutter = threading.Thread(target=cut_the_lock_connection, daemon=True)
    cutter.start()
    # run() on this (the main) thread, as `pendant backend run` does: it installs signal handlers.
    with pytest.raises(BackendError, match="lost the PostgreSQL advisory lock .* waits as a standby"):
        service.run()
    cutter.join(1)
    assert service.link is None and service.ingest_link is None and service.lease is None
