"""An ESP32 serial-bootloader emulator on a pseudo-terminal, so the real esptool can flash and verify a
"pendant" without hardware. `RomLoaderPty` is the entry point; `python -m pendant_hardware.rom_loader`
runs one by hand.

| module | one job |
|---|---|
| `slip.py` | SLIP framing (pure) |
| `protocol.py` | command and error codes, packet layouts, the data checksum (pure) |
| `spi_flash.py` | the NOR flash in a file: erase to 0xFF, program clears bits, MD5 |
| `esp32.py` | the ESP32's registers: chip magic, eFuses (MAC, revision), UART divider, SPI flash commands |
| `loader.py` | the ROM loader and flasher-stub protocol as a state machine (pure) |
| `pty_server.py` | serves the loader on a pty pair from a thread |
"""

from pendant_hardware.rom_loader.loader import Esp32Loader, Mode
from pendant_hardware.rom_loader.pty_server import RomLoaderPty
from pendant_hardware.rom_loader.spi_flash import SpiFlash

__all__ = ["Esp32Loader", "Mode", "RomLoaderPty", "SpiFlash"]
