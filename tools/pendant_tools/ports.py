"""Which serial port the pendant is on: the one given, or the only USB serial port pyserial's `list_ports`
finds. Zero or several without --port is an error that lists what was found."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from serial.tools import list_ports

from pendant_tools.errors import NoDeviceError


@dataclass(frozen=True)
class PortInfo:
    """A serial port as the technician would recognise it."""

    device: str
    description: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None

    def label(self) -> str:
        """`/dev/ttyUSB0 (CP2104 USB to UART, 10c4:ea60)`."""
        ids = f", {self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""
        return f"{self.device} ({self.description}{ids})" if self.description else self.device


def usb_serial_ports(comports: Callable[[], Iterable[object]] = list_ports.comports) -> list[PortInfo]:
    """The serial ports behind a USB adapter (the pendant's board has one); built-in UARTs are left out,
    they are never a pendant."""
    found = []
    for port in comports():
        vid = getattr(port, "vid", None)
        if vid is None:
            continue
        description = getattr(port, "description", "") or ""
        found.append(
            PortInfo(
                device=str(port.device),  # type: ignore[attr-defined]
                description="" if description == "n/a" else description,
                vid=vid,
                pid=getattr(port, "pid", None),
                serial_number=getattr(port, "serial_number", None),
            )
        )
    return sorted(found, key=lambda info: info.device)


def choose_port(port: str | None, comports: Callable[[], Iterable[object]] = list_ports.comports) -> str:
    """`port` if given (it must exist), else the only USB serial port; NoDeviceError otherwise."""
    if port:
        check_port_exists(port)
        return port
    ports = usb_serial_ports(comports)
    if not ports:
        raise NoDeviceError(
            "no USB serial port found: connect the pendant with a data USB cable (some cables only charge), "
            "or name the port with --port"
        )
    if len(ports) > 1:
        listed = ", ".join(info.label() for info in ports)
        raise NoDeviceError(f"{len(ports)} serial ports found ({listed}): choose one with --port")
    return ports[0].device


def check_port_exists(port: str) -> None:
    """NoDeviceError if `port` is not a character device (a typo, or the pendant was unplugged)."""
    if "://" in port:
        return  # a pyserial URL (rfc2217://, socket://): nothing to stat
    try:
        mode = os.stat(port).st_mode
    except FileNotFoundError:
        raise NoDeviceError(f"{port} does not exist: is the pendant plugged in?") from None
    except OSError as exc:
        raise NoDeviceError(f"cannot use {port}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise NoDeviceError(f"{port} is not a serial port")
