"""Runs many virtual pendants in one asyncio loop, with a JSON-lines control port for the CLI and tests.

Files under <data>/sim/: host.json (control port and pid, removed on a clean stop) and one folder per
device (flash/, console.log, modem.log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pendant_hardware.board_io import BoardEvent
from pendant_hardware.console_log import FirmwareEvent
from pendant_hardware.flash import DEVICE_ID, read_device_config
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.modem_sim.faults import FAULTS
from pendant_hardware.sim_control import host_file, read_host_file, write_host_file
from pendant_hardware.sim_text import fault_json
from pendant_hardware.virtual_pendant import HEAP_SIZE, VirtualPendant

DEFAULT_CAPACITY_MAH = 1000

log = logging.getLogger(__name__)

MAX_PRESS_MS = 60_000


def numbered_configs(template: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` copies of a device config whose ids count on from the template's (pd-0009 -> pd-0009,
    pd-0010, ...; an id without a number gets -2, -3, ...). ValueError for an id that cannot count."""
    device_id = str(template.get("device_id", ""))
    match = re.fullmatch(r"(.*?)(\d+)", device_id)
    if match:
        stem, first, width = match.group(1), int(match.group(2)), len(match.group(2))
        ids = [f"{stem}{number:0{width}d}" for number in range(first, first + count)]
    else:
        ids = [device_id] + [f"{device_id}-{number}" for number in range(2, count + 1)]
    for each in ids:
        if not DEVICE_ID.fullmatch(each):
            raise ValueError(f"cannot number device ids from {device_id!r}: {each!r} is not a device id")
    return [{**template, "device_id": each} for each in ids]


