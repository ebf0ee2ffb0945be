"""The virtual board's pins on a TCP port: the bench plays button, power button, battery and charger, and
records what the firmware drives (vibration motor, MCU power state, watchdog, modem PWRKEY and DTR, its
own power switch). Protocol: docs/architecture.md, "Virtual board channel"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

PATTERNS = ("sent", "received", "acknowledged", "failed")
# What the pendant may send, and what its value must look like.
LINE_KINDS = ("HELLO", "VIB", "MCU", "WDT", "FEED", "PWRKEY", "DTR", "OFF")
MCU_STATES = ("active", "light_sleep")


@dataclass(frozen=True)
class BoardEvent:
    """One line the pendant sent: `kind` is its first word (LINE_KINDS), `value` the rest."""

    t: float  # time.time() when it arrived
    kind: str
    value: str

    def to_json(self) -> dict[str, object]:
        """As the control port reports it."""
        return {"t": self.t, "kind": self.kind, "value": self.value}


class BoardIO:
    """One pendant's pins. One connection at a time; a new one replaces the old. The whole pin state
    is sent right after a connection is accepted, and every change while connected."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        battery_mv: int = 3950,
        charger: bool = False,
        on_line: Callable[[BoardEvent], None] | None = None,
        on_pin: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_line(event)` hears every valid line from the pendant (FEED included, though FEEDs are only
        counted, not kept); `on_pin(name, value)` every pin the bench sets (BTN, PWR, VBAT, CHG)."""
        self._on_line = on_line
        self._on_pin = on_pin
        self._host = host
        self._port = port
        self.button = False
        self.power_button = False
        self.battery_mv = battery_mv
        self.charger = charger
        self.events: list[BoardEvent] = []
        self.feeds = 0
        self.rejected: list[str] = []  # lines from the pendant that are not in the protocol (last 50)
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        """The TCP port of the board channel (known after start())."""
        return self._port

    @property
    def connected(self) -> bool:
        """True while the firmware is connected."""
        return self._writer is not None

    @property
    def vibrations(self) -> list[BoardEvent]:
        """Every `VIB <pattern>` so far, oldest first."""
        return [event for event in self.events if event.kind == "VIB"]

    @property
    def mcu_state(self) -> str | None:
        """The last `MCU` state reported (active or light_sleep), None before the first."""
        states = [event.value for event in self.events if event.kind == "MCU"]
        return states[-1] if states else None

    @property
    def hello(self) -> BoardEvent | None:
        """The last HELLO (its value is `<device_id> <fw>`)."""
        hellos = [event for event in self.events if event.kind == "HELLO"]
        return hellos[-1] if hellos else None

    async def start(self) -> None:
        """Listen for the firmware's board connection."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the connection and stop listening."""
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- pins ----------------------------------------------------------------------------------------

    def set_button(self, pressed: bool) -> None:
        """Panic button down (True) or up."""
        self.button = pressed
        self._pin("BTN", int(pressed))

    def set_power_button(self, pressed: bool) -> None:
        """Power button down (True) or up."""
        self.power_button = pressed
        self._pin("PWR", int(pressed))

    def set_battery(self, millivolts: int) -> None:
        """Battery voltage in mV."""
        if not 0 <= millivolts <= 5000:
            raise ValueError(f"battery voltage must be 0..5000 mV, not {millivolts}")
        self.battery_mv = millivolts
        self._pin("VBAT", millivolts)

    def set_charger(self, connected: bool) -> None:
        """Charger plugged in (True) or not."""
        self.charger = connected
        self._pin("CHG", int(connected))

    def _pin(self, name: str, value: int) -> None:
        self._send(f"{name} {value}")
        if self._on_pin is not None:
            self._on_pin(name, value)

    async def press(self, ms: int, *, power_button: bool = False) -> None:
        """Hold the panic (or power) button for `ms` milliseconds, then release it."""
        setter = self.set_power_button if power_button else self.set_button
        setter(True)
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            setter(False)

    def _pin_state(self) -> list[str]:
        return [
            f"BTN {int(self.button)}",
            f"PWR {int(self.power_button)}",
            f"VBAT {self.battery_mv}",
            f"CHG {int(self.charger)}",
        ]

    def _send(self, line: str) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(line.encode() + b"\n")

    # -- what the pendant reports --------------------------------------------------------------------

    async def wait_for(
        self, kind: str, value: str | None = None, *, after: int = 0, timeout: float = 30.0
    ) -> BoardEvent:
        """The first event of `kind` (and `value`, if given) at index >= `after`; TimeoutError if none."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.kind == kind and (value is None or event.value == value):
                        return event
                changed = self._changed
                await changed.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            log.info("board io %d: a new connection replaces the old one", self._port)
            self._writer.close()
        self._writer = writer
        for line in self._pin_state():
            self._send(line)
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                self._record(raw.decode("utf-8", "replace").strip())
        except (ConnectionError, ValueError) as exc:
            log.info("board io %d: connection ended: %s", self._port, exc)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _record(self, line: str) -> None:
        if not line:
            return
        kind, _, value = line.partition(" ")
        problem = line_problem(kind, value)
        if problem is not None:
            log.warning("board io %d: %s: %r", self._port, problem, line)
            self.rejected = [*self.rejected[-49:], line]
            return
        event = BoardEvent(time.time(), kind, value)
        if kind == "FEED":
            self.feeds += 1
        else:
            self.events.append(event)
        if self._on_line is not None:
            self._on_line(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def line_problem(kind: str, value: str) -> str | None:
    """Pure: why a line from the pendant breaks the protocol, or None when it is fine."""
    if kind not in LINE_KINDS:
        return "unknown line from the pendant"
    if kind == "VIB" and value not in PATTERNS:
        return "unknown vibration pattern"
    if kind == "MCU" and value not in MCU_STATES:
        return "unknown MCU state"
    if kind in ("WDT", "PWRKEY") and not (value.isdigit() and 0 < int(value) <= 3_600_000):
        return f"{kind} needs a duration in ms"
    if kind == "DTR" and value not in ("0", "1"):
        return "DTR is 0 or 1"
    if kind in ("FEED", "OFF") and value:
        return f"{kind} takes no value"
    if kind == "HELLO" and not value:
        return "HELLO needs the device id and firmware version"
    return None
