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

from pendant_hardware import sim_text
from pendant_hardware.flash import DEVICE_ID, FirmwareBuildError, read_device_config
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.modem_sim.faults import FAULTS, parse_assignments
from pendant_hardware.modem_sim.gnss_track import TrackError, load_track
from pendant_hardware.sim_control import SimNotRunning, SimRequestError, read_host_file, request
from pendant_hardware.sim_host import (
    DEFAULT_CAPACITY_MAH,
    SimHost,
    SimHostError,
    numbered_configs,
    with_provisioned,
)
from pendant_hardware.virtual_pendant import HEAP_SIZE, read_captures

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
      pendant sim list                          # serial ports (pty) for mpremote, modes, boots
      pendant sim fault pd-0001 no_signal       # see `pendant sim faults`
      pendant sim calls pd-0001                 # what the pendant dialled
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
@click.option(
    "--count",
    type=click.IntRange(1, 500),
    default=None,
    help="Run this many pendants from ONE --config: ids count on from its device_id (pd-0001, pd-0002...). "
    "Each uses its own DATA_DIR/devices/<id>/config.json when there is one (`pendant device provision` "
    "writes it: the project's broker lets each device in only with its own account); the others share "
    "the template's credentials.",
)
@click.option(
    "--track",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A GPX or CSV track (columns lat, lon, optional t and alt) every pendant's GNSS follows.",
)
@data_dir_option
def run_command(
    config_paths: tuple[Path, ...],
    firmware: Path | None,
    heap: str,
    count: int | None,
    track: Path | None,
    data_dir: Path,
) -> None:
    """Run virtual pendants until Ctrl-C.

    Each pendant gets the firmware compiled into its own flash folder under DATA_DIR/sim/, a simulated
    modem that connects to the broker named in its config, a board whose button you press with
    `pendant sim press`, and a serial port (a pty: see `pendant sim list`) for mpremote.

    \b
    Example:
      pendant sim run --config pd-0001.json --config pd-0002.json --data-dir ./data
      pendant sim run --config pd-0001.json --count 20 --track walk.gpx
      pendant device provision $(seq -f "pd-%04g" 1 20) && \\
        pendant sim run --config data/devices/pd-0001/config.json --count 20
    """
    configs = [_load_config(path) for path in config_paths]
    if count is not None:
        if len(configs) != 1:
            raise SimError("--count takes exactly one --config as the template")
        try:
            configs, own = with_provisioned(numbered_configs(configs[0], count), data_dir / "devices")
        except ValueError as exc:
            raise SimError(str(exc)) from None
        click.echo(f"{own} of {count} pendants use their own provisioned config from {data_dir / 'devices'}")
    points = None
    if track is not None:
        try:
            points = load_track(track)
        except TrackError as exc:
            raise SimError(str(exc)) from None
    try:
        if not re.fullmatch(r"\d+[KM]?", heap):
            raise SimError(f"--heap must look like 64K or 1M, not {heap!r}")

        def settings(device_id: str) -> ModemSettings:
            return ModemSettings.for_device(device_id, track=points)

        host = SimHost(data_dir, configs, firmware_dir=firmware, heap_size=heap, modem_settings=settings)
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
                f"{pendant.device_id}: serial {pendant.pty}, modem 127.0.0.1:{pendant.modem.port}, "
                f"board 127.0.0.1:{pendant.board.port}, console {pendant.console_log}"
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
        config = read_device_config(path)  # and the CA beside it (ca.pem), as provisioning wrote them
    except ValueError as exc:
        raise SimError(f"cannot read device config {exc}") from None
    if not isinstance(config.get("device_id"), str):
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
    help="How long to hold the button.",
)
@click.option("--power", "power_button", is_flag=True, help="Press the power button, not the panic button.")
@data_dir_option
def press_command(device: str, ms: int, power_button: bool, data_dir: Path) -> None:
    """Hold a virtual pendant's panic (or power) button, then release it.

    \b
    Example:
      pendant sim press pd-0001            # a long press: raises an alarm
      pendant sim press pd-0001 --ms 300   # a short press: ignored by the firmware
      pendant sim press pd-0001 --power    # the power button (switches a pendant that is off on)
    """
    button = "power" if power_button else "panic"
    payload = {"op": "press", "device": device, "ms": ms, "button": button}
    answer = _ask(data_dir, payload, timeout=ms / 1000 + 15)
    note = "" if answer.get("board_connected") else " (its firmware was not connected to the board)"
    click.echo(f"pressed {device}'s {button} button for {ms} ms{note}")


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
    for line in sim_text.device_lines(devices):
        click.echo(line)


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
    for line in sim_text.state_lines(state):
        click.echo(line)
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


@sim.command("charger")
@click.argument("device")
@click.argument("state", type=click.Choice(["on", "off"]))
@data_dir_option
def charger_command(device: str, state: str, data_dir: Path) -> None:
    """Plug a virtual pendant's charger in or out (plugging it in switches a pendant that is off on).

    \b
    Example:
      pendant sim charger pd-0001 on
    """
    _ask(data_dir, {"op": "charger", "device": device, "on": state == "on"})
    click.echo(f"{device}: charger {state}")


@sim.command("reset")
@click.argument("device")
@data_dir_option
def reset_command(device: str, data_dir: Path) -> None:
    """Press a virtual pendant's reset button: the ESP32 restarts and runs its firmware; the modem stays up.

    \b
    Example:
      pendant sim reset pd-0001      # e.g. after `mpremote` left it at the REPL
    """
    _ask(data_dir, {"op": "reset", "device": device})
    click.echo(f"{device}: reset")


