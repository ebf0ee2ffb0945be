"""Reusable click parameter types and options of the technician commands: they validate before any work
starts, so a mistake is one clear line (click's usage error, exit code 2) and not a half-done job."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

ESP_IMAGE_MAGIC = 0xE9
ESP32_CHIP_ID = 0
# Chip ids in the image header (esptool's IMAGE_CHIP_ID of each target), to name a wrong image.
_IMAGE_CHIPS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3"}
MAX_IMAGE_BYTES = 4 * 1024 * 1024  # the T-A7670E's ESP32 has 4 MB of flash
BAUD_RATES = (115200, 230400, 460800, 921600, 1500000, 2000000)
DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,31}")


@dataclass(frozen=True)
class FirmwareImage:
    """A MicroPython firmware image for the ESP32, read and checked."""

    path: Path
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the image, for the report."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        """Bytes in the image."""
        return len(self.data)


def check_firmware_image(path: Path, data: bytes) -> str | None:
    """Why `data` is not an ESP32 firmware image, or None if it is one."""
    if not data:
        return f"{path} is empty"
    if len(data) > MAX_IMAGE_BYTES:
        return f"{path} has {len(data)} bytes, more than the pendant's 4 MB flash"
    if data[0] != ESP_IMAGE_MAGIC:
        return (
            f"{path} is not an ESP32 firmware image (it does not start with 0xE9): use the ESP32_GENERIC "
            ".bin from micropython.org, not a .hex, .uf2 or .zip"
        )
    if len(data) >= 14:
        chip_id = int.from_bytes(data[12:14], "little")
        if chip_id != ESP32_CHIP_ID:
            chip = _IMAGE_CHIPS.get(chip_id, f"chip id {chip_id}")
            return f"{path} is an image for the {chip}, not for the pendant's ESP32"
    return None


class FirmwareImageType(click.ParamType):
    """A path to an ESP32 MicroPython image (.bin), converted to a FirmwareImage after checking it."""

    name = "image"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> FirmwareImage:
        if isinstance(value, FirmwareImage):
            return value
        path = Path(value)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.fail(f"{path} does not exist", param, ctx)
        except IsADirectoryError:
            self.fail(f"{path} is a folder, not a firmware image", param, ctx)
        except OSError as exc:
            self.fail(f"cannot read {path}: {exc.strerror}", param, ctx)
        problem = check_firmware_image(path, data)
        if problem:
            self.fail(problem, param, ctx)
        return FirmwareImage(path, data)


class FlashAddressType(click.ParamType):
    """A flash offset, in hex (0x1000) or decimal, on a 4 KB sector boundary."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value), 0)
            except ValueError:
                self.fail(f"{value!r} is not an address: write it like 0x1000", param, ctx)
        if number < 0 or number % 0x1000:
            self.fail(f"{value} is not on a 4 KB sector boundary (0x0, 0x1000, 0x2000, ...)", param, ctx)
        return number


class BaudRateType(click.ParamType):
    """One of the baud rates the board's USB-serial adapter and esptool handle reliably."""

    name = "baud"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number not in BAUD_RATES:
            rates = ", ".join(str(rate) for rate in BAUD_RATES)
            self.fail(f"{value} is not a baud rate to use: choose one of {rates}", param, ctx)
        return number


class DeviceIdType(click.ParamType):
    """A device id as the protocol defines it (pd-0001)."""

    name = "device_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not DEVICE_ID.fullmatch(text):
            self.fail(
                f"{text!r} is not a device id: 3 to 32 lower-case letters, digits and '-' (e.g. pd-0001)",
                param,
                ctx,
            )
        return text


FIRMWARE_IMAGE = FirmwareImageType()
FLASH_ADDRESS = FlashAddressType()
BAUD_RATE = BaudRateType()
DEVICE_ID_TYPE = DeviceIdType()

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def port_option(**overrides: Any) -> Any:
    """--port/-p: the pendant's serial port; found with list_ports when left out."""
    options: dict[str, Any] = {
        "default": None,
        "envvar": "PENDANT_PORT",
        "metavar": "PORT",
        "help": "Serial port of the pendant (e.g. /dev/ttyUSB0). Default: $PENDANT_PORT, else the only USB "
        "serial port connected.",
    }
    options.update(overrides)
    return click.option("--port", "-p", **options)


def json_option() -> Any:
    """--json: the result as one JSON document on stdout (progress goes to stderr)."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


class SupervisionType(click.ParamType):
    """A supervision profile: SP3, SP4 or custom, in any case (pendant_backend.supervision)."""

    name = "SP3|SP4|custom"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from pendant_backend.supervision import CUSTOM, PROFILES

        text = str(value).strip()
        named = CUSTOM if text.lower() == CUSTOM else text.upper()
        if named not in PROFILES:
            self.fail(
                f"{value!r} is not a supervision profile: SP4 (a heartbeat every 3 min), SP3 (every "
                "30 min) or custom with --heartbeat-s N",
                param,
                ctx,
            )
        return named


SUPERVISION = SupervisionType()
HEARTBEAT_S = click.IntRange(60, 86400)


def supervision_options(command: Any) -> Any:
    """--supervision and --heartbeat-s: the profile a pendant starts with (`supervision_interval`
    checks the pair)."""
    command = click.option(
        "--heartbeat-s",
        type=HEARTBEAT_S,
        metavar="N",
        help="The heartbeat interval of --supervision custom, 60 to 86400 seconds.",
    )(command)
    return click.option(
        "--supervision",
        type=SUPERVISION,
        help="Supervision profile (EN 50136-1 reporting time): SP4 a heartbeat every 3 min (late after 4 "
        "min, offline after 10), SP3 every 30 min (late after 31, offline after 91), custom with "
        "--heartbeat-s. Default: the fleet's config.",
    )(command)


def supervision_interval(profile: str | None, heartbeat_s: int | None) -> int | None:
    """The `heartbeat_s` a profile and --heartbeat-s give (None: no profile asked for); a usage error
    (exit code 2) for a pair that does not fit, before any work starts."""
    from pendant_backend.supervision import SupervisionError, heartbeat_for

    if profile is None:
        if heartbeat_s is not None:
            raise click.UsageError("--heartbeat-s goes with --supervision custom")
        return None
    try:
        return heartbeat_for(profile, heartbeat_s)
    except SupervisionError as exc:
        raise click.UsageError(str(exc)) from None
