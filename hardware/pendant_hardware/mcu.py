"""The pendant's ESP32 on the bench: the MicroPython unix port supervised as a board boots, with its
console on a serial pty, Ctrl-C, soft reboots, the REPL, the hardware watchdog and power off/on.

Which process runs after which is decided by `repl_boot.next_boot` (pure); this module only starts and
stops processes, relays the console (serial_console.py) and keeps the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pendant_hardware import repl_boot
from pendant_hardware.repl_boot import FIRMWARE, RAW_REPL, REPL, OutputWatch
from pendant_hardware.serial_console import SerialConsole

log = logging.getLogger(__name__)

SOFT_REBOOT = b"MPY: soft reboot\r\n"
INTERRUPT_WAIT_S = 5.0  # how long a Ctrl-C waits for a starting firmware to be interruptible
EARLY_S, EARLY_INTERRUPT_TRIES = 3.0, 3  # a Ctrl-C in the first seconds of a boot is repeated if unseen
OFF, STOPPED = "off", "stopped"


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a function for the child to call between fork and exec so that the kernel kills the
    interpreter if the bench dies without stopping it (SIGKILL, crash): no orphaned boards."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return arm


_ARM_PARENT_DEATH = _parent_death_signal()


def sigint_caught(pid: int) -> bool:
    """True when the process has a SIGINT handler: the unix port installs one while it runs Python code
    and removes it while its REPL waits for input, exactly when a board's UART turns Ctrl-C into
    KeyboardInterrupt."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return bool(repl_boot.caught_signals(status) & (1 << (signal.SIGINT - 1)))


