"""Helpers for the bench tests: a blocking AT client, a paho subscriber, running code on the bench loop."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pendant_hardware.loop_thread import LoopThread

from support import free_port

FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r]*)\r\n")
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


def on_loop(loop: LoopThread, function: Callable[..., Any], *args: Any) -> Any:
    """Call a plain function on the bench loop's thread (the bench objects are not thread-safe)."""

    async def call() -> Any:
        return function(*args)

    return loop.run(call())


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
    """A paho client on the broker that records every message it receives."""

    def __init__(self, port: int, *topics: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{free_port()}")
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(topic, 1) for topic in topics])
            subscribed.get(timeout=10)

    def next(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
