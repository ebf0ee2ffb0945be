"""Reading a pendant's serial console while its firmware runs: the firmware prints one line per event
(`<ticks_ms> <module>: <message>`, docs/architecture.md), which is how the bench sees, over USB, what the
pendant did (`alarm: acked 3-1`)."""

from __future__ import annotations

import contextlib
import threading
import time

import serial

from pendant_tools.errors import NoDeviceError

REPL_BAUD = 115200


class ConsoleReader:
    """Collects the console's lines from a background thread; `wait_for` finds one."""

    def __init__(self, port: str, *, baud: int = REPL_BAUD) -> None:
        self.port = port
        self.baud = baud
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ConsoleReader:
        """Open the port (no reset: DTR and RTS as pyserial leaves them) and start reading."""
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0.2)
        except (serial.SerialException, OSError) as exc:
            raise NoDeviceError(f"cannot open {self.port} to read the pendant's console: {exc}") from None
        self._thread = threading.Thread(target=self._read, name=f"console-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()

    def __enter__(self) -> ConsoleReader:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self) -> None:
        pending = b""
        assert self._serial is not None
        while not self._stop.is_set():
            try:
                chunk = self._serial.read(4096)
            except (serial.SerialException, OSError):
                return  # the port went away (the pendant was unplugged)
            if not chunk:
                continue
            *complete, pending = (pending + chunk).split(b"\n")
            if complete:
                with self._changed:
                    self.lines.extend(raw.decode("utf-8", "replace").rstrip("\r") for raw in complete)
                    self._changed.notify_all()

    def wait_for(self, text: str, *, after: int = 0, timeout: float) -> str | None:
        """The first line containing `text` at index >= `after`, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)


def firmware_crash(lines: list[str]) -> str | None:
    """The error that ended the firmware, if the console shows one: the last line of a traceback
    (`MemoryError: memory allocation failed, ...`), else None."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last):"):
            for line in lines[index + 1 :]:
                if not line.startswith(" ") and ":" in line and not line.startswith("Traceback"):
                    return line.strip()
            return "a traceback without its error line"
    return None
