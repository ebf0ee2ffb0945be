"""The pure rules of the virtual pendant's boot: which interpreter stage follows which exit, the SIGINT
mask, and reading the REPL's mode from its output."""

from __future__ import annotations

import pytest

from pendant_hardware import repl_boot
from pendant_hardware.repl_boot import (
    EXIT_HARD_RESET,
    EXIT_KEYBOARD_INTERRUPT,
    EXIT_UNCAUGHT,
    FIRMWARE,
    RAW_REPL,
    REPL,
    NextBoot,
    OutputWatch,
    caught_signals,
    next_boot,
)


@pytest.mark.parametrize(
    ("kind", "code", "raw", "expected"),
    [
        (FIRMWARE, 0, False, (FIRMWARE, True)),  # SystemExit(0): the sim board's reset(), a soft reboot
        (FIRMWARE, 3, False, (FIRMWARE, True)),  # any other SystemExit too
        (FIRMWARE, EXIT_KEYBOARD_INTERRUPT, False, (REPL, False)),  # Ctrl-C: into the REPL
        (FIRMWARE, EXIT_UNCAUGHT, False, (REPL, False)),  # a crash: the board sits at the REPL
        (FIRMWARE, -11, False, (FIRMWARE, False)),  # the interpreter itself died: a panic reboots
        (REPL, 0, False, (FIRMWARE, True)),  # Ctrl-D at >>>: soft reboot runs main.py
        (REPL, 0, True, (RAW_REPL, True)),  # Ctrl-D in the raw REPL: back in the raw REPL (mpremote)
        (RAW_REPL, 0, True, (RAW_REPL, True)),
        (RAW_REPL, 0, False, (FIRMWARE, True)),  # it had left the raw REPL (Ctrl-B) before
        (REPL, EXIT_HARD_RESET, True, (FIRMWARE, False)),  # machine.reset(), e.g. `mpremote reset`
        (REPL, -6, False, (FIRMWARE, False)),
    ],
)
def test_what_follows_an_exit(kind: str, code: int, raw: bool, expected: tuple[str, bool]) -> None:
    decision = next_boot(kind, code, raw)
    assert isinstance(decision, NextBoot)
    assert (decision.kind, decision.soft_reboot) == expected
    assert decision.why


def test_interpreter_command_lines() -> None:
    # The firmware runs as it always did, nothing added to its heap.
    assert repl_boot.interpreter_args("/bin/mp", FIRMWARE, "/data/flash", "64K") == [
        "/bin/mp", "-X", "heapsize=64K", "main.py"
    ]  # fmt: skip
    repl = repl_boot.interpreter_args("/bin/mp", RAW_REPL, "/data/it's", "96K")
    assert repl[:5] == ["/bin/mp", "-X", "heapsize=96K", "-i", "-c"]
    assert 'VfsPosix("/data/it\'s")' in repl[5]  # quoted as a Python literal, whatever the path
    assert f"sys.exit({EXIT_HARD_RESET})" in repl[5]
    compile(repl[5], "boot", "exec")  # valid Python (MicroPython runs a subset)
    with pytest.raises(ValueError, match="unknown interpreter stage"):
        repl_boot.interpreter_args("/bin/mp", "bootloader", "/x", "64K")


def test_sigint_mask_from_proc_status() -> None:
    status = "Name:\tmicropython\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000004002\n"
    assert caught_signals(status) == 0x4002
    assert caught_signals(status) & (1 << 1)  # SIGINT (2) is bit 1
    assert caught_signals("Name:\tx\n") == 0


def test_output_watch_follows_the_repl_across_split_reads() -> None:
    watch = OutputWatch()
    assert not watch.prompted and not watch.raw_repl
    watch.feed(b'MicroPython v1.29 on linux\r\nType "help()" for more information.\r\n>')
    assert not watch.raw_repl and not watch.prompted
    watch.feed(b">> ")  # the prompt arrived in two reads
    assert watch.prompted
    watch.feed(b"\r\nraw REPL; CTRL-B")
    assert not watch.raw_repl
    watch.feed(b" to exit\r\n>")
    assert watch.raw_repl
    watch.feed(b"OK42\n\x04\x04>")
    assert watch.raw_repl  # output inside the raw REPL does not leave it
    watch.feed(b'\r\nMicroPython v1.29 on linux\r\nType "help()" for more information.\r\n>>> ')
    assert not watch.raw_repl  # Ctrl-B: back to the friendly REPL
    watch.restart()
    assert not watch.prompted and not watch.raw_repl
