"""Runs many virtual pendants in one asyncio loop, with a JSON-lines control port for the CLI and tests.

Files under <data>/sim/: host.json (control port and pid, removed on a clean stop) and one folder per
device (flash/, console.log, modem.log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pendant_hardware.board_io import BoardEvent
from pendant_hardware.console_log import FirmwareEvent
from pendant_hardware.flash import DEVICE_ID
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_control import host_file, read_host_file, write_host_file
from pendant_hardware.virtual_pendant import HEAP_SIZE, VirtualPendant

log = logging.getLogger(__name__)

MAX_PRESS_MS = 60_000


class SimHostError(RuntimeError):
    """The sim host cannot start (another one runs on the same data folder, duplicate devices)."""


class SimHost:
    """N virtual pendants and the control port. `configs` are device configs as in
    docs/protocol-examples/device-config.json (device id, broker address and credentials, APN)."""

    def __init__(
        self,
        data_dir: Path,
        configs: list[dict[str, Any]],
        *,
        firmware_dir: Path | None = None,
        modem_settings: Callable[[str], ModemSettings] | None = None,
        restart_delay_s: float = 0.5,
        heap_size: str = HEAP_SIZE,
        control_port: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.sim_dir = self.data_dir / "sim"
        self.pendants: dict[str, VirtualPendant] = {}
        for config in configs:
            device_id = str(config.get("device_id"))
            if not DEVICE_ID.fullmatch(device_id):
                raise SimHostError(f"config needs a device_id like pd-0001, got {config.get('device_id')!r}")
            pendant = VirtualPendant(
                config,
                self.sim_dir / device_id,
                firmware_dir=firmware_dir,
                modem_settings=modem_settings(device_id) if modem_settings else None,
                restart_delay_s=restart_delay_s,
                heap_size=heap_size,
            )
            if pendant.device_id in self.pendants:
                raise SimHostError(f"device {pendant.device_id} is given twice")
            self.pendants[pendant.device_id] = pendant
        if not self.pendants:
            raise SimHostError("give at least one device config")
        self._control_port = control_port
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "list": self._op_list,
            "press": self._op_press,
            "battery": self._op_battery,
            "state": self._op_state,
        }

    @property
    def control_port(self) -> int:
        """The TCP port of the control port (known after start())."""
        return self._control_port

    def pendant(self, device_id: str) -> VirtualPendant:
        """The pendant with this id; KeyError naming the known ones otherwise."""
        try:
            return self.pendants[device_id]
        except KeyError:
            known = ", ".join(sorted(self.pendants))
            raise KeyError(f"no device {device_id!r} on this simulator; devices: {known}") from None

    async def start(self) -> None:
        """Start every pendant and the control port, then write host.json."""
        running = read_host_file(self.data_dir)
        if running is not None:
            raise SimHostError(f"a simulator is already running in {self.data_dir} (pid {running['pid']})")
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        started: list[VirtualPendant] = []
        try:
            for pendant in self.pendants.values():
                await pendant.start()
                started.append(pendant)
            self._server = await asyncio.start_server(self._serve_client, "127.0.0.1", self._control_port)
        except BaseException:
            for pendant in started:
                await pendant.stop()
            raise
        self._control_port = self._server.sockets[0].getsockname()[1]
        write_host_file(self.data_dir, self._control_port, sorted(self.pendants))
        log.info("sim host: %d pendant(s), control port %d", len(self.pendants), self._control_port)

    async def stop(self) -> None:
        """Stop the control port and every pendant, then remove host.json."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await asyncio.gather(*(pendant.stop() for pendant in self.pendants.values()), return_exceptions=True)
        info = read_host_file(self.data_dir)
        if info is not None and info.get("port") == self._control_port:
            host_file(self.data_dir).unlink(missing_ok=True)
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Start, run until cancelled (Ctrl-C) or stop() is called, and always stop cleanly."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    # -- control port --------------------------------------------------------------------------------

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self.handle_request(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.info("control port: client went away: %s", exc)
        finally:
            writer.close()

    async def handle_request(self, line: bytes | str) -> dict[str, Any]:
        """Answer one request line: {"ok": true, ...} or {"ok": false, "error": "..."}."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object per line"}
        if not isinstance(request, dict) or request.get("op") not in self._ops:
            return {"ok": False, "error": f"unknown op; ops are: {', '.join(sorted(self._ops))}"}
        try:
            answer = await self._ops[request["op"]](request)
        except (KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            return {"ok": False, "error": str(message)}
        except Exception as exc:
            log.exception("control port: %s failed", request["op"])
            return {"ok": False, "error": f"{request['op']} failed: {exc}"}
        return {"ok": True, **answer}

    async def _op_list(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "devices": [
                {
                    "device": pendant.device_id,
                    "pid": pendant.pid,
                    "boots": pendant.boots,
                    "mqtt_connected": pendant.mqtt_connected,
                    "modem_port": pendant.modem.port,
                    "io_port": pendant.board.port,
                    "console_log": str(pendant.console_log),
                }
                for pendant in self.pendants.values()
            ]
        }

    async def _op_press(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self.pendant(_field(request, "device", str))
        ms = _field(request, "ms", int)
        if not 1 <= ms <= MAX_PRESS_MS:
            raise ValueError(f"ms must be 1..{MAX_PRESS_MS}, not {ms}")
        await pendant.press(ms)
        return {"device": pendant.device_id, "ms": ms, "board_connected": pendant.board.connected}

    async def _op_battery(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self.pendant(_field(request, "device", str))
        mv = _field(request, "mv", int)
        pendant.board.set_battery(mv)
        return {"device": pendant.device_id, "mv": mv}

    async def _op_state(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self.pendant(_field(request, "device", str))
        return pendant.snapshot(lines=int(request.get("lines", 20)))


def _field(request: dict[str, Any], name: str, kind: type) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"'{name}' must be a {kind.__name__}")
    return value


class BackgroundSimHost:
    """A SimHost on its own event-loop thread, for synchronous callers (end-to-end tests, demos):

    with BackgroundSimHost(data_dir, [config]) as sim:
        sim.press("pd-0001")
        sim.wait_for_vibration("pd-0001", "received")
    """

    def __init__(self, data_dir: Path, configs: list[dict[str, Any]], **options: Any) -> None:
        self._data_dir = data_dir
        self._configs = configs
        self._options = options
        self._thread = LoopThread("sim-host")
        self.host: SimHost | None = None

    def start(self) -> BackgroundSimHost:
        """Start the loop thread and the host (FirmwareBuildError and SimHostError come out here)."""
        self._thread.start()
        try:
            self.host = self._thread.run(self._make_and_start(), timeout=120)
        except BaseException:
            self._thread.stop()
            raise
        return self

    async def _make_and_start(self) -> SimHost:
        host = SimHost(self._data_dir, self._configs, **self._options)
        await host.start()
        return host

    def stop(self) -> None:
        """Stop every pendant and the loop thread."""
        if self.host is not None:
            with contextlib.suppress(Exception):
                self._thread.run(self.host.stop(), timeout=60)
            self.host = None
        self._thread.stop()

    def __enter__(self) -> BackgroundSimHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def pendant(self, device_id: str) -> VirtualPendant:
        """The VirtualPendant object (touch it only through `call`, it lives on the loop thread)."""
        assert self.host is not None, "not started"
        return self.host.pendant(device_id)

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        """Run any coroutine on the host's loop, e.g. `sim.call(sim.pendant("pd-0001").power_cut())`."""
        return self._thread.run(coroutine, timeout)

    def press(self, device_id: str, ms: int = 2500) -> None:
        """Hold the device's panic button for `ms`, then release it (returns after the release)."""
        self.call(self.pendant(device_id).press(ms), timeout=ms / 1000 + 30)

    def set_battery(self, device_id: str, mv: int) -> None:
        """Set the device's battery voltage."""
        self.call(_run(self.pendant(device_id).board.set_battery, mv))

    def power_cut(self, device_id: str) -> None:
        """Kill the device's firmware with SIGKILL and power-cycle its modem; it boots again."""
        self.call(self.pendant(device_id).power_cut())

    def state(self, device_id: str) -> dict[str, Any]:
        """What the control port's `state` op answers."""
        return self.call(_run(self.pendant(device_id).snapshot))

    def wait_for_vibration(
        self, device_id: str, pattern: str, *, after: int = 0, timeout: float = 30.0
    ) -> BoardEvent:
        """The first `VIB <pattern>` at index >= `after`; TimeoutError if none comes in time."""
        pendant = self.pendant(device_id)
        return self.call(pendant.wait_for_vibration(pattern, after=after, timeout=timeout), timeout + 5)

    def wait_for_mqtt(self, device_id: str, *, timeout: float = 30.0) -> None:
        """Return once the device's modem is connected to the broker; TimeoutError otherwise."""
        self.call(self.pendant(device_id).wait_for_mqtt(timeout=timeout), timeout + 5)

    def wait_for_line(self, device_id: str, text: str, *, after: int = 0, timeout: float = 30.0) -> str:
        """The first console line containing `text` (line number >= `after`); TimeoutError if none."""
        pendant = self.pendant(device_id)
        return self.call(pendant.wait_for_line(text, after=after, timeout=timeout), timeout + 5)

    def wait_for_event(
        self, device_id: str, kind: str, alarm_id: str | None = None, *, after: int = 0, timeout: float = 30.0
    ) -> FirmwareEvent:
        """The first firmware event of `kind` (alarm_raised, alarm_published, alarm_acked, mem)."""
        pendant = self.pendant(device_id)
        return self.call(pendant.wait_for_event(kind, alarm_id, after=after, timeout=timeout), timeout + 5)


async def _run(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)
