"""The real esptool, run as a technician would, against an emulated ESP32 bootloader on a pty."""

from __future__ import annotations

import subprocess
import sys

from pendant_hardware.rom_loader import RomLoaderPty


def esptool(chip: RomLoaderPty, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m esptool --port <chip> --before no-reset --after no-reset ARGS` (the emulator has no
    reset lines), its output captured."""
    command = [sys.executable, "-m", "esptool", "--port", chip.port]
    command += ["--before", "no-reset", "--after", "no-reset"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
