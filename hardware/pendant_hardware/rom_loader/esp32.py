"""The registers of an ESP32 (ESP32-D0WD-V3, revision v3.1, 40 MHz crystal) that a host reads through the
ROM loader's READ_REG/WRITE_REG: the chip-detection magic value, the eFuse words (MAC address, package,
revision, features), the UART clock divider (from which esptool infers the crystal) and the SPI1
peripheral's user-command registers (how esptool asks the flash chip for its JEDEC id and status).

Addresses and values are those of esptool's ESP32 target and the ESP32 technical reference manual;
registers this model does not know read as 0 and ignore writes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

CHIP_DETECT_MAGIC_REG = 0x40001000
ESP32_MAGIC_VALUE = 0x00F01D83  # what an ESP32's ROM holds at CHIP_DETECT_MAGIC_REG

EFUSE_RD_BASE = 0x3FF5A000  # EFUSE_BLK0_RDATA0..6
APB_CTL_DATE = 0x3FF6607C
UART0_CLKDIV = 0x3FF40014
RTC_CALI_CFG1 = 0x3FF5F06C  # TIMERS_RTC_CALI_VALUE in bits 7..31

SPI1_BASE = 0x3FF42000
SPI_CMD = SPI1_BASE + 0x00
SPI_ADDR = SPI1_BASE + 0x04
SPI_USR = SPI1_BASE + 0x1C
SPI_USR1 = SPI1_BASE + 0x20
SPI_USR2 = SPI1_BASE + 0x24
SPI_MOSI_DLEN = SPI1_BASE + 0x28
SPI_MISO_DLEN = SPI1_BASE + 0x2C
SPI_W0 = SPI1_BASE + 0x80
SPI_W_COUNT = 16
SPI_CMD_USR = 1 << 18  # start a user command; the hardware clears it when the command is done

# SPI NOR commands the model answers (JEDEC): read id, status registers 1..3, SFDP, write enable/disable.
RDID, RDSR, RDSR2, RDSR3, RDSFDP, WREN, WRDI, WRSR = 0x9F, 0x05, 0x35, 0x15, 0x5A, 0x06, 0x04, 0x01

ESPRESSIF_OUI = bytes.fromhex("240ac4")
GIGADEVICE = 0xC8


def jedec_id(flash_size: int, manufacturer: int = GIGADEVICE, memory_type: int = 0x40) -> int:
    """The 24-bit RDID answer (manufacturer, type, capacity = log2 of the size in bytes) as esptool reads
    it from SPI_W0: manufacturer in the low byte."""
    capacity = flash_size.bit_length() - 1
    return manufacturer | (memory_type << 8) | (capacity << 16)


def mac_for(seed: str) -> bytes:
    """A stable MAC address in Espressif's range, different for every seed (the emulated board's name)."""
    return ESPRESSIF_OUI + hashlib.sha256(seed.encode()).digest()[:3]


class Esp32Registers:
    """READ_REG/WRITE_REG of one ESP32. `baud` is what the ROM's UART runs at (CHANGE_BAUDRATE sets it);
    the UART clock divider follows it, as on the chip."""

    crystal_hz = 40_000_000

    def __init__(self, *, mac: bytes, flash_size: int, baud: int = 115200) -> None:
        if len(mac) != 6:
            raise ValueError("a MAC address has 6 bytes")
        self.mac = mac
        self.baud = baud
        self.flash_id = jedec_id(flash_size)
        self._spi_status = 0
        self._memory: dict[int, int] = {
            CHIP_DETECT_MAGIC_REG: ESP32_MAGIC_VALUE,
            **self._efuses(),
            APB_CTL_DATE: 1 << 31,  # revision bit 2 of a v3 chip
            # The ROM's calibration of its 8 MHz clock against the crystal: with eFuse word 4's CK8M
            # code 100, esptool computes 1024 * 15625 * 100 / 40 = exactly 40 MHz from it (it scales
            # the ROM's CHANGE_BAUDRATE argument by that estimate).
            RTC_CALI_CFG1: 1024 << 7,
        }
        self._readers: dict[int, Callable[[], int]] = {UART0_CLKDIV: self._uart_clkdiv}
        self.spi_commands: list[int] = []  # every SPI flash command run, for tests

    def _efuses(self) -> dict[int, int]:
        # BLK0 word 1: MAC bytes 2..5; word 2: MAC bytes 0..1 in its low half (esptool's read_mac).
        word1 = int.from_bytes(self.mac[2:6], "big")
        word2 = int.from_bytes(self.mac[0:2], "big")
        # Word 3: package 1 (D0WD) in bits 9..11, revision bit 0 (bit 15), 240 MHz rated (bit 13 set,
        # bit 12 clear). Word 5: revision bit 1 (bit 20), minor revision 1 (bits 24..25).
        word3 = (1 << 9) | (1 << 15) | (1 << 13)
        word5 = (1 << 20) | (1 << 24)
        word4 = 100  # EFUSE_RD_CK8M_FREQ
        return {
            EFUSE_RD_BASE + 4: word1,
            EFUSE_RD_BASE + 8: word2,
            EFUSE_RD_BASE + 12: word3,
            EFUSE_RD_BASE + 16: word4,
            EFUSE_RD_BASE + 20: word5,
        }

    def _uart_clkdiv(self) -> int:
        return round(self.crystal_hz / self.baud) & 0xFFFFF

    def read(self, address: int) -> int:
        """The 32-bit value at `address` (0 for what the model does not know)."""
        reader = self._readers.get(address)
        if reader is not None:
            return reader()
        return self._memory.get(address, 0)

    def write(self, address: int, value: int, mask: int = 0xFFFFFFFF) -> None:
        """Write the bits of `value` selected by `mask`; starting a SPI user command runs it."""
        old = self.read(address)
        self._memory[address] = (old & ~mask | value & mask) & 0xFFFFFFFF
        if address == SPI_CMD and self._memory[address] & SPI_CMD_USR:
            self._run_spi_command()
            self._memory[SPI_CMD] &= ~SPI_CMD_USR

    def _run_spi_command(self) -> None:
        command = self._memory.get(SPI_USR2, 0) & 0xFF
        self.spi_commands.append(command)
        miso_bits = (self._memory.get(SPI_MISO_DLEN, 0) & 0xFFFFFF) + 1
        answers = {
            RDID: self.flash_id,
            RDSR: self._spi_status & 0xFF,
            RDSR2: (self._spi_status >> 8) & 0xFF,
            RDSR3: 0,
            RDSFDP: 0,
        }
        if command == WRSR:
            self._spi_status = self._memory.get(SPI_W0, 0) & 0xFFFF
        if command in answers:
            mask = (1 << min(miso_bits, 32)) - 1
            self._memory[SPI_W0] = answers[command] & mask
