"""Run an emulated ESP32 bootloader on a pty by hand:

    python -m pendant_hardware.rom_loader --flash /tmp/pendant-flash.bin
    # then, in another terminal, with the port it prints:
    pendant flash firmware.bin --port /dev/pts/7 --no-reset
    esptool --port /dev/pts/7 --before no-reset --after no-reset read-flash 0x1000 0x1000 head.bin

It runs until Ctrl-C (or SIGTERM); the flash file keeps what was written.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from pendant_hardware.rom_loader.pty_server import RomLoaderPty
from pendant_hardware.rom_loader.spi_flash import SIZES


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, serve until a signal, print what happened."""
    parser = argparse.ArgumentParser(
        prog="python -m pendant_hardware.rom_loader",
        description="An ESP32 in its serial bootloader on a pty, for esptool and `pendant flash`.",
    )
    parser.add_argument("--flash", type=Path, required=True, help="file holding the flash (created erased)")
    parser.add_argument("--size", choices=sorted(SIZES), default="4MB", help="flash size (default 4MB)")
    parser.add_argument("--name", default="pendant-esp32", help="board name; the MAC address derives from it")
    parser.add_argument("--json", action="store_true", help="print the port as one JSON line, for scripts")
    args = parser.parse_args(argv)
    try:
        chip = RomLoaderPty(args.flash, flash_size=SIZES[args.size], name=args.name).start()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.json:
            print(json.dumps({"port": chip.port, "flash": str(args.flash)}), flush=True)
        else:
            print(
                f"ESP32 bootloader on {chip.port} (flash {args.flash}, {args.size}); Ctrl-C to stop",
                flush=True,
            )
        stop.wait()
    finally:
        chip.stop()
    print(f"stopped; {chip.link.bytes_in} bytes in, {chip.link.bytes_out} bytes out", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
