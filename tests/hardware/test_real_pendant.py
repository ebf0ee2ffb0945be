"""The bench with the real firmware on the project's broker: what the technician tools and the firmware's
scenario tests rely on. mpremote reaches a running pendant through its serial port, the pendant comes
back online after a reset, and its power report reflects what the firmware did."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pendant_hardware.sim_host import BackgroundSimHost

pytestmark = pytest.mark.e2e

DEVICE = "pd-0001"
BOOT_S = 90  # firmware build + boot + registration + MQTT connect, on a loaded 2-core machine
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
# Another firmware tree to check the bench against (say, the last commit's while firmware/ is mid-change:
# `git archive HEAD firmware | tar -x -C /tmp/head`, then PENDANT_TEST_FIRMWARE=/tmp/head/firmware).
FIRMWARE = Path(os.environ["PENDANT_TEST_FIRMWARE"]) if os.environ.get("PENDANT_TEST_FIRMWARE") else None


@pytest.fixture
def sim(broker: Any, provision: Callable[..., dict[str, Any]]) -> Iterator[BackgroundSimHost]:
    """One virtual pendant with the real firmware, online with its own account on the project's broker."""
    with BackgroundSimHost(broker.data_dir, [provision(DEVICE)], firmware_dir=FIRMWARE) as host:
        host.wait_for_mqtt(DEVICE, timeout=BOOT_S)
        yield host


def mpremote(pty: str, *args: str) -> str:
    result = subprocess.run([MPREMOTE, "connect", pty, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"mpremote {' '.join(args)} failed: {result.stdout}{result.stderr}"
    return result.stdout


def test_mpremote_reaches_the_running_firmware_and_reset_brings_it_back(
    sim: BackgroundSimHost, tmp_path: Path
) -> None:
    boots = sim.state(DEVICE)["boots"]
    listing = mpremote(sim.pty(DEVICE), "fs", "ls")  # interrupts the firmware (Ctrl-C), as on a board
    assert "config.json" in listing and "main.py" in listing and "pendant/" in listing
    note = tmp_path / "note.txt"
    note.write_text("left by the technician\n")
    mpremote(sim.pty(DEVICE), "cp", str(note), ":note.txt")
    assert mpremote(sim.pty(DEVICE), "fs", "cat", "note.txt") == "left by the technician\n"
    assert (sim.pendant(DEVICE).flash_dir / "note.txt").read_text() == "left by the technician\n"
    read = mpremote(
        sim.pty(DEVICE), "exec", "import json; print(json.load(open('/config.json'))['device_id'])"
    )
    assert read.strip() == DEVICE
    assert sim.state(DEVICE)["mode"] == "repl"
    mpremote(sim.pty(DEVICE), "reset")
    sim.wait_for_mode(DEVICE, "firmware")
    sim.wait_for_line(DEVICE, f"[bench] boot {boots + 1}", timeout=BOOT_S)
    sim.wait_for_mqtt(DEVICE, timeout=BOOT_S)  # the modem kept its connection, or the firmware made a new one


def test_the_power_report_of_a_real_run(sim: BackgroundSimHost) -> None:
    report = sim.power(DEVICE, 1000)
    assert report["window_s"] > 0 and report["packets"] > 0  # it connected: CONNECT, SUBSCRIBE, ...
    assert sum(report["modem_s"].values()) == pytest.approx(report["window_s"], rel=0.01)
    assert sum(report["mcu_s"].values()) == pytest.approx(report["window_s"], rel=0.01)
    assert report["battery_days"] > 0
