"""`pendant flash`: write a MicroPython image to a pendant's ESP32 (thin over pendant_tools.flashing)."""

from __future__ import annotations

import json

import click

from pendant_tools.errors import command_errors
from pendant_tools.flashing import MICROPYTHON_ADDRESS, FlashOptions, FlashResult, flash_firmware
from pendant_tools.params import (
    BAUD_RATE,
    CONTEXT,
    FIRMWARE_IMAGE,
    FLASH_ADDRESS,
    FirmwareImage,
    json_option,
    port_option,
)
from pendant_tools.ports import choose_port
from pendant_tools.progress import ProgressBars


@click.command("flash", context_settings=CONTEXT)
@click.argument("image", type=FIRMWARE_IMAGE)
@port_option()
@click.option(
    "--baud",
    "-b",
    type=BAUD_RATE,
    default=460800,
    show_default=True,
    help="Baud rate for the transfer (the connection starts at 115200; lower it if flashing fails).",
)
@click.option(
    "--address",
    type=FLASH_ADDRESS,
    default=MICROPYTHON_ADDRESS,
    show_default="0x1000, where the ESP32 MicroPython image goes",
    help="Flash offset to write the image at.",
)
@click.option(
    "--no-erase",
    is_flag=True,
    help="Do not erase the whole flash first: the old filesystem (with the previous config.json and its "
    "credentials) survives. Only for re-flashing the same pendant.",
)
@click.option(
    "--no-stub", is_flag=True, help="Talk to the ROM loader only (slower; for boards where the stub fails)."
)
@click.option(
    "--no-reset",
    is_flag=True,
    help="Do not toggle DTR/RTS: the board is already in its bootloader (BOOT held at RESET), or the port "
    "has no such lines (an emulator).",
)
@json_option()
@command_errors
def flash(
    image: FirmwareImage,
    port: str | None,
    baud: int,
    address: int,
    no_erase: bool,
    no_stub: bool,
    no_reset: bool,
    as_json: bool,
) -> None:
    """Write the MicroPython IMAGE to the pendant's ESP32: detect the chip, erase the whole flash, write,
    verify by MD5, reset.

    IMAGE is the ESP32_GENERIC firmware .bin from micropython.org. After flashing, install the pendant
    firmware with `pendant deploy`.

    \b
    Examples:
      pendant flash ESP32_GENERIC-v1.29.0.bin                     # the only pendant plugged in
      pendant flash ESP32_GENERIC-v1.29.0.bin -p /dev/ttyUSB1 -b 921600
      pendant flash fw.bin --port /dev/pts/5 --no-reset --json    # the bench's emulated ESP32

    \b
    Exit codes: 0 done, 1 verification failed, 2 bad usage, 3 no or several serial ports,
    4 no ESP32 bootloader answered or wrong chip.
    """
    chosen = choose_port(port)
    options = FlashOptions(
        address=address, baud=baud, erase=not no_erase, stub=not no_stub, reset=not no_reset
    )
    if not as_json:
        click.echo(f"flashing {image.path} ({image.size} bytes) to {chosen}", err=True)
    with ProgressBars() as bars:
        result = flash_firmware(chosen, image, options, report=bars)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        click.echo(_summary(result))


def _summary(result: FlashResult) -> str:
    total = sum(result.seconds.values())
    erased = "whole flash erased, " if result.erased else ""
    return (
        f"{result.port}: {result.chip}, MAC {result.mac}, {result.flash_size // (1024 * 1024)} MB flash\n"
        f"wrote {result.image_size} bytes at {result.address:#x} ({erased}verified by MD5) in {total:.1f} s\n"
        "next: pendant deploy"
    )
