"""A pendant's MicroPython REPL over its serial port, for the technician commands: the one module that
touches mpremote (its SerialTransport). Entering the raw REPL interrupts the firmware (Ctrl-C), as
`mpremote` does; `reset()` restarts the board, which runs the firmware again.

    with PendantRepl("/dev/ttyUSB0") as repl:
        info = repl.info()
        repl.write_file("config.json", data)
        repl.reset()
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from pendant_tools.errors import DeviceError, NoDeviceError

log = logging.getLogger(__name__)

REPL_BAUD = 115200
CHUNK = 512  # bytes of a file per exec while copying
ARCHS = {
    0: None,
    1: "x86",
    2: "x64",
    3: "armv6",
    4: "armv6m",
    5: "armv7m",
    6: "armv7em",
    7: "armv7emsp",
    8: "armv7emdp",
    9: "xtensa",
    10: "xtensawin",
    11: "rv32imc",
}


@dataclass(frozen=True)
class DeviceInfo:
    """What the pendant's MicroPython says about itself."""

    micropython: str  # "1.29.0"
    mpy_version: int  # the .mpy format it loads (6 for MicroPython 1.19 and later)
    mpy_sub_version: int
    arch: str | None  # native code architecture ("xtensawin" on the ESP32), None if it has none
    platform: str  # sys.platform: "esp32" on the pendant, "linux" on the bench
    machine: str

    @property
    def mpy_abi(self) -> str:
        """`v6.3`, as mpy-cross names it."""
        return f"v{self.mpy_version}.{self.mpy_sub_version}"

    @classmethod
    def from_device(cls, data: dict[str, Any]) -> DeviceInfo:
        """From the JSON that INFO_CODE prints."""
        mpy = int(data.get("mpy") or 0)
        version = data.get("version") or []
        return cls(
            micropython=".".join(str(part) for part in version[:3]),
            mpy_version=mpy & 0xFF,
            mpy_sub_version=(mpy >> 8) & 3,
            arch=ARCHS.get(mpy >> 10, f"arch {mpy >> 10}"),
            platform=str(data.get("platform", "")),
            machine=str(data.get("machine", "")),
        )


INFO_CODE = """\
import sys, json
print(json.dumps({'version': list(sys.implementation.version), 'mpy': getattr(sys.implementation, '_mpy', 0),
 'platform': sys.platform, 'machine': getattr(sys.implementation, '_machine', '')}))
"""

# Hashes of the files under the given roots (a folder is walked, a missing path is left out).
HASHES_CODE = """\
import os, hashlib, binascii, json
def _walk(p, out):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for e in os.ilistdir(p):
            _walk(p + '/' + e[0], out)
        return
    h = hashlib.sha256()
    b = bytearray(512)
    v = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(v[:n])
    out[p] = binascii.hexlify(h.digest()).decode()
_out = {}
for _p in %r:
    _walk(_p, _out)
print(json.dumps(_out))
del _walk, _out
"""


