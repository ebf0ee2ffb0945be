"""The virtual board channel: pin state out, HELLO / VIB / MCU in."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pendant_hardware.board_io import BoardIO
from pendant_hardware.loop_thread import LoopThread

from hw_helpers import on_loop


class Pins:
    """The pendant's end of the channel."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def line(self) -> str:
        return self.reader.readline().decode().rstrip("\n")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def board(bench_loop: LoopThread) -> Iterator[BoardIO]:
    io = on_loop(bench_loop, BoardIO)
    bench_loop.run(io.start())
    yield io
    bench_loop.run(io.stop())


def test_whole_pin_state_on_connect(board: BoardIO) -> None:
    pins = Pins(board.port)
    try:
        assert [pins.line() for _ in range(4)] == ["BTN 0", "PWR 0", "VBAT 3950", "CHG 0"]
    finally:
        pins.close()


def test_press_battery_charger(board: BoardIO, bench_loop: LoopThread) -> None:
    pins = Pins(board.port)
    try:
        [pins.line() for _ in range(4)]
        bench_loop.run(board.press(50))
        assert [pins.line(), pins.line()] == ["BTN 1", "BTN 0"]
        bench_loop.run(board.press(10, power_button=True))
        assert [pins.line(), pins.line()] == ["PWR 1", "PWR 0"]
        on_loop(bench_loop, board.set_battery, 3600)
        on_loop(bench_loop, board.set_charger, True)
        assert [pins.line(), pins.line()] == ["VBAT 3600", "CHG 1"]
        with pytest.raises(ValueError):
            on_loop(bench_loop, board.set_battery, -1)
    finally:
        pins.close()


def test_pendant_lines_are_recorded(board: BoardIO, bench_loop: LoopThread) -> None:
    pins = Pins(board.port)
    try:
        pins.send("HELLO pd-0001 0.1.0")
        pins.send("MCU light_sleep")
        pins.send("VIB sent")
        pins.send("VIB received")
        event = bench_loop.run(board.wait_for("VIB", "received", timeout=10))
        assert event.value == "received"
        assert [(v.kind, v.value) for v in board.vibrations] == [("VIB", "sent"), ("VIB", "received")]
        assert board.vibrations[0].t <= board.vibrations[1].t
        assert board.hello.value == "pd-0001 0.1.0"
        assert board.mcu_state == "light_sleep"
        with pytest.raises(TimeoutError):
            bench_loop.run(board.wait_for("VIB", "acknowledged", timeout=0.2))
    finally:
        pins.close()


def test_a_new_connection_replaces_the_old(board: BoardIO, bench_loop: LoopThread) -> None:
    old = Pins(board.port)
    [old.line() for _ in range(4)]
    new = Pins(board.port)
    try:
        [new.line() for _ in range(4)]
        assert old.reader.readline() == b""  # closed by the bench
        on_loop(bench_loop, board.set_button, True)
        assert new.line() == "BTN 1"
    finally:
        old.close()
        new.close()
