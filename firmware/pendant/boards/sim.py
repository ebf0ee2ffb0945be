"""The virtual board for the unix port: the modem and the pins are TCP connections to the bench.

sim.json in the current directory (the pendant's flash folder) names the ports:
`{"modem": ["127.0.0.1", <port>], "io": ["127.0.0.1", <port>]}`. The io channel carries ASCII lines
(docs/architecture.md, "Virtual board channel"): the bench sends `BTN`, `PWR`, `VBAT`, `CHG`; the pendant
sends `HELLO <device_id> <fw>` once per connection, `VIB <pattern>`, `MCU light_sleep` / `MCU active`,
`WDT <ms>` / `FEED`, `PWRKEY <ms>`, `DTR <0|1>` and `OFF`. One test fault, for the watchdog's scenario:
the bench's `HANG` stops the interpreter for good (a driver that never returns), so that nothing feeds
the watchdog any more. Both are plain non-blocking sockets, polled, as the ESP32's UART is (see atchan.py).
A light sleep is a poll of both sockets: bytes from the bench or the modem wake the pendant, as a pin or
the modem's RI line wake the ESP32.
"""

import json
import select
import socket
from asyncio import sleep_ms
from time import sleep_ms as block
from time import ticks_diff, ticks_ms

from .. import FW, log
from ..atchan import write

NAME = "sim"


def _connect(name):
    with open("sim.json") as f:  # the bench's ports, read when connecting
        address = json.load(f)[name]
    sock = socket.socket()
    sock.connect(socket.getaddrinfo(address[0], address[1])[0][-1])
    sock.setblocking(False)
    return sock


class Board:
    """Everything hardware-like on the sim board, as the bench plays it."""

    NAME = NAME

    def __init__(self, device_id):
        self._hello = "HELLO %s %s\n" % (device_id, FW)
        self.pins = {"BTN": 0, "PWR": 0, "CHG": 0, "VBAT": None}  # as the bench last sent them
        self._io = None
        self._poll = select.poll()
        self._watchdog_ms = None  # None: not armed
        self._fed = 0  # ticks_ms of the last FEED sent
        self._mcu = "MCU active"  # the MCU state line sent last

    def _send(self, line):
        # One short line to the bench, now (from code that cannot wait); lost while the channel is down.
        try:
            self._io.write(line.encode() + b"\n")
        except (AttributeError, OSError):
            pass  # no io channel: the bench sends the whole pin state and gets WDT again on reconnect

    def buttons(self):
        """(panic button, power button): 1 while held."""
        pins = self.pins
        return pins["BTN"], pins["PWR"]

    async def open_modem(self):
        """Connect to the modem simulator; return the non-blocking socket."""
        sock = _connect("modem")
        self._poll.register(sock, select.POLLIN)
        return sock

    async def pwrkey(self, ms):
        """Pulse the modem's PWRKEY for ms (100: on when off; 3000: off when on)."""
        self._send("PWRKEY %d" % ms)
        await sleep_ms(ms)

    def dtr(self, level):
        """Drive the modem's DTR line (1: it may sleep)."""
        self._send("DTR %d" % level)

    def battery_mv(self):
        """Battery voltage the bench last reported (None before its first report)."""
        return self.pins["VBAT"]

    def charging(self):
        """True while the bench says the charger is connected."""
        return self.pins["CHG"] == 1

    async def vibrate(self, pattern):
        """Play a vibration pattern: tell the bench `VIB <pattern>`."""
        if self._io:
            await write(self._io, ("VIB %s\n" % pattern).encode())
        else:
            log("board", "io down, no VIB " + pattern)

    def watchdog(self, ms):
        """Arm the bench's watchdog (it restarts the pendant when no FEED comes within ms); the board
        is the watchdog object."""
        self._watchdog_ms = ms
        self._send("WDT %d" % ms)
        return self

    def feed(self):
        """Feed the watchdog (at most one FEED line a second: plenty against a 30 s timeout)."""
        if ticks_diff(ticks_ms(), self._fed) >= 1000:
            self._fed = ticks_ms()
            self._send("FEED")

    def sleep(self, ms):
        """Light sleep for up to ms, until the bench or the modem sends something; 0: stay awake."""
        line = "MCU light_sleep" if ms > 0 else "MCU active"
        if line != self._mcu:
            self._mcu = line
            self._send(line)
        if ms > 0:
            for entry in self._poll.poll(ms):
                if entry[1] & ~select.POLLIN:  # closed or failed: the next stream is registered anew
                    self._poll.unregister(entry[0])

    def reset(self):
        """Reboot: end the interpreter; the bench starts it again, as a board restarts."""
        raise SystemExit(0)

    def off(self):
        """Cut the pendant's own power: tell the bench `OFF` and wait for it to stop the process."""
        self._send("OFF")
        while True:
            block(1000)  # nothing runs any more

    def tasks(self):
        """Supervised tasks of this board, as (name, coroutine function): the io channel."""
        return [("io", self._io_task)]

    async def _io_task(self):
        sock = _connect("io")
        try:
            armed = "WDT %d\n" % self._watchdog_ms if self._watchdog_ms else ""
            await write(sock, (self._hello + self._mcu + "\n" + armed).encode())
            self._io = sock
            self._poll.register(sock, select.POLLIN)
            buf = b""
            while True:
                chunk = sock.read(64)
                if chunk is None:
                    await sleep_ms(10)
                    continue
                if not chunk:
                    raise OSError("io channel closed")
                buf += chunk
                end = buf.find(b"\n")
                while end >= 0:
                    name, _, value = buf[:end].decode().strip().partition(" ")
                    buf = buf[end + 1 :]
                    end = buf.find(b"\n")
                    if name in self.pins and value.isdigit():
                        self.pins[name] = int(value)
                    elif name == "HANG":  # the test fault above: only the bench's watchdog ends it
                        block(0x3FFFFFFF)  # 12 days
                    else:
                        log("board", "unknown io line %r" % name)
        finally:
            self._io = None
            try:
                self._poll.unregister(sock)
            except (OSError, ValueError, KeyError):
                pass  # never registered
            sock.close()
