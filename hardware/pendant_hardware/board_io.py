"""The virtual board's pins on a TCP port: the bench plays button, power button, battery and charger, and
records what the firmware drives (vibration motor, MCU power state). Protocol: docs/architecture.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

PATTERNS = ("sent", "received", "acknowledged", "failed")


@dataclass(frozen=True)
class BoardEvent:
    """One line the pendant sent: `kind` is its first word (HELLO, VIB, MCU), `value` the rest."""

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
    ) -> None:
        self._host = host
        self._port = port
        self.button = False
        self.power_button = False
        self.battery_mv = battery_mv
        self.charger = charger
        self.events: list[BoardEvent] = []
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
        self._send(f"BTN {int(pressed)}")

    def set_power_button(self, pressed: bool) -> None:
        """Power button down (True) or up."""
        self.power_button = pressed
        self._send(f"PWR {int(pressed)}")

    def set_battery(self, millivolts: int) -> None:
        """Battery voltage in mV."""
        if not 0 <= millivolts <= 5000:
            raise ValueError(f"battery voltage must be 0..5000 mV, not {millivolts}")
        self.battery_mv = millivolts
        self._send(f"VBAT {millivolts}")

    def set_charger(self, connected: bool) -> None:
        """Charger plugged in (True) or not."""
        self.charger = connected
        self._send(f"CHG {int(connected)}")

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
        if kind not in ("HELLO", "VIB", "MCU"):
            log.warning("board io %d: unknown line from the pendant: %r", self._port, line)
        elif kind == "VIB" and value not in PATTERNS:
            log.warning("board io %d: unknown vibration pattern %r", self._port, value)
        self.events.append(BoardEvent(time.time(), kind, value))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
