"""The real esptool (as a technician would run it, a separate process) against the emulated ESP32: it
detects the chip, writes, verifies and reads back through the ROM loader and through its flasher stub."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from esptool_runner import esptool

from pendant_hardware.rom_loader import Mode, RomLoaderPty
from pendant_hardware.rom_loader.esp32 import CHIP_DETECT_MAGIC_REG

ESP32_S2_MAGIC = 0x000007C6  # esptool's ESP32-S2 target


def test_esptool_detects_an_esp32_with_its_mac(chip: RomLoaderPty) -> None:
    result = esptool(chip, "--no-stub", "chip-id")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Detecting chip type... ESP32" in result.stdout
    assert "ESP32-D0WD-V3 (revision v3.1)" in result.stdout
    assert "Crystal frequency:  40MHz" in result.stdout
    mac = ":".join(f"{byte:02x}" for byte in chip.registers.mac)
    assert f"MAC:                {mac}" in result.stdout


@pytest.mark.parametrize("loader", ["rom", "stub"])
def test_esptool_writes_verifies_and_reads_back(
    chip: RomLoaderPty, small_image: Path, tmp_path: Path, loader: str
) -> None:
    stub = [] if loader == "stub" else ["--no-stub"]
    image = small_image.read_bytes()
    written = esptool(chip, *stub, "write-flash", "-z", "0x1000", str(small_image))
    assert written.returncode == 0, written.stdout + written.stderr
    assert "Hash of data verified." in written.stdout
    assert chip.loader.stats.commands.get("FLASH_DEFL_DATA", 0) > 0  # compressed, as asked

    verified = esptool(chip, *stub, "verify-flash", "0x1000", str(small_image))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    length = len(image) if loader == "stub" else 8192  # the ROM reads 64 bytes per command: keep it short
    back = tmp_path / "back.bin"
    read = esptool(chip, *stub, "read-flash", "0x1000", str(length), str(back))
    assert read.returncode == 0, read.stdout + read.stderr
    assert back.read_bytes() == image[:length]
    assert chip.mode is Mode.ROM  # esptool's --after no-reset leaves the chip in the ROM loader


def test_esptool_verify_fails_when_the_flash_differs(chip: RomLoaderPty, small_image: Path) -> None:
    assert esptool(chip, "write-flash", "0x1000", str(small_image)).returncode == 0
    offset = next(i for i, byte in enumerate(small_image.read_bytes()[5000:], 5000) if byte)
    chip.flash.program(0x1000 + offset, b"\x00")  # bits flip to 0 in the flash
    verified = esptool(chip, "verify-flash", "0x1000", str(small_image))
    assert verified.returncode != 0
    assert "Verification failed" in verified.stdout + verified.stderr


def test_the_emulator_runs_by_hand_until_sigterm(tmp_path: Path, small_image: Path) -> None:
    flash = tmp_path / "by-hand.bin"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "pendant_hardware.rom_loader", "--flash", str(flash), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        port = json.loads(emulator.stdout.readline())["port"]
        written = subprocess.run(
            [
                str(Path(sys.executable).with_name("pendant")),
                "flash",
                str(small_image),
                "-p",
                port,
                "--no-reset",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert written.returncode == 0, written.stderr
    finally:
        emulator.send_signal(signal.SIGTERM)
        _, err = emulator.communicate(timeout=30)
    assert emulator.returncode == 0, err
    assert "bytes in" in err
    image = small_image.read_bytes()
    assert flash.read_bytes()[0x1000 : 0x1000 + len(image)] == image  # the flash file keeps it


def test_a_board_with_another_esp32_family_chip_is_refused(chip: RomLoaderPty, small_image: Path) -> None:
    chip.registers.write(CHIP_DETECT_MAGIC_REG, ESP32_S2_MAGIC)  # what an ESP32-S2's ROM holds there
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("pendant")),
            "flash",
            str(small_image),
            "-p",
            chip.port,
            "--no-reset",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 4
    assert result.stderr.splitlines()[-1] == (
        f"Error: the chip on {chip.port} is an ESP32-S2, not the pendant's ESP32: is this the right board?"
    )
    assert chip.loader.stats.erased_bytes == 0
