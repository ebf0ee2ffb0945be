"""The board lines the firmware sends, played by the test on a whole virtual pendant (the stand-in firmware
boots, then this test takes over its board connection): the watchdog resets the pendant, PWRKEY switches
the modem off and on as the A7670 hardware manual says, DTR lets a modem with AT+CSCLK=1 sleep, OFF
switches the pendant off until the power button or the charger."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from test_board_io import Pins

from pendant_hardware.board_io import line_problem
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.virtual_pendant import VirtualPendant

from hw_helpers import AtClient, fake_pendant, on_loop, wait_until


@pytest.fixture
def pendant(bench_loop: LoopThread, tmp_path: Path) -> Iterator[VirtualPendant]:
    device = fake_pendant(bench_loop, tmp_path / "pd-0001", boot_delay_s=0.2)
    bench_loop.run(device.start())
    bench_loop.run(device.wait_for_line("modem: imei", timeout=30))
    yield device
    bench_loop.run(device.stop())


@pytest.fixture
def pins(pendant: VirtualPendant) -> Iterator[Pins]:
    """The firmware's end of the board channel (replacing the stand-in firmware's connection)."""
    board = Pins(pendant.board.port)
    assert [board.line() for _ in range(4)] == ["BTN 0", "PWR 0", "VBAT 3950", "CHG 0"]
    yield board
    board.close()


def snapshot(bench_loop: LoopThread, pendant: VirtualPendant) -> dict:
    return on_loop(bench_loop, pendant.snapshot)


def test_an_unfed_watchdog_resets_the_pendant(
    pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread
) -> None:
    boots = pendant.boots
    pins.send("WDT 2500")
    for _ in range(30):  # fed every 100 ms for 3 s: no reset
        pins.send("FEED")
        time.sleep(0.1)
    assert snapshot(bench_loop, pendant)["watchdog_resets"] == 0
    wait_until(lambda: pendant.board.feeds == 30, what="the 30 FEED lines to arrive")
    bench_loop.run(pendant.wait_for_line("[bench] watchdog reset", timeout=10))  # then not fed
    bench_loop.run(pendant.wait_for_line(f"[bench] boot {boots + 1}", timeout=10))
    state = snapshot(bench_loop, pendant)
    assert state["watchdog_resets"] == 1 and state["watchdog_ms"] is None  # a reset disarms it
    assert "firmware exited with code -9" in pendant.console_log.read_text()  # killed, not asked


def test_the_watchdog_outlives_the_repl(pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread) -> None:
    pins.send("WDT 1500")
    with serial.Serial(pendant.pty, 115200, timeout=0.2) as port:
        port.write(b"\x03")
        bench_loop.run(pendant.wait_for_mode("repl"))
    # Nobody feeds it at the REPL: the ESP32's watchdog, once armed, resets the board.
    bench_loop.run(pendant.wait_for_line("[bench] watchdog reset", timeout=15))
    bench_loop.run(pendant.wait_for_mode("firmware"))


def test_pwrkey_switches_the_modem_as_the_manual_says(
    pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread
) -> None:
    at = AtClient(pendant.modem.port, timeout=0.5)  # replaces the stand-in firmware's modem connection
    try:
        at.command("ATE0")
        pins.send("PWRKEY 100")  # too short to switch a running A7670 off
        bench_loop.run(pendant.wait_for_line("PWRKEY 100 ms: modem nothing"))
        assert at.command("AT") == b"\r\nOK\r\n"
        pins.send("PWRKEY 3000")  # >= 2.5 s: off
        bench_loop.run(pendant.wait_for_line("PWRKEY 3000 ms: modem off"))
        at.send("AT\r")
        with pytest.raises(TimeoutError):
            at.read_final()  # an off modem says nothing
        pins.send("PWRKEY 100")  # >= 50 ms: on; the UART answers after its boot time
        bench_loop.run(pendant.wait_for_line("PWRKEY 100 ms: modem on"))
        assert at.expect_line("*ATREADY") == "*ATREADY: 1"
        assert [at.read_line() for _ in range(3)] == ["+CPIN: READY", "SMS DONE", "PB DONE"]
        assert at.command("AT") == b"AT\r\r\nOK\r\n"  # power-on state: echo on again
        assert snapshot(bench_loop, pendant)["modem"]["power"] == "on"
    finally:
        at.close()


def test_a_hung_modem_comes_back_only_by_pwrkey(
    pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread
) -> None:
    at = AtClient(pendant.modem.port, timeout=0.5)
    try:
        assert at.command("AT") == b"\r\nOK\r\n"  # echo off: the stand-in firmware sent ATE0
        on_loop(bench_loop, pendant.modem.inject, "hung")
        for _ in range(2):
            at.send("AT\r")
            with pytest.raises(TimeoutError):
                at.read_final()
        pins.send("PWRKEY 3000")
        pins.send("PWRKEY 200")
        at.expect_line("PB DONE")
        assert at.command("AT") == b"AT\r\r\nOK\r\n"  # a fresh modem: echo on
        assert snapshot(bench_loop, pendant)["modem"]["faults"] == {}
    finally:
        at.close()


def test_dtr_high_lets_the_modem_sleep_after_csclk(
    pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread
) -> None:
    at = AtClient(pendant.modem.port, timeout=0.5)
    try:
        at.command("ATE0")
        pins.send("DTR 1")  # without AT+CSCLK=1 the modem stays awake
        wait_until(lambda: on_loop(bench_loop, lambda: pendant.modem.dtr), what="DTR to arrive")
        assert at.command("AT") == b"\r\nOK\r\n"
        assert at.command("AT+CSCLK=1") == b"\r\nOK\r\n"  # now DTR is high: asleep
        at.send("AT\r")
        with pytest.raises(TimeoutError):
            at.read_final()  # the UART sleeps: the command is lost
        assert snapshot(bench_loop, pendant)["modem"]["asleep"] is True
        pins.send("DTR 0")
        wait_until(lambda: not on_loop(bench_loop, lambda: pendant.modem.asleep), what="the modem to wake")
        assert at.lines("AT+CSCLK?") == ["+CSCLK: 1", "OK"]
        report = on_loop(bench_loop, pendant.power_report)
        assert report.modem_s["sleep"] > 0  # the meter counted the sleep
    finally:
        at.close()


def test_off_until_the_power_button_or_the_charger(
    pendant: VirtualPendant, pins: Pins, bench_loop: LoopThread
) -> None:
    boots = pendant.boots
    pins.send("OFF")
    bench_loop.run(pendant.wait_for_mode("off"))
    state = snapshot(bench_loop, pendant)
    assert state["pid"] is None and state["modem"]["power"] == "off"
    time.sleep(0.3)
    assert pendant.boots == boots  # nothing starts by itself
    bench_loop.run(pendant.press_power(50))
    bench_loop.run(pendant.wait_for_line(f"[bench] boot {boots + 1}"))
    assert "[bench] power button: switched on" in pendant.console_log.read_text()
    wait_until(lambda: snapshot(bench_loop, pendant)["modem"]["power"] == "on", what="the modem to boot")
    # Off again, and this time the charger brings it back.
    replacement = Pins(pendant.board.port)
    try:
        [replacement.line() for _ in range(4)]
        replacement.send("OFF")
        bench_loop.run(pendant.wait_for_mode("off"))
        on_loop(bench_loop, pendant.board.set_charger, True)
        bench_loop.run(pendant.wait_for_line(f"[bench] boot {boots + 2}"))
    finally:
        replacement.close()
    report = on_loop(bench_loop, pendant.power_report)
    assert report.mcu_s["off"] > 0 and report.modem_s["off"] > 0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("WDT 5000", None),
        ("WDT soon", "WDT needs a duration in ms"),
        ("PWRKEY 0", "PWRKEY needs a duration in ms"),
        ("DTR 2", "DTR is 0 or 1"),
        ("FEED now", "FEED takes no value"),
        ("OFF", None),
        ("MCU deep_sleep", "unknown MCU state"),
        ("VIB dance", "unknown vibration pattern"),
        ("RESET 100", "unknown line from the pendant"),
    ],
)
def test_line_rules(line: str, problem: str | None) -> None:
    kind, _, value = line.partition(" ")
    assert line_problem(kind, value) == problem


def test_a_bad_line_is_rejected_and_the_channel_goes_on(pendant: VirtualPendant, pins: Pins) -> None:
    pins.send("WDT soon")
    pins.send("VIB sent")
    wait_until(lambda: [event.value for event in pendant.vibrations] == ["sent"], what="the vibration")
    assert pendant.board.rejected == ["WDT soon"]
    assert pendant.mcu is not None and pendant.mcu.watchdog_ms is None
