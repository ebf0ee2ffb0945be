"""`pendant flash` against the emulated ESP32, read back with the real esptool; the port found with
list_ports; and every mistake a technician can make ending in one line and a fixed exit code."""

from __future__ import annotations

import json
import os
import tty
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from esptool_runner import esptool

from pendant_hardware.rom_loader import RomLoaderPty
from pendant_hardware.rom_loader.sample_image import micropython_like_image
from pendant_tools.cli import main
from pendant_tools.errors import NoDeviceError
from pendant_tools.ports import choose_port


def pendant(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def read_back(chip: RomLoaderPty, offset: int, length: int, path: Path) -> bytes:
    """The flash as the real esptool (with its stub) reads it through the emulator."""
    result = esptool(chip, "read-flash", hex(offset), str(length), str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return path.read_bytes()


def test_flash_erases_writes_and_verifies_a_full_image(
    chip: RomLoaderPty, full_image: Path, tmp_path: Path
) -> None:
    # What the previous holder's pendant kept: a config with credentials in the filesystem partition.
    chip.flash.program(0x300000, b'{"device_id":"pd-0007","password":"old"}')

    code, out, err = pendant("flash", str(full_image), "--port", chip.port, "--no-reset")

    assert code == 0, err
    image = full_image.read_bytes()
    assert read_back(chip, 0x1000, len(image), tmp_path / "back.bin") == image
    assert read_back(chip, 0x300000, 64, tmp_path / "old.bin") == b"\xff" * 64  # nothing of it survives
    assert chip.loader.stats.chip_erases == 1
    assert f"{chip.port}: ESP32-D0WD-V3 (revision v3.1)" in out
    assert "verified by MD5" in out
    for stage in ("connect", "erase", "write", "verify"):
        assert stage in err  # progress on stderr


def test_flash_through_the_rom_loader_with_json(
    chip: RomLoaderPty, small_image: Path, tmp_path: Path
) -> None:
    chip.flash.program(0x200000, b"old")
    code, out, err = pendant(
        "flash", str(small_image), "-p", chip.port, "--no-reset", "--no-stub", "--json", "-b", "921600"
    )
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON document alone
    image = small_image.read_bytes()
    assert result["loader"] == "rom"
    assert result["address"] == "0x1000"
    assert result["image_size"] == len(image)
    assert result["erased"] is True
    assert result["crystal_mhz"] == 40
    assert set(result["seconds"]) == {"connect", "erase", "write", "verify"}
    assert chip.registers.baud == 921600  # it asked the ROM for the faster rate
    assert read_back(chip, 0x1000, len(image), tmp_path / "back.bin") == image
    assert read_back(chip, 0x200000, 3, tmp_path / "old.bin") == b"\xff" * 3


def test_no_erase_keeps_the_filesystem(chip: RomLoaderPty, small_image: Path) -> None:
    chip.flash.program(0x300000, b"config")
    code, _, err = pendant("flash", str(small_image), "-p", chip.port, "--no-reset", "--no-erase")
    assert code == 0, err
    assert chip.read_flash(0x300000, 6) == b"config"


# -- mistakes ------------------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A pty where nothing answers (a board that is not in its bootloader)."""
    master, slave = os.openpty()
    tty.setraw(master)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_nothing_answering_is_exit_4_with_advice(small_image: Path, silent_port: str) -> None:
    code, out, err = pendant("flash", str(small_image), "--port", silent_port, "--no-reset")
    assert code == 4
    assert out == ""
    assert err.splitlines()[-1] == (
        f"Error: no ESP32 bootloader answered on {silent_port}: hold the pendant's BOOT button while "
        "pressing RESET and try again, or check the USB cable"
    )


def test_a_port_that_does_not_exist_is_exit_3(small_image: Path) -> None:
    code, _, err = pendant("flash", str(small_image), "--port", "/dev/ttyUSB-none")
    assert code == 3
    assert err == "Error: /dev/ttyUSB-none does not exist: is the pendant plugged in?\n"


def fake_ports(*devices: tuple[str, str]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(device=device, description=description, vid=0x1A86, pid=0x55D4, serial_number=None)
        for device, description in devices
    ] + [SimpleNamespace(device="/dev/ttyS0", description="n/a", vid=None, pid=None, serial_number=None)]


def test_port_is_found_with_list_ports_or_refused_when_ambiguous(
    monkeypatch: pytest.MonkeyPatch, small_image: Path
) -> None:
    assert choose_port(None, lambda: fake_ports(("/dev/ttyACM0", "USB Single Serial"))) == "/dev/ttyACM0"
    with pytest.raises(NoDeviceError, match="no USB serial port found"):
        choose_port(None, lambda: fake_ports())
    with pytest.raises(NoDeviceError) as several:
        choose_port(
            None, lambda: fake_ports(("/dev/ttyUSB1", "CP2104"), ("/dev/ttyUSB0", "USB Single Serial"))
        )
    assert str(several.value) == (
        "2 serial ports found (/dev/ttyUSB0 (USB Single Serial, 1a86:55d4), "
        "/dev/ttyUSB1 (CP2104, 1a86:55d4)): choose one with --port"
    )

    monkeypatch.delenv("PENDANT_PORT", raising=False)
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: fake_ports())
    code, _, err = pendant("flash", str(small_image))
    assert code == 3
    assert "no USB serial port found" in err


def test_port_comes_from_the_environment(
    chip: RomLoaderPty, small_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENDANT_PORT", chip.port)
    code, out, err = pendant("flash", str(small_image), "--no-reset")
    assert code == 0, err
    assert out.startswith(f"{chip.port}: ESP32")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b":10000000" + b"0" * 40, "is not an ESP32 firmware image (it does not start with 0xE9)"),
        (
            bytes([0xE9]) + b"\x00" * 11 + bytes([9, 0]) + b"\x00" * 100,
            "is an image for the ESP32-S3, not for the pendant's ESP32",
        ),
    ],
)
def test_wrong_images_are_refused_before_touching_the_port(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "firmware.bin"
    path.write_bytes(content)
    code, _, err = pendant("flash", str(path), "--port", "/dev/ttyUSB-none")
    assert code == 2
    assert err.splitlines()[-1].startswith("Error: Invalid value for 'IMAGE'")
    assert message in err.splitlines()[-1]


def test_image_that_does_not_fit_after_the_address_is_refused(chip: RomLoaderPty, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(micropython_like_image(0x20000, seed=5))
    code, _, err = pendant("flash", str(path), "-p", chip.port, "--no-reset", "--address", "0x3f0000")
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: the image (131072 bytes at 0x3f0000) does not fit the 4 MB flash of this board"
    )
    assert chip.loader.stats.erased_bytes == 0  # refused before erasing anything


@pytest.mark.parametrize(
    ("option", "value"), [("--address", "0x1234"), ("--address", "ten"), ("--baud", "12345")]
)
def test_bad_options_are_usage_errors(small_image: Path, option: str, value: str) -> None:
    code, _, err = pendant("flash", str(small_image), "--port", "/dev/null", option, value)
    assert code == 2
    assert err.splitlines()[-1].startswith(f"Error: Invalid value for '{option}'")


def test_help_shows_examples_and_exit_codes() -> None:
    code, out, _ = pendant("flash", "--help")
    assert code == 0
    assert "Examples:" in out and "pendant flash ESP32_GENERIC" in out
    assert "Exit codes:" in out
