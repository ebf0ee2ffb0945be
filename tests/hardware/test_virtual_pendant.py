"""A virtual pendant runs (stand-in) firmware in MicroPython, captures its console, restarts it like a
rebooting board, and survives a power cut."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.sim_control import pid_alive
from pendant_hardware.virtual_pendant import FirmwareCrashed, VirtualPendant

from hw_helpers import fake_pendant, on_loop


@pytest.fixture
def pendant(bench_loop: LoopThread, tmp_path: Path) -> Iterator[VirtualPendant]:
    device = fake_pendant(bench_loop, tmp_path / "pd-0001")
    bench_loop.run(device.start())
    yield device
    pid = device.pid
    bench_loop.run(device.stop())
    assert pid is None or not pid_alive(pid), "the firmware process outlived stop()"


def test_firmware_boots_and_its_console_is_captured(pendant: VirtualPendant, bench_loop: LoopThread) -> None:
    line = bench_loop.run(pendant.wait_for_line("modem: imei", timeout=30))
    assert line.endswith(f"modem: imei {pendant.modem.settings.imei}")  # it talked AT to its modem
    event = bench_loop.run(pendant.wait_for_event("mem", timeout=10))
    assert (event.peak, event.free) == (1000, 2000)
    hello = bench_loop.run(pendant.board.wait_for("HELLO", timeout=10))
    assert hello.value == "pd-0001 fake-1"
    log = pendant.console_log.read_text()
    assert "[bench] boot 1, pid" in log and "modem: imei" in log
    flash = pendant.flash_dir
    assert (flash / "main.py").exists() and (flash / "pendant/app.mpy").exists()
    assert (flash / "config.json").exists() and (flash / "sim.json").exists()


def test_press_and_restart_after_exit(pendant: VirtualPendant, bench_loop: LoopThread) -> None:
    bench_loop.run(pendant.board.wait_for("HELLO", timeout=30))
    first_pid = pendant.pid
    bench_loop.run(pendant.press(100))
    raised = bench_loop.run(pendant.wait_for_event("alarm_raised", timeout=10))
    assert raised.alarm_id == "1-1"
    assert bench_loop.run(pendant.wait_for_vibration("sent", timeout=10)).value == "sent"
    # The stand-in firmware exits on release; the bench boots it again.
    bench_loop.run(pendant.wait_for_line("[bench] boot 2", timeout=30))
    assert pendant.boots == 2
    assert pendant.pid != first_pid
    assert "firmware exited with code 0" in pendant.console_log.read_text()


def test_power_cut_kills_and_reboots(pendant: VirtualPendant, bench_loop: LoopThread) -> None:
    bench_loop.run(pendant.wait_for_line("modem: imei", timeout=30))
    pid = pendant.pid
    assert pid is not None and pid_alive(pid)
    before_cut = pendant.line_count
    bench_loop.run(pendant.power_cut())
    bench_loop.run(pendant.wait_for_line("[bench] boot 2", timeout=30))
    assert not pid_alive(pid)
    log = pendant.console_log.read_text()
    assert "[bench] power cut" in log
    assert f"firmware exited with code -{9}" in log  # SIGKILL
    # The modem restarted too: the new boot hears the boot URCs and still gets its IMEI.
    bench_loop.run(pendant.wait_for_line("modem: imei", after=before_cut, timeout=30))
    snapshot = on_loop(bench_loop, pendant.snapshot)
    assert snapshot["boots"] == 2 and snapshot["device"] == "pd-0001"
    assert snapshot["console_log"] == str(pendant.console_log)
    assert os.path.exists(snapshot["console_log"])


def test_a_crash_leaves_the_pendant_at_the_repl_and_waiting_fails_at_once(
    pendant: VirtualPendant, bench_loop: LoopThread
) -> None:
    bench_loop.run(pendant.board.wait_for("HELLO", timeout=30))
    bench_loop.run(pendant.press_power(50))  # the stand-in firmware raises on the power button
    bench_loop.run(pendant.wait_for_mode("repl"))
    with pytest.raises(
        FirmwareCrashed, match="crashed into the REPL(.|\n)*ValueError: the stand-in firmware"
    ):
        bench_loop.run(pendant.wait_for_mqtt(timeout=60), timeout=10)  # no 60 s wait
    with pytest.raises(FirmwareCrashed):
        bench_loop.run(pendant.wait_for_event("alarm_acked", timeout=60), timeout=10)
    assert on_loop(bench_loop, pendant.snapshot)["crashes"] == 1
    assert pendant.boots == 1  # a board without a watchdog stays at the REPL
    before = pendant.line_count
    bench_loop.run(pendant.reset())
    bench_loop.run(pendant.wait_for_line("[bench] boot 2", after=before))
    bench_loop.run(pendant.wait_for_line("modem: imei", after=before))
    assert not pendant.mcu.crashed