def interpreter_loaded(pid: int) -> bool:
    """True once MicroPython is in the process. The pip package runs it inside a CPython process, whose own
    SIGINT handler comes first; a Ctrl-C must wait for MicroPython's."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return any("micropython" in line for line in maps)
    except OSError:
        return False


class Mcu:
    """One interpreter at a time in `flash_dir`; `on_line` gets each console line (bench notes as
    `[bench] ...`). Counters: boots (firmware starts), soft_reboots, watchdog_resets, hard_resets."""

    def __init__(
        self,
        flash_dir: Path,
        home_dir: Path,
        *,
        micropython: str,
        heap_size: str,
        restart_delay_s: float,
        on_line: Callable[[str], None],
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.flash_dir = flash_dir
        self.home_dir = home_dir
        self.micropython = micropython
        self.heap_size = heap_size
        self.restart_delay_s = restart_delay_s
        self._on_line = on_line
        self._on_state = on_state
        self.console = SerialConsole(self._output, self._interrupt)
        self.watch = OutputWatch()
        self.kind: str = STOPPED  # FIRMWARE, REPL, RAW_REPL, OFF or STOPPED
        self.boots = 0
        self.soft_reboots = 0
        self.watchdog_resets = 0
        self.hard_resets = 0
        self.interrupts = 0
        self.crashes = 0  # the firmware died of an uncaught exception (and sits at the REPL)
        self._last_firmware_crashed = False
        self.watchdog_ms: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._kill_reason: str | None = None
        self._powered = asyncio.Event()
        self._powered.set()
        self._wake = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._interrupter: asyncio.Task[None] | None = None
        self._pending_interrupt = False
        # A Ctrl-C aimed at a running firmware, until that firmware shows it took it (KeyboardInterrupt):
        # the process it was for and when it came.
        self._interrupt_for: asyncio.subprocess.Process | None = None
        self._interrupt_at = 0.0
        self._hold_until_raw = False
        self._held = b""
        self._pending = b""

    # -- life cycle ----------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running interpreter's process id, None between processes and while off."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def mode(self) -> str:
        """What runs: firmware, repl, raw_repl (as the REPL's own output says), off or stopped."""
        if self.kind in (REPL, RAW_REPL):
            return RAW_REPL if self.watch.raw_repl else REPL
        return self.kind

    @property
    def pty(self) -> str:
        """The serial port a host opens (`/dev/pts/N`)."""
        return self.console.path

    @property
    def powered(self) -> bool:
        """False after the firmware switched the pendant off (`OFF`), until it is switched on."""
        return self._powered.is_set()

    async def start(self) -> None:
        """Open the serial port and boot the firmware."""
        self._stopping = False
        self.console.open()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"mcu-{self.flash_dir}")

    async def stop(self) -> None:
        """End the interpreter for good and close the serial port."""
        self._stopping = True
        self._cancel_watchdog()
        self._powered.set()
        self._wake.set()
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._interrupter is not None:
            self._interrupter.cancel()
        self._flush_pending()
        self.console.close()
        self._set_kind(STOPPED)

    @property
    def crashed(self) -> bool:
        """The firmware's last run ended in an uncaught exception and the REPL is what runs now."""
        return self.crashes > 0 and self.kind in (REPL, RAW_REPL) and self._last_firmware_crashed

    def power_cut(self) -> None:
        """The battery is pulled: the interpreter dies at once (SIGKILL); the board boots when power is
        back (after `restart_delay_s`)."""
        self._kill("power cut")

    def hard_reset(self, reason: str = "reset") -> None:
        """The EN/RST button (or a watchdog): the interpreter dies, the firmware boots again."""
        self.hard_resets += 1
        self._kill(reason)

    def power_off(self) -> None:
        """The firmware cut its own power (`OFF`): nothing runs until `power_on()`."""
        self._powered.clear()
        self._kill("power off")

    def power_on(self) -> None:
        """Power button or charger while off: the board boots."""
        if not self._powered.is_set():
            self._note("power on")
            self._powered.set()

    def _kill(self, reason: str) -> None:
        self._cancel_watchdog()
        self.watchdog_ms = None
        self._pending_interrupt = False
        self._interrupt_for = None
        self.console.discard_input()
        process = self._process
        if process is not None and process.returncode is None:
            self._kill_reason = reason
            process.kill()
        else:  # between two interpreters, or off: the next boot (or the wait for power) follows at once
            self._note(reason)
            self._wake.set()

    # -- watchdog ------------------------------------------------------------------------------------

    def arm_watchdog(self, ms: int) -> None:
        """`WDT <ms>`: from now on, no feed within `ms` resets the board. It survives soft reboots and the
        REPL, as the ESP32's does (it cannot be stopped once started); only a hard reset clears it."""
        self.watchdog_ms = ms
        self.feed_watchdog()

    def feed_watchdog(self) -> None:
        """`FEED`."""
        if self.watchdog_ms is None:
            return
        self._cancel_watchdog()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.watchdog_ms / 1000, self._watchdog_expired)

    def _watchdog_expired(self) -> None:
        self._watchdog = None
        self.watchdog_resets += 1
        self._kill("watchdog reset")

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # -- the supervisor ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        env = dict(os.environ, MICROPYPATH=repl_boot.SEARCH_PATH, HOME=str(self.home_dir))
        kind = FIRMWARE
        while not self._stopping:
            if not self._powered.is_set():
                self._set_kind(OFF)
                await self._powered.wait()
                kind = FIRMWARE
                if self._stopping:
                    break
            if kind == FIRMWARE and self._pending_interrupt:
                # A Ctrl-C that no firmware could take yet (it came between two processes, or reached one
                # that was exiting) interrupts this boot before main.py runs: the bench's start-up takes
                # tens of milliseconds where a board's takes microseconds, and a firmware that reboots
                # every few milliseconds would otherwise never be caught running.
                self._pending_interrupt = False
                kind = REPL
                self._note("Ctrl-C at boot: REPL, main.py not run")
            code = await self._run(kind, env)
            if self._stopping:
                break
            reason, self._kill_reason = self._kill_reason, None
            if code is None:
                next_kind, soft, delay = FIRMWARE, False, self.restart_delay_s
            elif reason is not None:
                self._note(reason)
                next_kind, soft, delay = FIRMWARE, False, self.restart_delay_s
            else:
                decision = repl_boot.next_boot(kind, code, self.watch.raw_repl)
                self._note(decision.why)
                next_kind, soft = decision.kind, decision.soft_reboot
                if kind == FIRMWARE:
                    self._last_firmware_crashed = code == repl_boot.EXIT_UNCAUGHT
                    self.crashes += int(self._last_firmware_crashed)
                delay = self.restart_delay_s if next_kind == FIRMWARE and not soft else 0.0
            if soft:
                self.soft_reboots += 1
                self._flush_pending()
                self.console.to_host(SOFT_REBOOT)
                self._on_line(SOFT_REBOOT.decode().strip())
            kind = next_kind
            if delay and self._powered.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _run(self, kind: str, env: dict[str, str]) -> int | None:
        """Start one interpreter stage and wait for its end; None when it could not start."""
        args = repl_boot.interpreter_args(
            self.micropython, kind, str(self.flash_dir.resolve()), self.heap_size
        )
        fd = self.console.interpreter_fd
        self.watch.restart()
        self._hold_until_raw = kind == RAW_REPL
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                cwd=self.flash_dir,
                env=env,
                stdin=fd,
                stdout=fd,
                stderr=fd,
                start_new_session=True,  # Ctrl-C in the bench's terminal reaches the bench, not the board
                preexec_fn=_ARM_PARENT_DEATH,
            )
        except OSError as exc:
            self._note(f"cannot start {self.micropython}: {exc}")
            return None
        self._process = process
        if self._stopping:  # stop() came while the process was starting: it found nothing to end
            process.terminate()
        if kind == FIRMWARE:
            self.boots += 1
            self._note(f"boot {self.boots}, pid {process.pid}")
        else:
            self._note(f"{'raw REPL' if kind == RAW_REPL else 'REPL'}, pid {process.pid}")
            if kind == RAW_REPL:
                self.console.to_interpreter(b"\x01")  # back into the raw REPL, as the board comes back
        self._set_kind(kind)
        if self._pending_interrupt:
            self._pending_interrupt = False
            if kind == FIRMWARE:
                self._aim_interrupt(process)
            else:
                self.console.to_interpreter(b"\x03")
        code = await process.wait()
        self.console.drain()
        self._flush_pending()
        if kind == FIRMWARE:
            self._carry_interrupt(process, code)
        what = "firmware" if kind == FIRMWARE else "REPL"
        self._note(f"{what} exited with code {code}")
        return code

    def _set_kind(self, kind: str) -> None:
        self.kind = kind
        if self._on_state is not None:
            self._on_state(kind)

    # -- console -------------------------------------------------------------------------------------

    def _output(self, data: bytes) -> bytes:
        if self._hold_until_raw:
            # After a soft reset in the raw REPL the board prints the raw banner and nothing else; the
            # fresh interpreter's friendly banner (before the bench's Ctrl-A took effect) is held back.
            self._held += data
            at = self._held.find(repl_boot.RAW_BANNER)
            if at < 0:
                self._held = self._held[-len(repl_boot.RAW_BANNER) :]
                return b""
            data, self._held, self._hold_until_raw = self._held[at:], b"", False
        self.watch.feed(data)
        self._lines(data)
        return data

    def _lines(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for raw in lines:
            self._on_line(_printable(raw))

    def _flush_pending(self) -> None:
        if self._pending:
            self._on_line(_printable(self._pending))
            self._pending = b""

    def _note(self, text: str) -> None:
        self._flush_pending()
        self._on_line(f"[bench] {text}")

    def _interrupt(self) -> bool:
        process = self._process
        if process is None or process.returncode is not None:
            # Between two interpreters (a reboot takes the bench milliseconds where a board takes
            # microseconds): the Ctrl-C is for whatever starts next.
            self._pending_interrupt = True
            return True
        if self.kind == FIRMWARE:
            self._aim_interrupt(process)
            return True
        if self.kind in (REPL, RAW_REPL) and self.watch.prompted and sigint_caught(process.pid):
            self.interrupts += 1
            os.kill(process.pid, signal.SIGINT)
            return True
        return False

    def _aim_interrupt(self, process: asyncio.subprocess.Process) -> None:
        # One interrupter per firmware process; a second Ctrl-C while it waits adds nothing (one
        # KeyboardInterrupt ends the firmware), a Ctrl-C for a new process gets a new one.
        waiting = self._interrupter is not None and not self._interrupter.done()
        same_process = self._interrupt_for is process
        self._interrupt_for, self._interrupt_at = process, time.monotonic()
        if waiting and same_process:
            return
        if waiting and self._interrupter is not None:
            self._interrupter.cancel()
        self._interrupter = asyncio.create_task(self._interrupt_when_ready(process))

    def _carry_interrupt(self, process: asyncio.subprocess.Process, code: int) -> None:
        """A firmware that ended without a KeyboardInterrupt while a Ctrl-C was on its way to it (it was
        exiting for a soft reboot, or still starting) did not take it: the Ctrl-C goes to the next boot, so
        a host that sends one Ctrl-C into a rebooting pendant still reaches the REPL. An uncaught exception
        leads to the REPL anyway; a kill by the bench (reset, power cut) empties the input."""
        aimed, self._interrupt_for = self._interrupt_for is process, None
        if not aimed or self._kill_reason is not None:
            return
        if code in (repl_boot.EXIT_KEYBOARD_INTERRUPT, repl_boot.EXIT_UNCAUGHT):
            return
        if time.monotonic() - self._interrupt_at > INTERRUPT_WAIT_S:
            return  # the firmware caught that KeyboardInterrupt itself and ran on: it was served
        if self._interrupter is not None and not self._interrupter.done():
            self._interrupter.cancel()
        self._pending_interrupt = True
        self._note("Ctrl-C came while the firmware was exiting: it interrupts the next boot")

    async def _interrupt_when_ready(self, process: asyncio.subprocess.Process) -> None:
        # A firmware that is still starting has no SIGINT handler of MicroPython's yet: SIGINT would kill
        # it outright, or (inside the pip package's CPython host) wait unseen until the process ends.
        started = time.monotonic()
        deadline = started + INTERRUPT_WAIT_S
        while process.returncode is None and not interpreter_loaded(process.pid):
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # from loading to running main.py: milliseconds
        for _attempt in range(EARLY_INTERRUPT_TRIES):
            while process.returncode is None and not sigint_caught(process.pid):
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.01)
            if process.returncode is not None:
                return
            self.interrupts += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            # One Ctrl-C is one KeyboardInterrupt; only a firmware that was still starting (the signal may
            # have reached the host's handler, not MicroPython's) gets another.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 0.5)
            if process.returncode is not None or time.monotonic() - started > EARLY_S:
                return


def _printable(raw: bytes) -> str:
    """One console line for the log: CR and other control characters (the raw REPL's Ctrl-D) removed."""
    text = raw.decode("utf-8", "replace")
    return "".join(char for char in text if char >= " " or char == "\t")
