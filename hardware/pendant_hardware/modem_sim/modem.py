"""One simulated A7670: its UART on a TCP port, the command loop, the command families, its power
(PWRKEY, sleep with DTR), fault injection and what it captured (calls, SMS)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pendant_hardware.modem_sim.at_parser import (
    AtCommand,
    AtError,
    CmeError,
    CmsError,
    FinalResult,
    parse_line,
)
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.fault_effects import FaultEffects
from pendant_hardware.modem_sim.general import CME_TEXT, GeneralCommands
from pendant_hardware.modem_sim.gnss import GnssCommands
from pendant_hardware.modem_sim.mqtt_bridge import LOST_CLOSED_BY_PEER, LOST_NETWORK_CLOSED
from pendant_hardware.modem_sim.mqtt_commands import MqttCommands
from pendant_hardware.modem_sim.network import NetworkCommands
from pendant_hardware.modem_sim.power_commands import PowerCommands
from pendant_hardware.modem_sim.settings import NOT_REGISTERED, REGISTERED_STATES, ModemSettings
from pendant_hardware.modem_sim.sms import CMS_TEXT, SmsCommands
from pendant_hardware.modem_sim.tls import TlsCommands
from pendant_hardware.modem_sim.uart import ConnectionClosed, LineTooLong, Uart
from pendant_hardware.modem_sim.voice import VoiceCommands
from pendant_hardware.power import PowerMeter

log = logging.getLogger(__name__)

BOOT_URCS = ("*ATREADY: 1", "+CPIN: READY", "SMS DONE", "PB DONE")
DEFAULT_CMEE = 2  # A7670 modules answer "+CME ERROR: SIM not inserted" out of the box
OFF, BOOTING, ON = "off", "booting", "on"
MAX_HOLD_S = 1.0  # quirk_interleave: a held URC goes out at the latest after this


class ModemSim:
    """An A7670 on 127.0.0.1:<port>, bridging AT+CMQTT* to a real broker.

    Families of commands each register their handlers in one table. Hooks for tests and the bench:
    `inject(fault, **params)` / `clear(fault)`, `set_registration`, `set_gnss_fix`, `power_cycle`,
    `pwrkey(ms)`, `set_dtr(level)`, `ring(number)`, `deliver_sms(number, text)`; what it captured:
    `calls`, `sms_sent`.
    """

    def __init__(
        self,
        settings: ModemSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        battery_mv: Callable[[], int] | None = None,
        trace_path: Path | None = None,
        meter: PowerMeter | None = None,
        on_capture: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or ModemSettings()
        self._battery_mv = battery_mv
        self.meter = meter
        self._on_capture = on_capture
        self.clock = clock
        self.uart = Uart(
            self._session, host=host, port=port, on_connect=self._connected, trace_path=trace_path
        )
        self.cmee = DEFAULT_CMEE
        self.power_state = ON if self.settings.starts_powered else OFF
        self.power_ons = 0
        self.dtr = False  # the host's DTR line: high (True) lets the modem sleep after AT+CSCLK=1
        self.response_delay_s = 0.0  # fault "slow"
        self.executing = False
        self._boot_pending = self.settings.boot_urcs and self.power_state == ON
        self._boot_task: asyncio.Task[None] | None = None
        self._held: list[tuple[bytes, list[str]]] = []  # quirk_interleave: URCs waiting for a command
        self._hold_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.table = CommandTable()
        self.general = GeneralCommands(self)
        self.network = NetworkCommands(self)
        self.gnss = GnssCommands(self)
        self.mqtt = MqttCommands(self)
        self.voice = VoiceCommands(self)
        self.sms = SmsCommands(self)
        self.power = PowerCommands(self)
        self.tls = TlsCommands(self)
        self.families = (
            self.general,
            self.network,
            self.gnss,
            self.mqtt,
            self.voice,
            self.sms,
            self.power,
            self.tls,
        )
        for family in self.families:
            family.register(self.table)
        self.faults = FaultEffects(self)
        if self.power_state == OFF:
            self._go_quiet("off")

    # -- state ---------------------------------------------------------------------------------------

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
    def powered(self) -> bool:
        """On or booting."""
        return self.power_state != OFF

    @property
    def registration(self) -> int:
        """The registration status the modem reports (0 while its radio is off by AT+CFUN)."""
        return self.settings.registration if self.power.cfun == 1 else NOT_REGISTERED

    @property
    def registered(self) -> bool:
        """Registered on a network (home or roaming), radio on."""
        return self.registration in REGISTERED_STATES

    @property
    def asleep(self) -> bool:
        """AT+CSCLK=1 and DTR high: the UART is off until DTR goes low (URCs still wake it)."""
        return self.power_state == ON and self.power.csclk == 1 and self.dtr

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every call so far, oldest first (ongoing ones included)."""
        return [call.to_json() for call in self.voice.calls]

    @property
    def sms_sent(self) -> list[dict[str, Any]]:
        """Every SMS the host sent or tried to, oldest first."""
        return [record.to_json() for record in self.sms.sent]

    async def start(self) -> None:
        """Listen for the host (the firmware) on the UART port."""
        await self.uart.start()

    async def stop(self) -> None:
        """Switch the modem off: broker connections dropped silently, UART closed."""
        self._reset_families()
        await self.uart.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- hooks ---------------------------------------------------------------------------------------

    def inject(self, fault: str, **params: object) -> dict[str, Any]:
        """Give the modem a fault (modem_sim/faults.py lists them); returns the faults now in force."""
        return self.faults.inject(fault, params)

    def clear(self, fault: str | None = None) -> dict[str, Any]:
        """End one lasting fault, or all of them; returns the faults still in force."""
        return self.faults.clear(fault)

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

    def set_radio(self, on: bool, fun: int) -> None:
        """AT+CFUN: the radio on or off (registration and MQTT follow)."""
        was_registered = self.registered
        self.power.cfun = fun
        if was_registered != self.registered:
            self.network.registration_changed()
            if not self.registered:
                self.mqtt.drop(LOST_NETWORK_CLOSED)

    def set_gnss_fix(self, has_fix: bool) -> None:
        """Let the GNSS engine see satellites (a fix once ready) or not (empty position fields)."""
        self.settings.gnss_fix = has_fix

    def ring(self, number: str) -> dict[str, Any]:
        """An incoming call from `number`: RING until the host answers (ATA) or the caller gives up."""
        return self.voice.ring(number).to_json()

    def deliver_sms(self, number: str, text: str) -> int:
        """An incoming SMS: stored, `+CMTI` sent; returns its storage index."""
        if not self.powered:
            raise ValueError("the modem is off")
        return self.sms.deliver(number, text)

    # -- power ---------------------------------------------------------------------------------------

    def pwrkey(self, ms: int) -> str:
        """The host held PWRKEY low for `ms`: >= `pwrkey_on_ms` switches an off modem on, >= `pwrkey_off_ms`
        switches a running one off (A7670 hardware design manual power-on/off timing; LilyGO's
        utilities.h uses 100 ms and 3000 ms). Returns what it did: on, off or nothing."""
        settings = self.settings
        if self.power_state == OFF and ms >= settings.pwrkey_on_ms:
            self.power_on()
            return "on"
        if self.power_state != OFF and ms >= settings.pwrkey_off_ms:
            self.power_off()
            return "off"
        return "nothing"

    def power_off(self) -> None:
        """Power gone or switched off: every connection and call dropped, nothing heard or said."""
        if self._boot_task is not None:
            self._boot_task.cancel()
            self._boot_task = None
        self._reset_families()
        self.faults.power_cycled()
        self.power_state = OFF
        self._go_quiet("off")
        self.uart.discard_input()
        self.uart.trace("power off")
        self._meter(lambda meter, now: meter.set_modem_powered(False, now))

    def power_on(self, delay_s: float | None = None) -> None:
        """Switch on: the UART answers after `boot_delay_s`, then the boot URCs."""
        if self.power_state != OFF:
            return
        self.power_state = BOOTING
        self.uart.trace("power on")
        self._meter(lambda meter, now: meter.set_modem_powered(True, now))
        wait = self.settings.boot_delay_s if delay_s is None else delay_s
        self._boot_task = self.spawn(self._boot(wait))

    async def power_cycle(self) -> None:
        """Switch the modem off and on (a power cut, AT+CRESET): power-on state, boot URCs again."""
        self.power_off()
        self.power_on()

    async def restart(self) -> None:
        """AT+CRESET / AT+CFUN=1,1: the OK goes out first, then the modem restarts."""
        await asyncio.sleep(0)
        await self.power_cycle()

    async def power_off_soon(self) -> None:
        """AT+CPOF: switch off after the OK has gone out."""
        await asyncio.sleep(0)
        self.power_off()

    async def _boot(self, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._boot_task = None
        self.power_ons += 1
        self.power_state = ON
        self.echo = True
        self.cmee = DEFAULT_CMEE
        self.uart.deaf = None
        self.uart.mute = False
        self.sleep_conditions_changed()
        self._boot_pending = self.settings.boot_urcs
        if self._boot_pending and self.uart.connected:
            self._send_boot_urcs()

    def _go_quiet(self, why: str) -> None:
        self.uart.deaf = why
        self.uart.mute = True

    def _reset_families(self) -> None:
        self.mqtt.reset()
        self.gnss.reset()
        self.network.reset()
        self.voice.reset()
        self.sms.reset()
        self.power.reset()
        self.tls.reset()
        self._held.clear()

    def set_dtr(self, high: bool) -> None:
        """The host's DTR line (board channel `DTR 0|1`); a change is in the trace (modem.log)."""
        if high != self.dtr:
            self.uart.trace(f"DTR {int(high)}")
        self.dtr = high
        self.sleep_conditions_changed()

    def sleep_conditions_changed(self) -> None:
        """AT+CSCLK or DTR changed: the UART sleeps or wakes, the meter learns whether sleep is allowed."""
        if self.power_state == ON and not self.faults.hung:
            self.uart.deaf = "asleep" if self.asleep else None
        allowed = self.power.csclk == 1 and self.dtr
        self._meter(lambda meter, now: meter.set_sleep_allowed(allowed, now))

    def radio_packet(self) -> None:
        """The radio sent or received something (power accounting)."""
        self._meter(lambda meter, now: meter.radio_packet(now))

    def call_changed(self, active: bool) -> None:
        """A call started or ended (power accounting)."""
        self._meter(lambda meter, now: meter.set_call(active, now))

    def gnss_power_changed(self, on: bool) -> None:
        """The GNSS engine was switched on or off (power accounting)."""
        self._meter(lambda meter, now: meter.set_gnss(on, now))

    def _meter(self, update: Callable[[PowerMeter, float], None]) -> None:
        if self.meter is not None:
            update(self.meter, self.clock())

    def mqtt_connected(self, index: int = 0) -> bool:
        """True while MQTT client `index` is connected to the broker."""
        return self.mqtt.is_connected(index)

    # -- what command families use -------------------------------------------------------------------

    def battery_mv(self) -> int:
        """The supply voltage the modem measures (from the board when one is attached)."""
        return self._battery_mv() if self._battery_mv is not None else self.settings.battery_mv

    def captured(self, kind: str, record: dict[str, Any]) -> None:
        """A call ended or an SMS was handled: tell whoever keeps the record."""
        if self._on_capture is not None:
            self._on_capture(kind, record)

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
        self._emit(b"\r\n" + text.encode("utf-8") + b"\r\n", [text])

    def urc_data(self, data: bytes) -> None:
        """Raw bytes that belong to a URC (the topic after +CMQTTRXTOPIC)."""
        self._emit(data, [f"data {data!r}"])

    def _emit(self, data: bytes, trace: list[str]) -> None:
        if self.faults.interleave and not self.executing:
            self._held.append((data, trace))
            if self._hold_timer is None:
                self._hold_timer = asyncio.get_running_loop().call_later(MAX_HOLD_S, self._release_held)
            return
        self._send(data, trace)

    def _send(self, data: bytes, trace: list[str]) -> None:
        for line in trace:
            self.uart.trace(f"<- {line}")
        self.uart.send_raw(data, trace=False)

    def _release_held(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._held = self._held, []
        for data, trace in held:
            self._send(data, trace)

    def send_raw(self, data: bytes) -> None:
        """Bytes without framing (a prompt)."""
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
        if self._boot_pending and self.power_state == ON:
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
            if command is not None and self.power_state == ON:
                await self.execute(command)

    async def execute(self, command: AtCommand) -> None:
        """Run one command and send its final result."""
        self.executing = True
        try:
            if self.response_delay_s:
                await asyncio.sleep(self.response_delay_s)
            self._final(await self._run(command))
        finally:
            self.executing = False

    async def _run(self, command: AtCommand) -> str:
        handler = self.table.lookup(command)
        if handler is None:
            return "ERROR"
        try:
            await handler(command)
        except AtError as error:
            log.debug("modem %d: AT%s: %s", self.port, command.name, error)
            return "ERROR"
        except CmeError as error:
            return self._error_text("+CME", error.code, CME_TEXT)
        except CmsError as error:
            return self._error_text("+CMS", error.code, CMS_TEXT)
        except FinalResult as result:
            return result.text
        except (ConnectionClosed, ConnectionError):
            raise  # the host went away mid-command: the session ends
        except Exception:
            log.exception("modem %d: AT%s crashed", self.port, command.name)
            return "ERROR"
        return "OK"

    def _error_text(self, kind: str, code: int, texts: dict[int, str]) -> str:
        if self.cmee == 0:
            return "ERROR"
        if self.cmee == 2 and code in texts:
            return f"{kind} ERROR: {texts[code]}"
        return f"{kind} ERROR: {code}"

    def _final(self, text: str) -> None:
        # quirk_interleave: whatever URCs are waiting go out between the response and its final result.
        self._release_held()
        for line in self.faults.take_interleave_urcs():
            self.uart.send_line(line)
        self.uart.send_line(text)
