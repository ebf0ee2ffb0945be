"""The virtual board for the unix port: the modem and the pins are TCP connections to the bench.

sim.json in the current directory (the pendant's flash folder) names the ports:
`{"modem": ["127.0.0.1", <port>], "io": ["127.0.0.1", <port>]}`. The io channel carries ASCII lines
(docs/architecture.md, "Virtual board channel"): the bench sends `BTN`, `PWR`, `VBAT`, `CHG`; the pendant
sends `HELLO <device_id> <fw>` and `MCU active` once per connection, and `VIB <pattern>`. Both are plain
non-blocking sockets, polled (asyncio's streams would cost heap the pendant does not have).
"""

import asyncio
import json
import socket

from .. import FW, log
from ..atchan import write

NAME = "sim"


def _connect(host, port):
    sock = socket.socket()
    sock.connect(socket.getaddrinfo(host, port)[0][-1])
    sock.setblocking(False)
    return sock


class Input:
    """A pin the bench drives: value() is 1 while pressed (for VBAT: the millivolts, None at first)."""

    def __init__(self, level=0):
        self.level = level

    def value(self):
        """The level the bench last sent."""
        return self.level


class Board:
    """Everything hardware-like on the sim board. button and power_button are Input objects."""

    NAME = NAME

    def __init__(self, device, path="sim.json"):
        with open(path) as f:
            self._ports = json.load(f)
        self.device = device["device_id"]
        self.button = Input()
        self.power_button = Input()
        self.pins = {"BTN": self.button, "PWR": self.power_button, "CHG": Input(), "VBAT": Input(None)}
        self._io = None

    async def open_modem(self):
        """Connect to the modem simulator; return the non-blocking socket."""
        return _connect(*self._ports["modem"])

    modem_power_on = None  # the simulated modem is always powered

    def battery_mv(self):
        """Battery voltage the bench last reported (None before its first report)."""
        return self.pins["VBAT"].level

    def charging(self):
        """True while the bench says the charger is connected."""
        return self.pins["CHG"].level == 1

    async def vibrate(self, pattern):
        """Play a vibration pattern: tell the bench `VIB <pattern>`."""
        if self._io is None:
            log("board", "io down, no VIB " + pattern)
            return
        await write(self._io, "VIB %s\n" % pattern)

    def watchdog(self, ms):
        """No watchdog on the unix port: the board stands in for one that needs no feeding."""
        return self

    def feed(self):
        """Feed the (absent) watchdog."""

    def reset(self):
        """Reboot: end the interpreter; the bench starts it again, as a board restarts."""
        raise SystemExit(0)

    def tasks(self):
        """Supervised tasks of this board, as [name, coroutine function]: the io channel."""
        return [["io", self._io_task]]

    async def _io_task(self):
        sock = _connect(*self._ports["io"])
        try:
            await write(sock, "HELLO %s %s\nMCU active\n" % (self.device, FW))
            self._io = sock
            buf = b""
            while True:
                chunk = sock.read(64)
                if chunk is None:
                    await asyncio.sleep_ms(10)
                    continue
                if not chunk:
                    raise OSError("io channel closed")
                buf += chunk
                end = buf.find(10)  # LF
                while end >= 0:
                    line = buf[:end]
                    buf = buf[end + 1 :]
                    end = buf.find(10)
                    try:
                        name, _, value = line.decode().strip().partition(" ")
                    except UnicodeError:
                        name = value = ""
                    if name in self.pins and value.isdigit():
                        self.pins[name].level = int(value)
                    else:
                        log("board", "unknown io line %r" % line)
        finally:
            self._io = None
            sock.close()