def with_provisioned(configs: list[dict[str, Any]], devices_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Each config replaced by the device's own `devices_dir/<id>/config.json` and its CA beside it (what
    `pendant device provision` writes: its own account on the project's broker) when there is one; and
    how many were.
    A file that is not a config for that id is an error (ValueError naming it)."""
    result, found = [], 0
    for config in configs:
        path = devices_dir / str(config["device_id"]) / "config.json"
        if not path.is_file():
            result.append(config)
            continue
        own = read_device_config(path)  # with ca.pem beside it
        if own.get("device_id") != config["device_id"]:
            raise ValueError(f"{path}: not the config of {config['device_id']}")
        result.append(own)
        found += 1
    return result, found


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
            "charger": self._op_charger,
            "state": self._op_state,
            "reset": self._op_reset,
            "power_cut": self._op_power_cut,
            "fault": self._op_fault,
            "clear_fault": self._op_clear_fault,
            "faults": self._op_faults,
            "calls": self._op_calls,
            "sms": self._op_sms,
            "ring": self._op_ring,
            "sms_in": self._op_sms_in,
            "power": self._op_power,
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
                    "pty": pendant.pty,
                    "mode": pendant.mode,
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
        pendant = self._device(request)
        ms = _field(request, "ms", int)
        button = request.get("button", "panic")
        if not 1 <= ms <= MAX_PRESS_MS:
            raise ValueError(f"ms must be 1..{MAX_PRESS_MS}, not {ms}")
        if button not in ("panic", "power"):
            raise ValueError(f"button must be panic or power, not {button!r}")
        await (pendant.press(ms) if button == "panic" else pendant.press_power(ms))
        return {
            "device": pendant.device_id,
            "ms": ms,
            "button": button,
            "board_connected": pendant.board.connected,
        }

    async def _op_battery(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        mv = _field(request, "mv", int)
        pendant.board.set_battery(mv)
        return {"device": pendant.device_id, "mv": mv}

    async def _op_charger(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        connected = _field(request, "on", bool)
        pendant.board.set_charger(connected)
        return {"device": pendant.device_id, "on": connected}

    async def _op_state(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        return pendant.snapshot(lines=int(request.get("lines", 20)))

    async def _op_reset(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        await pendant.reset()
        return {"device": pendant.device_id}

    async def _op_power_cut(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        await pendant.power_cut()
        return {"device": pendant.device_id}

    async def _op_fault(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        params = request.get("params", {})
        if not isinstance(params, dict):
            raise ValueError("'params' must be an object of name: value")
        active = pendant.modem.inject(_field(request, "fault", str), **params)
        return {"device": pendant.device_id, "faults": active}

    async def _op_clear_fault(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        fault = request.get("fault")
        if fault is not None and not isinstance(fault, str):
            raise ValueError("'fault' must be a fault name, or absent to clear every fault")
        return {"device": pendant.device_id, "faults": pendant.modem.clear(fault)}

    async def _op_faults(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"faults": [fault_json(spec) for spec in FAULTS.values()]}

    async def _op_calls(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        return {"device": pendant.device_id, "calls": pendant.modem.calls}

    async def _op_sms(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        return {"device": pendant.device_id, "sms": pendant.modem.sms_sent}

    async def _op_ring(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        return {"device": pendant.device_id, "call": pendant.modem.ring(_field(request, "number", str))}

    async def _op_sms_in(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        index = pendant.modem.deliver_sms(_field(request, "number", str), _field(request, "text", str))
        return {"device": pendant.device_id, "index": index}

    async def _op_power(self, request: dict[str, Any]) -> dict[str, Any]:
        pendant = self._device(request)
        capacity = request.get("capacity_mah", DEFAULT_CAPACITY_MAH)
        if not isinstance(capacity, int | float) or isinstance(capacity, bool) or capacity <= 0:
            raise ValueError("'capacity_mah' must be a positive number")
        return {"device": pendant.device_id, **pendant.power_report().to_json(float(capacity))}

    def _device(self, request: dict[str, Any]) -> VirtualPendant:
        return self.pendant(_field(request, "device", str))


def _field(request: dict[str, Any], name: str, kind: type) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
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

    def press_power(self, device_id: str, ms: int = 1000) -> None:
        """Hold the device's power button for `ms` (switches a pendant that is off on)."""
        self.call(self.pendant(device_id).press_power(ms), timeout=ms / 1000 + 30)

    def set_battery(self, device_id: str, mv: int) -> None:
        """Set the device's battery voltage."""
        self.call(_run(self.pendant(device_id).board.set_battery, mv))

    def set_charger(self, device_id: str, connected: bool) -> None:
        """Plug the charger in (True) or out; plugging it in switches a pendant that is off on."""
        self.call(_run(self.pendant(device_id).board.set_charger, connected))

    def power_cut(self, device_id: str) -> None:
        """Kill the device's firmware with SIGKILL and power-cycle its modem; it boots again."""
        self.call(self.pendant(device_id).power_cut())

    def reset(self, device_id: str) -> None:
        """Press the device's reset button: the firmware boots again, the modem keeps running."""
        self.call(self.pendant(device_id).reset())

    def pty(self, device_id: str) -> str:
        """The device's serial port (`/dev/pts/N`) for pyserial or `mpremote connect`."""
        return self.call(_run(lambda: self.pendant(device_id).pty))

    def inject_fault(self, device_id: str, fault: str, **params: object) -> dict[str, Any]:
        """Give the device's modem a fault (modem_sim/faults.py); returns the faults in force."""
        return self.call(_run(lambda: self.pendant(device_id).modem.inject(fault, **params)))

    def clear_fault(self, device_id: str, fault: str | None = None) -> dict[str, Any]:
        """End one lasting fault of the device's modem, or all; returns the faults still in force."""
        return self.call(_run(self.pendant(device_id).modem.clear, fault))

    def calls(self, device_id: str) -> list[dict[str, Any]]:
        """Every call the device's modem made or received (ongoing ones too), oldest first."""
        return self.call(_run(lambda: self.pendant(device_id).modem.calls))

    def sms(self, device_id: str) -> list[dict[str, Any]]:
        """Every SMS the device sent or tried to, oldest first."""
        return self.call(_run(lambda: self.pendant(device_id).modem.sms_sent))

    def ring(self, device_id: str, number: str) -> dict[str, Any]:
        """Call the device from `number` (RING until it answers or the caller gives up)."""
        return self.call(_run(self.pendant(device_id).modem.ring, number))

    def deliver_sms(self, device_id: str, number: str, text: str) -> int:
        """Send the device an SMS (stored in the SIM, +CMTI); returns its index."""
        return self.call(_run(self.pendant(device_id).modem.deliver_sms, number, text))

    def power(self, device_id: str, capacity_mah: float = DEFAULT_CAPACITY_MAH) -> dict[str, Any]:
        """Time per modem and MCU state so far and the battery projection for `capacity_mah`."""
        return self.call(_run(lambda: self.pendant(device_id).power_report().to_json(capacity_mah)))

    def wait_for_call(
        self,
        device_id: str,
        number: str | None = None,
        *,
        after: int = 0,
        ended: bool = False,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """The first call at index >= `after` (to or from `number`, if given; finished, if `ended`)."""
        return self._wait_for_record(device_id, "calls", number, after, ended, timeout)

    def wait_for_sms(
        self, device_id: str, number: str | None = None, *, after: int = 0, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first SMS at index >= `after` (to `number`, if given); TimeoutError if none comes."""
        return self._wait_for_record(device_id, "sms_sent", number, after, False, timeout)

    def _wait_for_record(
        self, device_id: str, kind: str, number: str | None, after: int, ended: bool, timeout: float
    ) -> dict[str, Any]:
        pendant = self.pendant(device_id)

        async def wait() -> dict[str, Any]:
            async with asyncio.timeout(timeout):
                while True:
                    for record in getattr(pendant.modem, kind)[after:]:
                        if (number is None or record["number"] == number) and (
                            not ended or record.get("ended")
                        ):
                            return record
                    await asyncio.sleep(0.05)

        return self.call(wait(), timeout + 5)

    def wait_for_mode(self, device_id: str, mode: str, *, timeout: float = 30.0) -> None:
        """Return once the device runs `mode` (firmware, repl, raw_repl, off); TimeoutError otherwise."""
        self.call(self.pendant(device_id).wait_for_mode(mode, timeout=timeout), timeout + 5)

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
