"""Pure: how the bench starts the MicroPython unix port as a board would boot, and what each exit means.

A board runs main.py after a reset; when main.py ends, crashes or is interrupted (Ctrl-C) it drops into
the REPL in the same session; SystemExit or Ctrl-D at the REPL is a soft reboot, which runs main.py
again, except from the raw REPL, where the board comes back in the raw REPL without running main.py
(mpremote relies on that). The unix port runs one script and exits, so the bench starts one process per
stage and reads the exit code:

| process | exit | next |
|---|---|---|
| firmware | SystemExit (any code but 1 and 130), main.py returned (0) | soft reboot: firmware again |
| firmware | uncaught exception (1), KeyboardInterrupt (130) | REPL |
| REPL | Ctrl-D / SystemExit | soft reboot: firmware, or raw REPL when it was in the raw REPL |
| REPL | `machine.reset()` | hard reset: firmware |
| any | killed by a signal the bench did not send (crash) | hard reset (a panicking ESP32 reboots) |

The firmware runs exactly as `micropython main.py` in the flash folder: the bench adds nothing to its
heap (the firmware's budget, `-X heapsize=128K` on the 64-bit port, is measured on the bench). Its
paths are relative to the flash folder; an absolute path would reach the host's files (the firmware uses
none). The REPL first mounts the flash
folder at `/` (so `/` is the flash, as on a board, for mpremote and for people) and gets a
`machine.reset()`. A main.py that returns exits with 0 like SystemExit(0), so the bench soft-reboots it
where a board would stay at the REPL.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRMWARE, REPL, RAW_REPL = "firmware", "repl", "raw_repl"

EXIT_UNCAUGHT = 1  # the unix port's code for an uncaught exception
EXIT_KEYBOARD_INTERRUPT = 130  # ... and for an uncaught KeyboardInterrupt
EXIT_HARD_RESET = 242  # the REPL's machine.reset()
SEARCH_PATH = ":.frozen:/lib"  # MICROPYPATH: "", ".frozen", "/lib", the ESP32 port's sys.path

# Markers in the interpreter's output (MicroPython's pyexec): the raw REPL's banner, the friendly one.
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
PROMPTS = (b">>> ", RAW_BANNER)


@dataclass(frozen=True)
class NextBoot:
    """What to start after an interpreter exited."""

    kind: str  # FIRMWARE, REPL or RAW_REPL
    soft_reboot: bool  # print "MPY: soft reboot" first, as the board does
    why: str  # for the console log


def repl_code(flash_dir: str) -> str:
    """The `-c` program run before the REPL (`-i`): mount the flash, give `machine` the reset() that
    mpremote's `reset` calls (the unix port has none; it ends the process with EXIT_HARD_RESET), and give
    `os.ilistdir` the file sizes a board's listing has (the unix port's has none; `mpremote fs ls` shows
    them)."""
    return (
        "def _bench_boot():\n"
        " import os,sys,machine\n"
        " os.umount('/')\n"
        f" os.mount(os.VfsPosix({flash_dir!r}),'/')\n"
        " os.chdir('/')\n"
        " class Machine:\n"
        "  def __getattr__(self,name):\n"
        "   return getattr(machine,name)\n"
        "  def reset(self):\n"
        f"   sys.exit({EXIT_HARD_RESET})\n"
        " class Os:\n"
        "  def __getattr__(self,name):\n"
        "   return getattr(os,name)\n"
        "  def ilistdir(self,path=''):\n"
        "   base=path.rstrip('/')+'/' if path not in ('','.') else ''\n"
        "   for entry in os.ilistdir(path):\n"
        "    yield (entry[0],entry[1],entry[2],os.stat(base+entry[0])[6] if entry[1]==0x8000 else 0)\n"
        " sys.modules['machine']=Machine()\n"
        " sys.modules['os']=Os()\n"
        "_bench_boot()\n"
        "del _bench_boot\n"
    )


def interpreter_args(micropython: str, kind: str, flash_dir: str, heap_size: str) -> list[str]:
    """The command line for one stage."""
    heap = ["-X", f"heapsize={heap_size}"]
    if kind == FIRMWARE:
        return [micropython, *heap, "main.py"]
    if kind in (REPL, RAW_REPL):
        return [micropython, *heap, "-i", "-c", repl_code(flash_dir)]
    raise ValueError(f"unknown interpreter stage {kind!r}")


def next_boot(kind: str, exit_code: int, raw_repl: bool) -> NextBoot:
    """What a board does after the stage `kind` ended with `exit_code` (negative: killed by that signal)
    when the bench did not cause it; `raw_repl` is whether the REPL was in raw mode at the end."""
    if exit_code < 0:
        return NextBoot(FIRMWARE, False, f"crashed (signal {-exit_code}): hard reset")
    if kind == FIRMWARE:
        if exit_code == EXIT_KEYBOARD_INTERRUPT:
            return NextBoot(REPL, False, "interrupted: REPL")
        if exit_code == EXIT_UNCAUGHT:
            return NextBoot(REPL, False, "uncaught exception: REPL")
        return NextBoot(FIRMWARE, True, f"SystemExit({exit_code}): soft reboot")
    if exit_code == EXIT_HARD_RESET:
        return NextBoot(FIRMWARE, False, "machine.reset(): hard reset")
    if raw_repl:
        return NextBoot(RAW_REPL, True, "soft reset in the raw REPL")
    return NextBoot(FIRMWARE, True, "soft reset")


def caught_signals(proc_status: str) -> int:
    """The SigCgt mask of /proc/<pid>/status: bit n-1 is set when signal n has a handler."""
    for line in proc_status.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


class OutputWatch:
    """Follows what the interpreter prints to know whether it is in the raw REPL and whether it has shown
    a prompt since it started (markers may be split across reads, so a little of the past is kept)."""

    KEEP = max(len(marker) for marker in (RAW_BANNER, FRIENDLY_BANNER, *PROMPTS))

    def __init__(self) -> None:
        self.raw_repl = False
        self.prompted = False
        self._tail = b""

    def restart(self) -> None:
        """A new interpreter: no prompt yet, not in the raw REPL."""
        self.raw_repl = False
        self.prompted = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        """Note what `data` (the next bytes of output) says."""
        text = self._tail + data
        raw_at = text.rfind(RAW_BANNER)
        friendly_at = text.rfind(FRIENDLY_BANNER)
        if raw_at >= 0 or friendly_at >= 0:
            self.raw_repl = raw_at > friendly_at
        if any(prompt in text for prompt in PROMPTS):
            self.prompted = True
        self._tail = text[-self.KEEP :]
