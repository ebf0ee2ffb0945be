"""`pendant sim`: run virtual pendants on the bench simulator, press their buttons, look at their state.

Thin commands over pendant_hardware.sim_host (the running simulator) and pendant_hardware.sim_control
(its control port); every failure becomes one line and a fixed exit code.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import click

from pendant_hardware.flash import FirmwareBuildError
from pendant_hardware.sim_control import SimNotRunning, SimRequestError, request
from pendant_hardware.sim_host import SimHost, SimHostError
from pendant_hardware.virtual_pendant import HEAP_SIZE

EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
DEFAULT_PRESS_MS = 2500  # longer than the firmware's default long press (2000 ms)


class SimError(click.ClickException):
    """One line on stderr and a fixed exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="data",
    envvar="PENDANT_DATA_DIR",
    show_default="$PENDANT_DATA_DIR, else ./data",
    help="The data folder the simulator runs in.",
)


def _ask(data_dir: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    try:
        return request(data_dir, payload, timeout=timeout)
    except SimNotRunning as exc:
        raise SimError(str(exc), EXIT_NOT_RUNNING) from None
    except SimRequestError as exc:
        raise SimError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sim() -> None:
    """Virtual pendants: the real firmware on MicroPython, talking to a simulated A7670 modem.

    \b
    Example:
      pendant sim run --config pd-0001.json     # in one terminal
      pendant sim press pd-0001                 # in another
    """


@sim.command("run")
@click.option(
    "--config",
    "config_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A device config (docs/protocol-examples/device-config.json); once per pendant.",
)
@click.option(
    "--firmware",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Firmware folder to deploy (default: firmware/ of this repository).",
)
@click.option(
    "--heap",
    default=HEAP_SIZE,
    show_default=True,
    help="MicroPython heap size of each pendant (the device's budget; raise it only to investigate).",
)
@data_dir_option
def run_command(config_paths: tuple[Path, ...], firmware: Path | None, heap: str, data_dir: Path) -> None:
    """Run virtual pendants until Ctrl-C.

    Each pendant gets the firmware compiled into its own flash folder under DATA_DIR/sim/, a simulated
    modem that connects to the broker named in its config, and a board whose button you press with
    `pendant sim press`.

    \b
    Example:
      pendant sim run --config pd-0001.json --config pd-0002.json --data-dir ./data
    """
    configs = [_load_config(path) for path in config_paths]
    try:
        if not re.fullmatch(r"\d+[KM]?", heap):
            raise SimError(f"--heap must look like 64K or 1M, not {heap!r}")
        host = SimHost(data_dir, configs, firmware_dir=firmware, heap_size=heap)
        asyncio.run(_serve(host, data_dir))
    except FirmwareBuildError as exc:
        raise SimError("the firmware does not build: " + "; ".join(str(exc).splitlines())) from None
    except (SimHostError, ValueError, OSError) as exc:
        raise SimError(str(exc)) from None
    click.echo("simulator stopped")


async def _serve(host: SimHost, data_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await host.start()
    try:
        for pendant in host.pendants.values():
            click.echo(
                f"{pendant.device_id}: modem 127.0.0.1:{pendant.modem.port}, board 127.0.0.1:"
                f"{pendant.board.port}, console {pendant.console_log}"
            )
        first = next(iter(host.pendants))
        data_option = "" if data_dir == Path("data") else f" --data-dir {data_dir}"
        click.echo(f"press a button:  pendant sim press {first}{data_option}")
        click.echo("stop with Ctrl-C")
        await stop.wait()
    finally:
        await host.stop()


def _load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SimError(f"cannot read device config {path}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("device_id"), str):
        example = "docs/protocol-examples/device-config.json"
        raise SimError(f"device config {path} has no device_id (see {example})")
    return config


@sim.command("press")
@click.argument("device")
@click.option(
    "--ms",
    type=click.IntRange(1, 60_000),
    default=DEFAULT_PRESS_MS,
    show_default=True,
    help="How long to hold the panic button.",
)
@data_dir_option
def press_command(device: str, ms: int, data_dir: Path) -> None:
    """Hold a virtual pendant's panic button, then release it.

    \b
    Example:
      pendant sim press pd-0001            # a long press: raises an alarm
      pendant sim press pd-0001 --ms 300   # a short press: ignored by the firmware
    """
    answer = _ask(data_dir, {"op": "press", "device": device, "ms": ms}, timeout=ms / 1000 + 15)
    note = "" if answer.get("board_connected") else " (its firmware was not connected to the board)"
    click.echo(f"pressed {device} for {ms} ms{note}")


@sim.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@data_dir_option
def list_command(as_json: bool, data_dir: Path) -> None:
    """List the running virtual pendants.

    \b
    Example:
      pendant sim list --json
    """
    devices = _ask(data_dir, {"op": "list"})["devices"]
    if as_json:
        click.echo(json.dumps(devices, indent=2))
        return
    for device in devices:
        mqtt = "mqtt connected" if device["mqtt_connected"] else "mqtt not connected"
        pid = device["pid"] if device["pid"] is not None else "-"
        click.echo(f"{device['device']}  pid {pid}  boots {device['boots']}  {mqtt}  {device['console_log']}")


@sim.command("battery")
@click.argument("device")
@click.argument("mv", type=click.IntRange(0, 5000))
@data_dir_option
def battery_command(device: str, mv: int, data_dir: Path) -> None:
    """Set a virtual pendant's battery voltage in millivolts.

    \b
    Example:
      pendant sim battery pd-0001 3450     # nearly empty
    """
    _ask(data_dir, {"op": "battery", "device": device, "mv": mv})
    click.echo(f"{device}: battery {mv} mV")


@sim.command("state")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@data_dir_option
def state_command(device: str, as_json: bool, data_dir: Path) -> None:
    """Show a virtual pendant: process, MQTT, battery, vibrations, alarm events, last console lines.

    \b
    Example:
      pendant sim state pd-0001
    """
    state = _ask(data_dir, {"op": "state", "device": device})
    state.pop("ok", None)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    pid = state["pid"] if state["pid"] is not None else "not running"
    click.echo(
        f"{state['device']}: pid {pid}, boots {state['boots']}, "
        f"mqtt {'connected' if state['mqtt_connected'] else 'not connected'}, "
        f"battery {state['battery_mv']} mV{', charging' if state['charger'] else ''}"
    )
    for vibration in state["vibrations"]:
        click.echo(f"  vibration {_clock(vibration['t'])} {vibration['pattern']}")
    for event in state["events"]:
        if event["kind"] != "mem":
            click.echo(f"  {_clock(event['t'])} {event['kind']} {event.get('alarm_id', '')}".rstrip())
    click.echo(f"console log: {state['console_log']}")
    for line in state["last_lines"]:
        click.echo(f"  | {line}")


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))