@sim.command("power-cut")
@click.argument("device")
@data_dir_option
def power_cut_command(device: str, data_dir: Path) -> None:
    """Pull a virtual pendant's battery: the firmware dies at once, the modem loses power; then it boots.

    \b
    Example:
      pendant sim power-cut pd-0001
    """
    _ask(data_dir, {"op": "power_cut", "device": device})
    click.echo(f"{device}: power cut, booting again")


@sim.command("faults")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def faults_command(as_json: bool) -> None:
    """List the faults a virtual pendant's modem can be given, with their parameters.

    \b
    Example:
      pendant sim faults
    """
    if as_json:
        click.echo(json.dumps([sim_text.fault_json(spec) for spec in FAULTS.values()], indent=2))
        return
    for line in sim_text.fault_catalogue_lines(FAULTS.values()):
        click.echo(line)


@sim.command("fault")
@click.argument("device")
@click.argument("name", type=click.Choice(sorted(FAULTS)), metavar="FAULT")
@click.argument("params", nargs=-1, metavar="[NAME=VALUE]...")
@data_dir_option
def fault_command(device: str, name: str, params: tuple[str, ...], data_dir: Path) -> None:
    """Give a virtual pendant's modem a fault (see `pendant sim faults`); lasting ones stay until cleared.

    \b
    Example:
      pendant sim fault pd-0001 no_signal
      pendant sim fault pd-0001 connlost cause=3
      pendant sim fault pd-0001 client_busy count=2
      pendant sim fault pd-0001 hung              # until PWRKEY power-cycles it
    """
    try:
        values = parse_assignments(params)
    except ValueError as exc:
        raise SimError(str(exc)) from None
    answer = _ask(data_dir, {"op": "fault", "device": device, "fault": name, "params": values})
    click.echo(f"{device}: {name} given; in force: {sim_text.faults_in_force(answer['faults'])}")


@sim.command("clear")
@click.argument("device")
@click.argument("name", required=False, metavar="[FAULT]")
@data_dir_option
def clear_command(device: str, name: str | None, data_dir: Path) -> None:
    """End a lasting fault of a virtual pendant's modem, or all of them.

    \b
    Example:
      pendant sim clear pd-0001 no_signal
      pendant sim clear pd-0001            # every fault
    """
    answer = _ask(data_dir, {"op": "clear_fault", "device": device, "fault": name})
    click.echo(
        f"{device}: cleared {name or 'every fault'}; in force: {sim_text.faults_in_force(answer['faults'])}"
    )


def _captured(data_dir: Path, device: str, kind: str) -> list[dict[str, Any]]:
    """From the running simulator, or (stopped) from the files it left in the data folder."""
    if read_host_file(data_dir) is not None:
        op = "calls" if kind == "call" else "sms"
        return _ask(data_dir, {"op": op, "device": device})[op]
    if not DEVICE_ID.fullmatch(device):
        raise SimError(f"not a device id: {device!r}")
    folder = Path(data_dir) / "sim" / device
    if not folder.is_dir():
        raise SimError(f"no pendant {device} in {data_dir}: nothing was captured", EXIT_NOT_RUNNING)
    return read_captures(folder, kind)


@sim.command("calls")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the calls as JSON.")
@data_dir_option
def calls_command(device: str, as_json: bool, data_dir: Path) -> None:
    """Show the calls a virtual pendant made or received (also after the simulator stopped).

    \b
    Example:
      pendant sim calls pd-0001
      pendant sim calls pd-0001 --json --data-dir ./data
    """
    records = _captured(data_dir, device, "call")
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for line in sim_text.call_lines(records) or [f"{device} made and received no calls"]:
        click.echo(line)


@sim.command("sms")
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@data_dir_option
def sms_command(device: str, as_json: bool, data_dir: Path) -> None:
    """Show the SMS a virtual pendant sent or tried to send (also after the simulator stopped).

    \b
    Example:
      pendant sim sms pd-0001
    """
    records = _captured(data_dir, device, "sms")
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for line in sim_text.sms_lines(records) or [f"{device} sent no SMS"]:
        click.echo(line)


@sim.command("ring")
@click.argument("device")
@click.argument("number")
@data_dir_option
def ring_command(device: str, number: str, data_dir: Path) -> None:
    """Call a virtual pendant: it rings (RING, +CLIP) until the firmware answers or the caller hangs up.

    \b
    Example:
      pendant sim ring pd-0001 +31612345678
    """
    _ask(data_dir, {"op": "ring", "device": device, "number": number})
    click.echo(f"{device}: ringing from {number}")


@sim.command("text")
@click.argument("device")
@click.argument("number")
@click.argument("message")
@data_dir_option
def text_command(device: str, number: str, message: str, data_dir: Path) -> None:
    """Send a virtual pendant an SMS (its modem stores it and says +CMTI).

    \b
    Example:
      pendant sim text pd-0001 +31612345678 "are you safe?"
    """
    answer = _ask(data_dir, {"op": "sms_in", "device": device, "number": number, "text": message})
    click.echo(f"{device}: SMS from {number} stored at index {answer['index']}")


@sim.command("power")
@click.argument("device")
@click.option(
    "--capacity",
    "capacity_mah",
    type=click.FloatRange(min=1),
    default=DEFAULT_CAPACITY_MAH,
    show_default=True,
    help="Battery capacity in mAh.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@data_dir_option
def power_command(device: str, capacity_mah: float, as_json: bool, data_dir: Path) -> None:
    """Project a virtual pendant's battery life from the time its modem and MCU spent in each state
    since the simulator started, with the datasheet currents (hardware/pendant_hardware/power.py).

    \b
    Example:
      pendant sim power pd-0001
      pendant sim power pd-0001 --capacity 1200 --json
    """
    answer = _ask(data_dir, {"op": "power", "device": device, "capacity_mah": capacity_mah})
    answer.pop("ok", None)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for line in sim_text.power_lines(answer):
        click.echo(line)
