"""`pendant deploy`: compile the firmware and copy what changed to a pendant (thin over deploying)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from pendant_tools import deploying
from pendant_tools.deploying import DeployResult
from pendant_tools.errors import command_errors
from pendant_tools.params import CONTEXT, json_option, port_option
from pendant_tools.ports import choose_port
from pendant_tools.progress import ProgressBars


@click.command("deploy", context_settings=CONTEXT)
@port_option()
@click.option(
    "--firmware",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Firmware folder to deploy (main.py and pendant/). Default: firmware/ of this repository.",
)
@click.option(
    "--mpy-cross",
    "mpy_cross",
    metavar="COMMAND",
    default=None,
    help="The mpy-cross to compile with, for a pendant on an older MicroPython (default: the installed one).",
)
@click.option(
    "--no-reboot", is_flag=True, help="Leave the pendant in its REPL afterwards (the firmware stays stopped)."
)
@json_option()
@command_errors
def deploy(
    port: str | None, firmware: Path | None, mpy_cross: str | None, no_reboot: bool, as_json: bool
) -> None:
    """Install the pendant firmware on a pendant that runs MicroPython.

    Stops the firmware (through the REPL), compiles firmware/ to .mpy for the MicroPython version the
    pendant reports, copies only the files whose SHA-256 differs from what the pendant holds, removes
    stale ones, checks every file's hash on the pendant again, and reboots it. config.json (its
    credentials), state.json and the outbox are never touched.

    \b
    Examples:
      pendant deploy                          # the only pendant plugged in
      pendant deploy -p /dev/ttyUSB1 --json
      pendant deploy -p /dev/pts/4            # a virtual pendant (`pendant sim list` shows its port)

    \b
    Exit codes: 0 done, 1 files differ after copying or the firmware does not compile for this
    pendant, 3 no or several serial ports, 4 no MicroPython REPL answered.
    """
    chosen = choose_port(port)
    command = shlex.split(mpy_cross) if mpy_cross else None
    with ProgressBars() as bars:
        result = deploying.deploy(
            chosen, firmware_dir=firmware, mpy_cross=command, reboot=not no_reboot, report=bars
        )
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        click.echo(_summary(result))


def _summary(result: DeployResult) -> str:
    copied = (
        f"copied {len(result.copied)} file(s), {result.bytes_copied} bytes"
        if result.copied
        else "nothing to copy"
    )
    removed = f", removed {len(result.removed)} stale" if result.removed else ""
    after = "rebooted into the firmware" if result.rebooted else "left in the REPL (--no-reboot)"
    return (
        f"{result.port}: MicroPython {result.micropython} (.mpy {result.mpy_abi})\n"
        f"firmware {result.firmware_version}: {copied}, {result.unchanged} unchanged{removed}; "
        f"all {result.files} files verified by SHA-256; {after}"
    )
