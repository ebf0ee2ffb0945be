"""One simulated A7670: its UART on a TCP port, the command loop, the command families and the hooks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pendant_hardware.modem_sim.at_parser import AtCommand, AtError, CmeError, parse_line
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.general import CME_TEXT, GeneralCommands
from pendant_hardware.modem_sim.gnss import GnssCommands
from pendant_hardware.modem_sim.mqtt_bridge import LOST_CLOSED_BY_PEER, LOST_NETWORK_CLOSED
from pendant_hardware.modem_sim.mqtt_commands import MqttCommands
from pendant_hardware.modem_sim.network import NetworkCommands
from pendant_hardware.modem_sim.settings import REGISTERED_STATES, ModemSettings
from pendant_hardware.modem_sim.uart import ConnectionClosed, LineTooLong, Uart

log = logging.getLogger(__name__)

BOOT_URCS = ("*ATREADY: 1", "+CPIN: READY", "SMS DONE", "PB DONE")
DEFAULT_CMEE = 2  # A7670 modules answer "+CME ERROR: SIM not inserted" out of the box


class ModemSim:
    """An A7670 on 127.0.0.1:<port>, bridging AT+CMQTT* to a real broker.

    Families of commands (general, network, GNSS, MQTT) each register their handlers in one table;
    issue-4 families (voice, SMS, power) plug in the same way. Hooks for tests and the bench:
    `force_connlost`, `set_registration`, `set_gnss_fix`, `power_cycle`.
    """

    def __init__(
        self,
        settings: ModemSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        battery_mv: Callable[[], int] | None = None,
        trace_path: Path | None = None,
    ) -> None:
        self.settings = settings or ModemSettings()
        self._battery_mv = battery_mv
        self.uart = Uart(
            self._session, host=host, port=port, on_connect=self._connected, trace_path=trace_path
        )
        self.cmee = DEFAULT_CMEE
        self._boot_pending = self.settings.boot_urcs
        self._tasks: set[asyncio.Task[Any]] = set()
        self.table = CommandTable()
        self.general = GeneralCommands(self)
        self.network = NetworkCommands(self)
        self.gnss = GnssCommands(self)
        self.mqtt = MqttCommands(self)
        for family in (self.general, self.network, self.gnss, self.mqtt):
            family.register(self.table)

    @property
    def port(self) -> int:
        """The TCP port of the modem's UART."""
        return self.uart.port

    @property
    def echo(self) -> bool:
        """ATE1 (True) or ATE0."""
        return self.uart.echo

    @echo.setter
    def echo(self, on: bool) -> None:
        self.uart.echo = on

    @property
    def registered(self) -> bool:
        """Registered on a network (home or roaming)."""
        return self.settings.registration in REGISTERED_STATES

    async def start(self) -> None:
        """Listen for the host (the firmware) on the UART port."""
        await self.uart.start()

    async def stop(self) -> None:
        """Switch the modem off: broker connections dropped silently, UART closed."""
        self.mqtt.reset()
        self.gnss.reset()
        await self.uart.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- hooks ---------------------------------------------------------------------------------------

    def force_connlost(self, cause: int = LOST_CLOSED_BY_PEER, index: int | None = None) -> None:
        """Break the broker connection(s) without DISCONNECT: the broker sends the will, the host sees
        `+CMQTTCONNLOST: <index>,<cause>`."""
        self.mqtt.drop(cause, index)

    def set_registration(self, status: int) -> None:
        """Change the registration state (0..5, 11); leaving the network drops MQTT with cause 3."""
        was_registered = self.registered
        self.settings.registration = status
        self.network.registration_changed()
        if was_registered and not self.registered:
            self.mqtt.drop(LOST_NETWORK_CLOSED)

    def set_gnss_fix(self, has_fix: bool) -> None:
        """Let the GNSS engine see satellites (a fix once ready) or not (empty position fields)."""
        self.settings.gnss_fix = has_fix

    async def power_cycle(self) -> None:
        """Switch the modem off and on: everything back to power-on state, boot URCs sent again."""
        self.mqtt.reset()
        self.gnss.reset()
        self.network.reset()
        self.echo = True
        self.cmee = DEFAULT_CMEE
        self._boot_pending = self.settings.boot_urcs
        if self._boot_pending and self.uart.connected:
            self._send_boot_urcs()

    def mqtt_connected(self, index: int = 0) -> bool:
        """True while MQTT client `index` is connected to the broker."""
        return self.mqtt.is_connected(index)

    # -- what command families use -------------------------------------------------------------------

    def battery_mv(self) -> int:
        """The supply voltage the modem measures (from the board when one is attached)."""
        return self._battery_mv() if self._battery_mv is not None else self.settings.battery_mv

    def reply(self, text: str) -> None:
        """An information line of the running command."""
        self.uart.send_line(text)

    def reply_block(self, lines: list[str]) -> None:
        """Several information lines sent as one block (as modems print ATI: one CR LF pair around it)."""
        self.uart.send_raw(b"\r\n" + "\r\n".join(lines).encode("utf-8") + b"\r\n", trace=False)
        for line in lines:
            self.uart.trace(f"<- {line}")

    def urc(self, text: str) -> None:
        """An unsolicited result code; it may land between a command and its final result."""
        self.uart.send_line(text)

    def send_raw(self, data: bytes) -> None:
        """Bytes without framing (length-counted blocks)."""
        self.uart.send_raw(data)

    async def read_data(self, size: int) -> bytes:
        """Prompt with `>` and read exactly `size` bytes; ERROR when they do not arrive in time."""
        self.uart.send_raw(b"\r\n>")
        try:
            return await self.uart.read_data(size, self.settings.data_timeout_s)
        except TimeoutError:
            raise AtError(f"expected {size} bytes after the prompt") from None

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine in the background (URCs that follow a final result); cancelled on stop()."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("modem %d: background task failed", self.port, exc_info=task.exception())

    # -- the command loop ----------------------------------------------------------------------------

    def _connected(self) -> None:
        if self._boot_pending:
            self._send_boot_urcs()

    def _send_boot_urcs(self) -> None:
        self._boot_pending = False
        for line in BOOT_URCS:
            if line.startswith("+CPIN") and not self.settings.sim_ready:
                continue
            self.urc(line)

    async def _session(self) -> None:
        while True:
            try:
                text = await self.uart.read_line()
            except LineTooLong:
                self._final("ERROR")
                continue
            command = parse_line(text)
            if command is not None:
                await self.execute(command)

    async def execute(self, command: AtCommand) -> None:
        """Run one command and send its final result."""
        handler = self.table.lookup(command)
        if handler is None:
            self._final("ERROR")
            return
        try:
            await handler(command)
        except AtError as error:
            log.debug("modem %d: AT%s: %s", self.port, command.name, error)
            self._final("ERROR")
        except CmeError as error:
            self._final(self._cme_text(error.code))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("modem %d: AT%s crashed", self.port, command.name)
            self._final("ERROR")
        else:
            self._final("OK")

    def _cme_text(self, code: int) -> str:
        if self.cmee == 0:
            return "ERROR"
        if self.cmee == 2 and code in CME_TEXT:
            return f"+CME ERROR: {CME_TEXT[code]}"
        return f"+CME ERROR: {code}"

    def _final(self, text: str) -> None:
        self.uart.send_line(text)
