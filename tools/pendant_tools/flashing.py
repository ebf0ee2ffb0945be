"""Writing MicroPython to a pendant's ESP32 with esptool: connect and detect the chip, start the flasher
stub, raise the baud rate, erase, write (compressed), verify by MD5, reset. The scripting API behind
`pendant flash`:

    from pendant_tools.flashing import FlashOptions, flash_firmware
    from pendant_tools.params import FIRMWARE_IMAGE

    result = flash_firmware("/dev/ttyUSB0", FIRMWARE_IMAGE.convert("ESP32_GENERIC.bin", None, None))

esptool is used through its public API (esptool.cmds); its own console output goes to this module's
logger (visible with `pendant -v`), its progress to the `report` callable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import serial
from esp_pylib.logger import EspLog
from esptool.cmds import (
    attach_flash,
    detect_chip,
    detect_flash_size,
    erase_flash,
    reset_chip,
    run_stub,
    write_flash,
)
from esptool.logger import TemplateLogger
from esptool.logger import log as esptool_log
from esptool.util import FatalError

from pendant_tools.errors import DeviceError, JobFailed, NoDeviceError, ToolError
from pendant_tools.params import FirmwareImage
from pendant_tools.progress import Report, no_progress

log = logging.getLogger(__name__)

ROM_BAUD = 115200  # the ESP32 ROM loader always starts at this rate
PENDANT_CHIP = "ESP32"
MICROPYTHON_ADDRESS = 0x1000  # where the ESP32 MicroPython image (bootloader first) goes
FLASH_SIZES = {f"{n}MB": n * 1024 * 1024 for n in (1, 2, 4, 8, 16, 32, 64, 128)}


@dataclass(frozen=True)
class FlashOptions:
    """How to flash. `reset`: toggle DTR/RTS to enter the bootloader and to restart after (False when the
    board is already in its bootloader, or the port has no such lines, as an emulator's pty)."""

    address: int = MICROPYTHON_ADDRESS
    baud: int = 460800
    erase: bool = True
    stub: bool = True
    reset: bool = True
    connect_attempts: int = 3


@dataclass(frozen=True)
class FlashResult:
    """What was done, for the summary and --json."""

    port: str
    chip: str
    mac: str
    flash_size: int
    crystal_mhz: int
    loader: str  # "stub" or "rom"
    baud: int
    image: str
    image_size: int
    image_sha256: str
    address: int
    erased: bool
    verified_md5: str
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (address in hex, as technicians write it)."""
        data = asdict(self)
        data["address"] = f"{self.address:#x}"
        return data


class _EsptoolOutput(TemplateLogger):
    """esptool's console output into our log, its progress bars into our `report`."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.stage_name = "write"
        self.total = 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        message = " ".join(str(arg) for arg in args).strip()
        if message:
            log.debug("esptool: %s", message)

    def note(self, message: str) -> None:
        log.debug("esptool note: %s", message)

    def warning(self, message: str) -> None:
        log.warning("esptool: %s", message)

    def error(self, message: str) -> None:
        log.error("esptool: %s", message)

    def stage(self, finish: bool = False) -> None:  # type: ignore[override]
        """esptool's collapsible stages mean nothing here."""

    def progress_bar(
        self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "", bar_length: int = 30
    ) -> None:
        if total_iters > 0 and self.total > 0:
            self.report(self.stage_name, min(self.total, cur_iter * self.total // total_iters), self.total)

    def set_verbosity(self, verbosity: str) -> None:
        """Verbosity is ours to choose (logging levels)."""


@contextlib.contextmanager
def _esptool_output(output: _EsptoolOutput) -> Iterator[None]:
    previous = EspLog.instance
    esptool_log.set_logger(output)
    try:
        yield
    finally:
        EspLog.instance = previous


def flash_firmware(
    port: str, image: FirmwareImage, options: FlashOptions | None = None, report: Report = no_progress
) -> FlashResult:
    """Erase the pendant's flash and write `image` at `options.address`, then verify it by MD5.

    Raises NoDeviceError (the port cannot be opened), DeviceError (no ESP32 bootloader answered, or the
    chip is not an ESP32), ToolError (the image does not fit) or JobFailed (the flash does not hold the
    image afterwards)."""
    options = options or FlashOptions()
    seconds: dict[str, float] = {}
    output = _EsptoolOutput(report)
    with _esptool_output(output), _esptool_errors(port):
        started = time.monotonic()
        report("connect", 0, 0)
        esp = _connect(port, options)
        try:
            chip = esp.get_chip_description()
            mac = ":".join(f"{byte:02x}" for byte in esp.read_mac())
            crystal = esp.get_crystal_freq()
            if options.stub:
                esp = run_stub(esp)
            if options.baud != ROM_BAUD:
                esp.change_baud(options.baud)
            attach_flash(esp)
            flash_size = _flash_size(esp)
            end = options.address + image.size
            if end > flash_size:
                raise ToolError(
                    f"the image ({image.size} bytes at {options.address:#x}) does not fit the "
                    f"{flash_size // (1024 * 1024)} MB flash of this board"
                )
            esp.flash_set_parameters(flash_size)
            seconds["connect"] = round(time.monotonic() - started, 3)

            if options.erase:
                started = time.monotonic()
                report("erase", 0, 0)
                _erase_everything(esp, flash_size)
                seconds["erase"] = round(time.monotonic() - started, 3)

            started = time.monotonic()
            output.stage_name, output.total = "write", image.size
            report("write", 0, image.size)
            write_flash(esp, [(options.address, image.data)], flash_size="keep", compress=True)
            report("write", image.size, image.size)
            seconds["write"] = round(time.monotonic() - started, 3)

            started = time.monotonic()
            report("verify", 0, 0)
            expected = hashlib.md5(image.data).hexdigest()
            actual = esp.flash_md5sum(options.address, image.size)
            if actual != expected:
                raise JobFailed(
                    f"verification failed: the flash at {options.address:#x} does not hold the image "
                    f"(MD5 {actual}, expected {expected}); flash again, and if it fails twice the board's "
                    "flash may be faulty"
                )
            seconds["verify"] = round(time.monotonic() - started, 3)
            loader = "stub" if esp.IS_STUB else "rom"
            reset_chip(esp, "hard-reset" if options.reset else "no-reset")
        finally:
            with contextlib.suppress(Exception):
                esp._port.close()  # esptool's own context manager does just this
    return FlashResult(
        port=port,
        chip=chip,
        mac=mac,
        flash_size=flash_size,
        crystal_mhz=crystal,
        loader=loader,
        baud=options.baud,
        image=str(image.path),
        image_size=image.size,
        image_sha256=image.sha256,
        address=options.address,
        erased=options.erase,
        verified_md5=actual,
        seconds=seconds,
    )


def _connect(port: str, options: FlashOptions) -> Any:
    mode = "default-reset" if options.reset else "no-reset"
    esp = detect_chip(port, ROM_BAUD, mode, connect_attempts=options.connect_attempts)
    if esp.CHIP_NAME != PENDANT_CHIP:
        with contextlib.suppress(Exception):
            esp._port.close()
        raise DeviceError(
            f"the chip on {port} is an {esp.CHIP_NAME}, not the pendant's {PENDANT_CHIP}: "
            "is this the right board?"
        )
    return esp


def _flash_size(esp: Any) -> int:
    detected = detect_flash_size(esp)
    if detected not in FLASH_SIZES:
        raise DeviceError(
            f"the board's flash chip did not say its size (JEDEC id {esp.flash_id():#08x}): "
            "check the board, it may be damaged"
        )
    return FLASH_SIZES[detected]


def _erase_everything(esp: Any, flash_size: int) -> None:
    """Chip erase: nothing of the previous holder's files (config.json with its credentials) survives.
    The stub has a chip-erase command; the ROM loader erases the region a FLASH_BEGIN announces, so a
    FLASH_BEGIN over the whole flash, with no data after it, erases it all."""
    if esp.IS_STUB:
        erase_flash(esp)
    else:
        esp.flash_begin(flash_size, 0, logging=False)


@contextlib.contextmanager
def _esptool_errors(port: str) -> Iterator[None]:
    """esptool's and pyserial's errors as one sentence with advice for the technician."""
    try:
        yield
    except ToolError:
        raise
    except serial.SerialException as exc:
        if "Inappropriate ioctl" in str(exc) or getattr(exc, "errno", None) == errno.ENOTTY:
            raise DeviceError(_NO_RESET_LINES.format(port=port)) from None
        raise NoDeviceError(
            f"cannot open {port}: {_reason(exc)} (is a serial monitor or mpremote using it?)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOTTY:
            raise DeviceError(_NO_RESET_LINES.format(port=port)) from None
        raise NoDeviceError(f"{port} failed: {exc.strerror or exc}") from None
    except FatalError as exc:
        text = str(exc)
        if "Failed to connect" in text or "No serial data received" in text:
            raise DeviceError(
                f"no ESP32 bootloader answered on {port}: hold the pendant's BOOT button while pressing "
                "RESET and try again, or check the USB cable"
            ) from None
        raise DeviceError(f"esptool failed on {port}: {_reason(exc)}") from None


_NO_RESET_LINES = (
    "{port} cannot reset the board into its bootloader (the port has no DTR/RTS lines): hold BOOT, press "
    "RESET, and run again with --no-reset"
)


def _reason(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
