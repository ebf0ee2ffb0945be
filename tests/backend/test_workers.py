"""Two `pendant backend run` processes on one broker and one database: the full backend and an
`--ingest-only` worker share the heartbeats through the shared subscription; each heartbeat is stored
exactly once, and a worker killed with SIGKILL in the middle loses and doubles nothing.

Waits poll for a state with a generous limit; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from pendant_backend.db import engine_for
from pendant_backend.models import Heartbeat

pytestmark = pytest.mark.broker

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
WAIT_S = 60.0
DEVICES = ("pd-0001", "pd-0002", "pd-0003", "pd-0004")
BATCH_LINE = re.compile(r"stored (\d+) messages in one transaction")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout} s"
        time.sleep(0.1)


def heartbeat(up: int) -> bytes:
    data = {**json.loads((EXAMPLES / "tele.json").read_bytes()), "up": up}
    return json.dumps(data, separators=(",", ":")).encode()


class Worker:
    """`pendant -v backend run [--ingest-only --worker NAME]` as a child process (SIGKILL-able)."""

    def __init__(self, settings, *args: str) -> None:
        env = {
            **os.environ,
            "PENDANT_DATA_DIR": str(settings.data_dir),
            "PENDANT_MQTT_PORT": str(settings.mqtt_port),
            "PENDANT_DB_URL": settings.db_url,
        }
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pendant_tools.cli import main; main()",
                "-v",
                "backend",
                "run",
                *args,
            ],
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
            self.lines.append(line)

    def wait_subscribed(self) -> None:
        wait_until(
            lambda: any("ready: every session" in line for line in self.lines),
            "the worker to subscribe:\n" + "".join(self.lines[-20:]),
        )

    def stored(self) -> int:
        """Messages this process stored in batches (its debug log says so for each transaction)."""
        return sum(int(m.group(1)) for line in list(self.lines) if (m := BATCH_LINE.search(line)))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def workers(broker):
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(broker.settings, *args)
        started.append(worker)
        worker.wait_subscribed()
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def pendants(provision, mqtt_client):
    return [mqtt_client(provision(device_id)) for device_id in DEVICES]


def heartbeat_rows(settings) -> tuple[int, int]:
    """(rows, distinct heartbeat keys) in the heartbeats table."""
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            rows = session.exec(select(func.count()).select_from(Heartbeat)).one()
            keys = len(session.exec(select(Heartbeat.device_id, Heartbeat.up).distinct()).all())
            return rows, keys
    finally:
        engine.dispose()


def send(pendants, ups: range) -> int:
    for up in ups:
        for pendant, device_id in zip(pendants, DEVICES, strict=True):
            pendant.publish(f"pendant/v1/{device_id}/tele", heartbeat(up), timeout=WAIT_S)
    return len(ups) * len(pendants)


def test_two_workers_share_the_heartbeats_and_store_each_once(broker, workers, pendants) -> None:
    main = workers()
    second = workers("--ingest-only", "--worker", "w2")
    total = send(pendants, range(1, 151))
    wait_until(lambda: heartbeat_rows(broker.settings)[0] >= total, f"{total} heartbeats to be stored")
    assert heartbeat_rows(broker.settings) == (total, total)
    wait_until(lambda: main.stored() + second.stored() >= total, "both logs to count every heartbeat")
    # Each message reached one worker only, and both took a share.
    assert main.stored() + second.stored() == total
    assert main.stored() > 0 and second.stored() > 0


def test_a_worker_killed_mid_load_loses_and_doubles_nothing(broker, workers, pendants) -> None:
    workers()
    second = workers("--ingest-only", "--worker", "w2")
    first_half = send(pendants, range(1, 101))
    wait_until(lambda: second.stored() > 0, "the second worker to store some heartbeats")
    second.kill()
    # While it is down the broker keeps its share for its session (eclipse/mosquitto#1747).
    second_half = send(pendants, range(101, 201))
    workers("--ingest-only", "--worker", "w2")  # back under the same name: its session is delivered
    total = first_half + second_half
    wait_until(lambda: heartbeat_rows(broker.settings)[0] >= total, f"{total} heartbeats to be stored")
    time.sleep(1)  # any redelivered copy would have had time to make a second row
    assert heartbeat_rows(broker.settings) == (total, total)
