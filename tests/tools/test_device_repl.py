"""The REPL client's way in: a pendant whose firmware misses interrupts (it reboots in a loop, or is
still starting) is asked again until its raw REPL answers; one that never stops says so in one line."""

from __future__ import annotations

import os
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from repl_pty import MicroPythonOnPty

from pendant_tools.device_repl import PendantRepl
from pendant_tools.errors import EXIT_DEVICE, DeviceError


@pytest.fixture
def rebooting_board(tmp_path: Path) -> Iterator[MicroPythonOnPty]:
    """A board that ignores the first 7 Ctrl-Cs (each ask of the client sends two)."""
    with MicroPythonOnPty(tmp_path / "flash", deaf_for=7) as board:
        yield board


def test_a_board_that_misses_interrupts_is_asked_again_until_its_raw_repl_answers(
    rebooting_board: MicroPythonOnPty,
) -> None:
    with PendantRepl(rebooting_board.port, connect_timeout=60) as repl:
        assert repl.run("print(6 * 7)").strip() == "42"
        assert repl.info().micropython.startswith("1.")
    assert rebooting_board.ignored_interrupts == 7  # it had to ask more than once


def test_a_board_that_never_stops_rebooting_is_one_clear_error(tmp_path: Path) -> None:
    with (
        MicroPythonOnPty(tmp_path / "flash", deaf_for=10**9) as board,
        pytest.raises(DeviceError) as raised,
    ):
        PendantRepl(board.port, connect_timeout=2).open()
    message = str(raised.value)
    assert message.startswith(f"the pendant on {board.port} reboots in a loop (")
    assert "soft reboots seen, interrupted " in message
    assert message.endswith(
        "never stopped at its REPL: press its RESET button and run again; if it keeps rebooting, "
        "flash MicroPython again (pendant flash)"
    )
    assert "\n" not in message and raised.value.exit_code == EXIT_DEVICE


def test_a_board_that_prints_without_a_repl_is_named_with_its_last_line() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    port = os.ttyname(slave)
    stop = threading.Event()

    def boot_rom() -> None:  # an ESP32 without MicroPython: the ROM's lines, again and again
        while not stop.wait(0.1):
            os.write(master, b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\n")

    printer = threading.Thread(target=boot_rom, daemon=True)
    printer.start()
    try:
        with pytest.raises(DeviceError) as raised:
            PendantRepl(port, connect_timeout=1).open()
    finally:
        stop.set()
        printer.join()
        os.close(master)
        os.close(slave)
    message = str(raised.value)
    assert message.startswith(f"the pendant on {port} prints but its MicroPython REPL does not answer (")
    assert "last line: 'rst:0x1 (POWERON_RESET),boot:0x13'" in message