class PendantRepl:
    """The raw REPL of the MicroPython on `port`. Use as a context manager (or call `open`/`close`)."""

    def __init__(
        self, port: str, *, baud: int = REPL_BAUD, timeout: float = 10.0, connect_timeout: float = 10.0
    ) -> None:
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._transport: SerialTransport | None = None

    # -- connection ----------------------------------------------------------------------------------

    def open(self) -> PendantRepl:
        """Open the port and enter the raw REPL (interrupting the firmware); DeviceError if none answers."""
        try:
            transport = SerialTransport(self.port, baudrate=self.baud, timeout=1)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise NoDeviceError(
                f"cannot open {self.port}: {_reason(exc)} (is another program using it?)"
            ) from None
        try:
            _enter_raw_repl(transport.serial, self.connect_timeout)
            transport.in_raw_repl = True
        except RawReplTimeout as exc:
            transport.close()
            raise DeviceError(exc.explain(self.port)) from None
        except (TransportError, serial.SerialException, OSError) as exc:
            transport.close()
            raise DeviceError(
                f"no MicroPython REPL answered on {self.port} ({_reason(exc)}): is MicroPython flashed "
                "(pendant flash) and is this the pendant's port?"
            ) from None
        self._transport = transport
        return self

    def close(self) -> None:
        """Leave the raw REPL and close the port (the firmware stays stopped until a reset)."""
        transport, self._transport = self._transport, None
        if transport is None:
            return
        with contextlib.suppress(TransportError, serial.SerialException, OSError):
            transport.exit_raw_repl()
        with contextlib.suppress(serial.SerialException, OSError):
            transport.close()

    def __enter__(self) -> PendantRepl:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def transport(self) -> SerialTransport:
        """mpremote's transport (open)."""
        if self._transport is None:
            raise DeviceError(f"the REPL on {self.port} is not open")
        return self._transport

    # -- running code --------------------------------------------------------------------------------

    def run(
        self, code: str, *, timeout: float | None = None, on_output: Callable[[bytes], None] | None = None
    ) -> str:
        """Run `code` on the pendant; return what it printed. `timeout` is the longest silence allowed.
        DeviceError with the last line of the pendant's traceback if the code raised."""
        try:
            out, err = self.transport.exec_raw(code, timeout=timeout or self.timeout, data_consumer=on_output)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise DeviceError(f"the pendant on {self.port} stopped answering: {_reason(exc)}") from None
        if err:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["error"]
            raise DeviceError(f"the pendant on {self.port} reported: {last[0]}")
        return out.decode("utf-8", "replace")

    def run_json(self, code: str, *, timeout: float | None = None) -> Any:
        """Run `code`, which prints one JSON document as its last line; return it parsed."""
        output = self.run(code, timeout=timeout).strip().splitlines()
        try:
            return json.loads(output[-1])
        except (IndexError, ValueError):
            raise DeviceError(
                f"the pendant on {self.port} answered something unexpected: {output[-1:]}"
            ) from None

    def info(self) -> DeviceInfo:
        """MicroPython version, .mpy format and platform."""
        return DeviceInfo.from_device(self.run_json(INFO_CODE))

    # -- files ---------------------------------------------------------------------------------------

    def hashes(self, roots: list[str]) -> dict[str, str]:
        """SHA-256 (hex) of every file under `roots` on the pendant's flash, by path."""
        return dict(self.run_json(HASHES_CODE % (roots,), timeout=60))

    def write_file(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        """Write `data` to `path` atomically: to `path.tmp`, then renamed over `path` (a power cut leaves
        the old file or the new one, never half of one). Folders are created as needed."""
        folder = path.rpartition("/")[0]
        if folder:
            self.run(_MAKEDIRS % (folder,))
        temporary = path + ".tmp"
        self.run(f"f=open({temporary!r},'wb')\nw=f.write")
        for start in range(0, len(data), CHUNK):
            self.run(f"w({bytes(data[start : start + CHUNK])!r})")
            if progress is not None:
                progress(min(len(data), start + CHUNK))
        self.run("f.close()\ndel f,w\n" + _replace_code(temporary, path))

    def remove(self, path: str) -> None:
        """Delete a file on the pendant (no error if it is not there)."""
        self.run(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass")

    def reset(self) -> None:
        """Hard-reset the pendant (machine.reset()); it boots into the firmware. Closes the connection."""
        transport = self.transport
        try:
            transport.exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, serial.SerialException, OSError) as exc:
            log.debug("reset: %s", exc)
        self._transport = None
        with contextlib.suppress(serial.SerialException, OSError):
            transport.close()


_MAKEDIRS = """\
import os
_p = ''
for _d in %r.split('/'):
    _p = _p + '/' + _d if _p else _d
    try:
        os.mkdir(_p)
    except OSError:
        pass
del _p
"""


def _replace_code(source: str, target: str) -> str:
    # rename() replaces the target on littlefs and the unix port; where it cannot, remove it first.
    return (
        f"import os\ntry:\n os.rename({source!r},{target!r})\nexcept OSError:\n"
        f" os.remove({target!r})\n os.rename({source!r},{target!r})\n"
    )


RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"soft reboot"
ASK_EVERY_S = 0.25  # a firmware that reboots in a loop is only interruptible while it runs
QUIET_S = 0.2  # once in, the answers to the repeated asks have stopped after this much silence
READ_SLICE_S = 0.05  # how long one read waits, so that the asks keep their pace on a silent line


class RawReplTimeout(TransportError):
    """No raw REPL within the time given; what was seen meanwhile says why."""

    def __init__(self, *, asks: int, seconds: float, received: int, last_line: str, reboots: int) -> None:
        super().__init__("could not enter raw repl")
        self.asks = asks
        self.seconds = seconds
        self.received = received
        self.last_line = last_line
        self.reboots = reboots

    def explain(self, port: str) -> str:
        """One sentence for the technician: what was seen on the port, and what to do."""
        tried = f"interrupted {self.asks} times in {self.seconds:.0f} s"
        if self.received == 0:
            return (
                f"no MicroPython REPL answered on {port} (nothing came back; {tried}): is MicroPython "
                "flashed (pendant flash), is this the pendant's port, and is the cable a data cable?"
            )
        if self.reboots > 1:
            return (
                f"the pendant on {port} reboots in a loop ({self.reboots} soft reboots seen, {tried}) and "
                "never stopped at its REPL: press its RESET button and run again; if it keeps rebooting, "
                "flash MicroPython again (pendant flash)"
            )
        seen = f"; last line: {self.last_line!r}" if self.last_line else ""
        return (
            f"the pendant on {port} prints but its MicroPython REPL does not answer ({tried}{seen}): "
            "is MicroPython flashed (pendant flash), and is the baud rate 115200?"
        )


class _Seen:
    """What came from the port while asking: a tail to find the banner in, and facts for the error."""

    def __init__(self) -> None:
        self.tail = b""
        self.received = 0
        self.reboots = 0
        self.line = b""
        self.last_line = b""

    def add(self, data: bytes) -> bool:
        """Take `data`; True once the raw REPL's banner has arrived."""
        self.received += len(data)
        *complete, self.line = (self.line + data).split(b"\n")
        for line in complete:
            if line.strip():
                self.last_line = line.strip()[-120:]
        self.line = self.line[-240:]  # a firmware that prints without newlines
        window = self.tail + data
        self.reboots += window.count(SOFT_REBOOT) - self.tail.count(SOFT_REBOOT)
        found = RAW_BANNER in window
        self.tail = window[-(len(RAW_BANNER) + len(SOFT_REBOOT)) :]
        return found

    def timeout(self, asks: int, seconds: float) -> RawReplTimeout:
        last = (self.last_line or self.line.strip()).decode("utf-8", "replace")
        last = "".join(char for char in last if char >= " ")
        return RawReplTimeout(
            asks=asks, seconds=seconds, received=self.received, last_line=last, reboots=self.reboots
        )


def _enter_raw_repl(port: serial.Serial, timeout: float) -> None:
    """Interrupt what runs (Ctrl-C) and enter the raw REPL (Ctrl-A), as MicroPython's REPL protocol
    says, asking again every ASK_EVERY_S until the raw REPL's banner comes or `timeout` seconds pass
    (RawReplTimeout, with what was seen). A single ask is not enough: a firmware that is still starting,
    or that reboots in a loop, takes a Ctrl-C only while it runs, and one that prints without pause
    never lets a wait for quiet end. Once in, it lets the line go quiet (the answers to the repeated
    asks) and asks the raw REPL once more (Ctrl-A there prints the banner and `>` again), reading up to
    the banner only: the `>` is mpremote's to read."""
    started = time.monotonic()
    deadline = started + timeout
    previous_timeout = port.timeout
    port.timeout = READ_SLICE_S
    seen = _Seen()
    asks = 0
    asked_at = -ASK_EVERY_S
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                raise seen.timeout(asks, now - started)
            if now - asked_at >= ASK_EVERY_S:
                asked_at, asks = now, asks + 1
                port.write(b"\r\x03\x03")
                time.sleep(0.05)
                port.write(b"\r\x01")
            if seen.add(port.read(max(1, port.in_waiting))):
                break
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S:
            if time.monotonic() > deadline:
                raise seen.timeout(asks, time.monotonic() - started)
            if port.read(max(1, port.in_waiting)):
                quiet_since = time.monotonic()
        port.write(b"\x01")
        tail = b""
        while not tail.endswith(RAW_BANNER):
            if time.monotonic() > deadline:
                raise seen.timeout(asks, time.monotonic() - started)
            tail = (tail + port.read(1))[-len(RAW_BANNER) :]
    finally:
        port.timeout = previous_timeout


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
