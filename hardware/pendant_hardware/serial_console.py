"""A virtual pendant's USB serial port: two pseudo-terminals and the relay between them.

The interpreter gets the "chip side" pty as stdin, stdout and stderr; the host (pyserial, mpremote, a
terminal) opens the "USB side" pty (`path`, a /dev/pts/N) as it would open /dev/ttyUSB0. The relay copies
bytes both ways, hands everything the interpreter prints to `on_output` (the console log), and asks
`on_interrupt` what to do with each Ctrl-C from the host: both ptys are raw, so the kernel never turns
0x03 into SIGINT; on a board the UART driver does that while code runs, and here the bench does it.

Nobody listening on the USB side costs nothing: output that the pty cannot take is dropped, as bytes
on a UART wire with no listener are lost. Input for the interpreter is queued (the pty passes it on as
the interpreter reads), so what a host types between two boots reaches the next one, as a board's USB
buffer would hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable

CTRL_C = 0x03
READ_SIZE = 4096
MAX_QUEUED = 1 << 20  # typed bytes no interpreter has read yet; beyond this the oldest are dropped


class SerialConsole:
    """The two ptys and the relay: `open()` on the loop that runs the relay, `close()` at the end."""

    def __init__(
        self,
        on_output: Callable[[bytes], bytes],
        on_interrupt: Callable[[], bool],
    ) -> None:
        """`on_output(data)` sees every byte the interpreter prints and returns what the host gets (the
        bench may hold some back while it restarts the interpreter). `on_interrupt()` is called for each
        Ctrl-C from the host: True when the bench turned it into an interrupt (the byte is dropped), False
        to pass the byte on (the REPL's line editor reads it)."""
        self._on_output = on_output
        self._on_interrupt = on_interrupt
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chip_master = self._chip_slave = self._usb_master = self._usb_slave = -1
        self._to_interpreter = bytearray()
        self.path = ""
        self.bytes_from_host = 0
        self.bytes_to_host = 0
        self.bytes_dropped = 0  # output nobody on the USB side took

    @property
    def interpreter_fd(self) -> int:
        """The chip-side pty the interpreter gets as stdin, stdout and stderr."""
        return self._chip_slave

    def open(self) -> None:
        """Create both ptys (raw, no echo, no newline translation) and start relaying."""
        self._loop = asyncio.get_running_loop()
        self._chip_master, self._chip_slave = os.openpty()
        self._usb_master, self._usb_slave = os.openpty()
        for fd in (self._chip_slave, self._usb_slave):
            tty.setraw(fd)
        for fd in (self._chip_master, self._usb_master):
            os.set_blocking(fd, False)
        # The relay keeps both slaves open: a master whose slave nobody holds reads EIO (between two
        # interpreters, and while no host has the port open).
        self.path = os.ttyname(self._usb_slave)
        self._loop.add_reader(self._chip_master, self._from_interpreter)
        self._loop.add_reader(self._usb_master, self._from_host)

    def close(self) -> None:
        """Stop relaying and close every descriptor (the host's open port then sees a hang-up)."""
        if self._loop is not None:
            for fd in (self._chip_master, self._usb_master):
                if fd >= 0:
                    self._loop.remove_reader(fd)
                    self._loop.remove_writer(fd)
        for fd in (self._chip_master, self._chip_slave, self._usb_master, self._usb_slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._chip_master = self._chip_slave = self._usb_master = self._usb_slave = -1
        self._loop = None

    # -- what the bench itself says and types ---------------------------------------------------------

    def to_host(self, data: bytes) -> None:
        """Bytes for the host as if the board printed them (`MPY: soft reboot`)."""
        self._write_host(data)

    def to_interpreter(self, data: bytes) -> None:
        """Bytes for the interpreter as if the host typed them."""
        self._to_interpreter += data
        self._flush_interpreter()

    def drain(self) -> None:
        """Relay whatever the interpreter printed and the relay has not read yet (before the bench notes
        that it exited, so its last words come first)."""
        while self._chip_master >= 0 and self._from_interpreter():
            pass

    def discard_input(self) -> None:
        """Forget what the host typed that no interpreter has read (a power cut empties the USB chip)."""
        self._to_interpreter.clear()
        if self._chip_master >= 0 and self._loop is not None:
            self._loop.remove_writer(self._chip_master)
        if self._chip_slave >= 0:
            with contextlib.suppress(OSError):
                termios.tcflush(self._chip_slave, termios.TCIFLUSH)

    # -- the relay -----------------------------------------------------------------------------------

    def _from_interpreter(self) -> bool:
        try:
            data = os.read(self._chip_master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False  # EIO: no slave open (cannot happen while the relay holds one)
        if not data:
            return False
        forward = self._on_output(data)
        if forward:
            self._write_host(forward)
        return True

    def _from_host(self) -> None:
        try:
            data = os.read(self._usb_master, READ_SIZE)
        except (BlockingIOError, InterruptedError, OSError):
            return
        self.bytes_from_host += len(data)
        if CTRL_C in data:
            kept = bytearray()
            for byte in data:
                if byte == CTRL_C and self._on_interrupt():
                    continue
                kept.append(byte)
            data = bytes(kept)
        if data:
            self.to_interpreter(data)

    def _write_host(self, data: bytes) -> None:
        if self._usb_master < 0:
            return
        try:
            written = os.write(self._usb_master, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            written = 0
        self.bytes_to_host += written
        self.bytes_dropped += len(data) - written

    def _flush_interpreter(self) -> None:
        if self._chip_master < 0 or self._loop is None:
            return
        while self._to_interpreter:
            try:
                written = os.write(self._chip_master, self._to_interpreter[:READ_SIZE])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._to_interpreter.clear()
                break
            del self._to_interpreter[:written]
        if self._to_interpreter:
            if len(self._to_interpreter) > MAX_QUEUED:
                del self._to_interpreter[: len(self._to_interpreter) - MAX_QUEUED]
            self._loop.add_writer(self._chip_master, self._flush_interpreter)
        else:
            self._loop.remove_writer(self._chip_master)
