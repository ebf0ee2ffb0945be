"""A bare MicroPython REPL on a pty, in a folder that stands for the flash: enough to test the REPL client
(info, files, hashes) without a whole virtual pendant. Recipe from shared/reference/micropython-unix-port.md:
the interpreter on one pty (raw), a relay thread to a second pty pair whose slave is the port."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import sys
import threading
import tty
from pathlib import Path


def find_micropython() -> str:
    """The unix port next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    return str(beside) if beside.exists() else shutil.which("micropython") or "micropython"


class MicroPythonOnPty:
    """`port` is the /dev/pts/N to open; the interpreter's working directory is `folder`.

    `deaf_for`: a board whose firmware reboots in a loop, and so misses interrupts: until `deaf_for`
    Ctrl-Cs have come from the host it drops everything the host sends and prints a boot in a loop
    (`MPY: soft reboot` and a firmware line) every 40 ms; the REPL gets what follows the last one."""

    REBOOT_NOISE = b"MPY: soft reboot\r\n12 app: cannot start: config.json missing\r\n"

    def __init__(self, folder: Path, *, deaf_for: int = 0) -> None:
        self.folder = folder
        self.deaf_for = deaf_for
        self.ignored_interrupts = 0
        self.port = ""
        self._pid = 0
        self._child = self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MicroPythonOnPty:
        micropython = find_micropython()
        self.folder.mkdir(parents=True, exist_ok=True)
        pid, child = pty.fork()
        if pid == 0:  # the child: become MicroPython in the flash folder
            os.chdir(self.folder)
            os.execv(micropython, [micropython])
        self._pid, self._child = pid, child
        tty.setraw(child)
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()
        return self

    def _relay(self) -> None:
        while not self._stop.is_set():
            deaf = self.ignored_interrupts < self.deaf_for
            readable, _, _ = select.select([self._child, self._master], [], [], 0.04 if deaf else 0.2)
            if deaf:
                os.write(self._master, self.REBOOT_NOISE)
            for source, target in ((self._child, self._master), (self._master, self._child)):
                if source in readable:
                    try:
                        data = os.read(source, 4096)
                    except OSError:
                        return
                    if source == self._master:
                        data = self._hear(data)
                    elif self.ignored_interrupts < self.deaf_for:
                        continue  # the interpreter's own banner: not shown while "rebooting"
                    if data:
                        os.write(target, data)

    def _hear(self, data: bytes) -> bytes:
        """What of the host's `data` reaches the interpreter: nothing until the last ignored Ctrl-C."""
        while self.ignored_interrupts < self.deaf_for:
            at = data.find(b"\x03")
            if at < 0:
                return b""
            self.ignored_interrupts += 1
            data = data[at + 1 :]
        return data

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
        for fd in (self._child, self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> MicroPythonOnPty:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
