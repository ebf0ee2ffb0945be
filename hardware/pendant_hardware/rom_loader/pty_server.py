"""Serves an emulated ESP32 bootloader on a pseudo-terminal: hand `port` (/dev/pts/N) to esptool or
pyserial as if it were the USB serial port of a board held in its bootloader.

    with RomLoaderPty(Path("flash.bin")) as chip:
        subprocess.run(["esptool", "--port", chip.port, "--before", "no-reset", "flash-id"])

A pty has no DTR/RTS lines, so the host cannot reset the chip into the bootloader: use esptool's
`--before no-reset` (the emulated chip is in its bootloader from the start) and `--after no-reset`, or call
`reset()` as pressing RESET with BOOT held would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import termios
import threading
import tty
from dataclasses import dataclass
from pathlib import Path

from pendant_hardware.rom_loader import slip
from pendant_hardware.rom_loader.esp32 import Esp32Registers, mac_for
from pendant_hardware.rom_loader.loader import Esp32Loader, Mode
from pendant_hardware.rom_loader.spi_flash import MB, SpiFlash

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1500000, 2000000)
    if hasattr(termios, f"B{rate}")
}


@dataclass
class LinkStats:
    """Bytes on the wire in each direction (SLIP framing included)."""

    bytes_in: int = 0
    bytes_out: int = 0


class RomLoaderPty:
    """An ESP32 in its serial bootloader on a new pty pair, served by a background thread. The flash is
    kept in `flash_path` (created erased if missing), so it survives the emulator, like a device's."""

    def __init__(self, flash_path: Path, *, flash_size: int = 4 * MB, name: str = "pendant-esp32") -> None:
        self.flash = SpiFlash(flash_path, flash_size)
        self.registers = Esp32Registers(mac=mac_for(name), flash_size=flash_size)
        self.loader = Esp32Loader(self.flash, self.registers, line_baud=self._line_baud)
        self.link = LinkStats()
        self._lock = threading.Lock()  # the loader is touched by the thread and by reset()
        self._master = -1
        self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.port = ""

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> RomLoaderPty:
        """Open the pty pair and start answering; `port` is then the path to give esptool."""
        self._master, self._slave = os.openpty()
        # Raw on both ends: no echo, no CR/LF translation, no signals from 0x03 bytes.
        tty.setraw(self._master)
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="rom-loader-pty", daemon=True)
        self._thread.start()
        log.info("ESP32 ROM loader emulator on %s, flash %s", self.port, self.flash.path)
        return self

    def stop(self) -> None:
        """Stop answering, close the pty and write the flash file."""
        self._stopping = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self.flash.close()

    def __enter__(self) -> RomLoaderPty:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the test bench's hands ----------------------------------------------------------------------

    def reset(self) -> None:
        """Press RESET with BOOT held: the chip is in its ROM loader again at 115200 baud."""
        with self._lock:
            self.loader.reset()

    @property
    def mode(self) -> Mode:
        """ROM loader, flasher stub, or running the application."""
        return self.loader.mode

    def read_flash(self, offset: int, length: int) -> bytes:
        """What the flash holds (for tests; the host reads it with esptool)."""
        with self._lock:
            return self.flash.read(offset, length)

    def _line_baud(self) -> int | None:
        """The baud rate the host set on its end of the pty (termios settings belong to the terminal,
        so our own slave descriptor sees what pyserial set on its)."""
        try:
            speed = termios.tcgetattr(self._slave)[4]
        except (OSError, termios.error):
            return None
        return _SPEEDS.get(speed)

    # -- the thread ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        decoder = slip.Decoder()
        pending = bytearray()
        while not self._stopping:
            writers = [self._master] if pending else []
            try:
                readable, writable, _ = select.select([self._master, self._wake_r], writers, [], 1.0)
            except (OSError, ValueError):
                return
            if self._wake_r in readable:
                return
            if writable and pending:
                pending = self._write_some(pending)
            if self._master in readable:
                try:
                    data = os.read(self._master, _READ_CHUNK)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:  # nobody holds the slave open; keep waiting
                        continue
                    log.warning("rom loader pty: read failed: %s", exc)
                    return
                self.link.bytes_in += len(data)
                with self._lock:
                    for packet in decoder.feed(data):
                        for answer in self.loader.receive(packet):
                            pending += slip.encode(answer)
                if pending:
                    pending = self._write_some(pending)

    def _write_some(self, pending: bytearray) -> bytearray:
        try:
            written = os.write(self._master, pending)
        except BlockingIOError:
            return pending
        except OSError as exc:
            log.warning("rom loader pty: write failed: %s", exc)
            return bytearray()
        self.link.bytes_out += written
        return pending[written:]
