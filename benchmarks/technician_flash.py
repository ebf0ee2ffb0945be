"""Benchmark: `pendant flash` of a 1.6 MB MicroPython image through the ESP32 bootloader emulator.

For each loader (esptool's flasher stub, the default; and the ROM loader, --no-stub), N runs of the whole
job as the command does it (connect and detect, stub, baud change, chip erase, compressed write, MD5
verify), with its stages. Baselines in the same run:

- raw pty: the same image pushed through a pty pair in 16 KB writes and read back, no protocol;
- esptool's own `write-flash` CLI (a separate process) through the same emulator, same image;
- what the bytes that crossed the line would take on a real 460800-baud UART (10 bits a byte), to say
  how far the emulator's speed is from a board's (the flash chip's own erase and program time excluded).

Run: .venv/bin/python benchmarks/technician_flash.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from pendant_hardware.rom_loader import RomLoaderPty
from pendant_hardware.rom_loader.sample_image import micropython_like_image
from pendant_tools.flashing import FlashOptions, flash_firmware
from pendant_tools.params import FIRMWARE_IMAGE

IMAGE_BYTES = 1_600_000
UART_BAUD = 460800


def raw_pty_seconds(data: bytes) -> float:
    """Push `data` through a raw pty pair and read it all on the other side."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    received = bytearray()

    def reader() -> None:
        while len(received) < len(data):
            received.extend(os.read(master, 65536))

    thread = threading.Thread(target=reader)
    started = time.perf_counter()
    thread.start()
    view = memoryview(data)
    for offset in range(0, len(data), 16384):
        os.write(slave, view[offset : offset + 16384])
    thread.join()
    elapsed = time.perf_counter() - started
    os.close(master)
    os.close(slave)
    assert bytes(received) == data
    return elapsed


def esptool_cli_seconds(image: Path, folder: Path) -> float:
    with RomLoaderPty(folder / "esptool-flash.bin") as chip:
        command = [sys.executable, "-m", "esptool", "--port", chip.port, "--before", "no-reset"]
        started = time.perf_counter()
        result = subprocess.run(
            [*command, "--after", "no-reset", "--baud", "460800", "write-flash", "0x1000", str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    return elapsed


def pendant_flash(image: Path, folder: Path, stub: bool) -> tuple[float, dict[str, float], int]:
    with RomLoaderPty(folder / f"flash-{'stub' if stub else 'rom'}.bin") as chip:
        started = time.perf_counter()
        result = flash_firmware(
            chip.port, FIRMWARE_IMAGE.convert(str(image), None, None), FlashOptions(stub=stub, reset=False)
        )
        elapsed = time.perf_counter() - started
        wire = chip.link.bytes_in + chip.link.bytes_out
        assert chip.read_flash(0x1000, IMAGE_BYTES) == image.read_bytes()
    return elapsed, result.seconds, wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-flash-"))
    image = folder / "micropython.bin"
    image.write_bytes(micropython_like_image(IMAGE_BYTES, seed=11))

    raw = [raw_pty_seconds(image.read_bytes()) for _ in range(args.runs)]
    cli = [esptool_cli_seconds(image, folder) for _ in range(args.runs)]
    print(f"image: {IMAGE_BYTES} bytes, MicroPython-like (deflates to ~2/3), {args.runs} runs each")
    print(f"baseline raw pty, image pushed through:      median {statistics.median(raw):.3f} s")
    print(f"baseline esptool write-flash CLI (stub):     median {statistics.median(cli):.2f} s")
    for stub in (True, False):
        runs = [pendant_flash(image, folder, stub) for _ in range(args.runs)]
        totals = [run[0] for run in runs]
        stages = {name: statistics.median(run[1][name] for run in runs) for name in runs[0][1]}
        wire = runs[0][2]
        name = "stub" if stub else "rom "
        median = statistics.median(totals)
        ratios = f"x{median / statistics.median(raw):.0f} raw pty, x{median / statistics.median(cli):.2f} CLI"
        print(
            f"pendant flash ({name}): median {median:.2f} s (min {min(totals):.2f}, max {max(totals):.2f}); "
            + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in stages.items())
            + f"; {ratios}"
        )
        print(
            f"   {wire} bytes crossed the line; at {UART_BAUD} baud that is {wire * 10 / UART_BAUD:.1f} s of "
            "serial transfer on a real board"
        )


if __name__ == "__main__":
    main()
