"""Helpers for the bench tests: a blocking AT client, the project's broker as the AT-level tests see it, a
paho subscriber, running code on the bench loop."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend.payloads import DEVICE_TOPICS, topic_for
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.virtual_pendant import VirtualPendant

from support import free_port

FAKE_FIRMWARE = Path(__file__).parent / "fake_firmware"
FAKE_CONFIG = {"device_id": "pd-0001", "mqtt": {"host": "127.0.0.1", "port": 1883}, "apn": "internet"}
FINAL = re.compile(rb"\r\n(OK|ERROR|NO CARRIER|\+CM[ES] ERROR: [^\r]*)\r\n")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """A broker on 127.0.0.1:<free port>, anonymous, no persistence: start(), stop(), start() again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@dataclass(frozen=True)
class BenchBroker:
    """The project's broker (pendant_backend.broker: generated config, dynamic security, no anonymous
    access) with an account for each device id the AT-level tests use, and the backend's account for the
    tests' own MQTT client."""

    port: int
    # Kept out of the repr: a failure report prints the fixture, and no report may hold a password.
    passwords: dict[str, str] = field(repr=False)
    backend_login: tuple[str, str] = field(repr=False)

    def connect_line(self, device_id: str = "pd-0001", clean: int = 1, *, password: str | None = None) -> str:
        """AT+CMQTTCONNECT for client 0 with the device's credentials (or another `password`)."""
        secret = self.passwords[device_id] if password is None else password
        return f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{self.port}",60,{clean},"{device_id}","{secret}"'

    def backend(self) -> Subscriber:
        """A client with the backend's account, subscribed to every device's data topics."""
        return Subscriber(
            self.port, *(topic_for("+", leaf) for leaf in DEVICE_TOPICS), login=self.backend_login
        )


def on_loop(loop: LoopThread, function: Callable[..., Any], *args: Any) -> Any:
    """Call a plain function on the bench loop's thread (the bench objects are not thread-safe)."""

    async def call() -> Any:
        return function(*args)

    return loop.run(call())


def fake_pendant(
    loop: LoopThread, directory: Path, firmware_dir: Path = FAKE_FIRMWARE, **modem: Any
) -> VirtualPendant:
    """A virtual pendant `pd-0001` (not started) running `firmware_dir`, by default the stand-in firmware;
    `modem` overrides the modem simulator's settings."""
    return on_loop(
        loop,
        lambda: VirtualPendant(
            FAKE_CONFIG,
            directory,
            firmware_dir=firmware_dir,
            modem_settings=ModemSettings.for_device("pd-0001", **modem),
            restart_delay_s=0.1,
        ),
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll `condition` every 20 ms until it holds; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come true within {timeout} s")
        time.sleep(0.02)


class AtClient:
    """The host side of the modem's UART, byte-exact, with a timeout on every read."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the modem closed the connection")
        self.buffer += chunk

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including `marker`."""
        while marker not in self.buffer:
            self._fill()
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_final(self) -> bytes:
        """Everything up to and including the next final result (OK, ERROR, +CME ERROR)."""
        while (match := FINAL.search(self.buffer)) is None:
            self._fill()
        data, self.buffer = self.buffer[: match.end()], self.buffer[match.end() :]
        return data

    def command(self, line: str) -> bytes:
        """Send `line` + CR and return the raw bytes up to its final result (echo included if on)."""
        self.send(line + "\r")
        return self.read_final()

    def lines(self, line: str) -> list[str]:
        """Send `line` + CR; the non-empty response lines, echo dropped, final result last."""
        raw = self.command(line)
        text = raw.decode("utf-8")
        if text.startswith(line + "\r"):
            text = text[len(line) + 1 :]
        return [part for part in text.split("\r\n") if part]

    def read_line(self) -> str:
        """The next non-empty line."""
        while True:
            line = self.read_until(b"\r\n")[:-2]
            if line:
                return line.decode("utf-8")

    def expect_line(self, prefix: str) -> str:
        """Skip lines until one starts with `prefix`; return it."""
        while True:
            line = self.read_line()
            if line.startswith(prefix):
                return line


class Subscriber:
    """A paho client on the broker that records every message it receives; anonymous unless given an
    account (`login`: username, password; the client id is the username, as the broker binds it)."""

    def __init__(self, port: int, *topics: str, login: tuple[str, str] | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        client_id = login[0] if login else f"test-{free_port()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if login:
            self.client.username_pw_set(*login)
        connected: queue.Queue[Any] = queue.Queue()
        subscribed: queue.Queue[list[Any]] = queue.Queue()
        self.client.on_connect = lambda client, userdata, flags, reason, props: connected.put(reason)
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, props: subscribed.put(reasons)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        reason = connected.get(timeout=10)
        assert not reason.is_failure, f"the broker refused the test subscriber: {reason}"
        if topics:
            self.client.subscribe([(topic, 1) for topic in topics])
            refused = [reason for reason in subscribed.get(timeout=10) if reason.is_failure]
            assert not refused, f"the broker refused a subscription of {topics}: {refused}"

    def next(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
