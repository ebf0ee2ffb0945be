"""Fixtures for the technician tools: an emulated ESP32 in its bootloader on a pty, and firmware images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pendant_hardware.rom_loader import RomLoaderPty
from pendant_hardware.rom_loader.sample_image import micropython_like_image


@pytest.fixture
def chip(tmp_path: Path) -> Iterator[RomLoaderPty]:
    """An ESP32 held in its ROM loader, flash (4 MB, erased) in tmp_path/flash.bin, on a fresh pty."""
    with RomLoaderPty(tmp_path / "flash.bin") as emulator:
        yield emulator


@pytest.fixture(scope="session")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256 KB MicroPython-like ESP32 image (quick to flash)."""
    path = tmp_path_factory.mktemp("images") / "small.bin"
    path.write_bytes(micropython_like_image(256 * 1024, seed=3))
    return path


@pytest.fixture(scope="session")
def full_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.6 MB image, the size of MicroPython's ESP32_GENERIC firmware."""
    path = tmp_path_factory.mktemp("images") / "full.bin"
    path.write_bytes(micropython_like_image(1_600_000, seed=4))
    return path
