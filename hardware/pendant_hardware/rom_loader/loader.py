"""The ESP32 serial bootloader as a state machine: request packets in, response packets out. Pure (no I/O):
`Esp32Loader.receive(packet)` returns the packets to send back, so tests drive it directly and the pty
server only moves bytes.

It answers as the ESP32 ROM loader does (4 status bytes, MD5 as 32 hex digits, 64-byte READ_FLASH_SLOW,
"invalid message" for commands the ROM lacks). When a host uploads a program to RAM and runs it
(MEM_BEGIN/MEM_DATA/MEM_END with an entry point, which is how esptool starts its flasher stub), the
emulator does not execute the code: it greets with OHAI and from then on answers as esptool's documented
flasher stub (2 status bytes, raw MD5, ERASE_FLASH, ERASE_REGION, READ_FLASH with acknowledgements).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pendant_hardware.rom_loader.esp32 import Esp32Registers
from pendant_hardware.rom_loader.protocol import (
    DATA_HEADER,
    STUB_ONLY,
    SYNC_PAYLOAD,
    Op,
    Request,
    RomError,
    StubError,
    build_response,
    checksum,
    parse_request,
)
from pendant_hardware.rom_loader.spi_flash import SECTOR_SIZE, FlashRangeError, SpiFlash

log = logging.getLogger(__name__)

SYNC_VALUE = 0x55201207  # the value field of the ROM's SYNC answers (esptool docs, trace example)
SYNC_ANSWERS = 8  # the ROM answers each SYNC 8 times; esptool reads all of them
READ_SLOW_BLOCK = 64
OHAI = b"OHAI"


class Mode(Enum):
    """Who answers: the ROM loader, the flasher stub (after it was uploaded and started), or nobody (the
    chip left the loader to run the application in flash)."""

    ROM = "rom"
    STUB = "stub"
    APP = "app"


class CommandFailed(Exception):
    """Answer the current command with status 1 and this error byte."""

    def __init__(self, rom_error: RomError, stub_error: StubError, reason: str) -> None:
        super().__init__(reason)
        self.rom_error = rom_error
        self.stub_error = stub_error


def _invalid(reason: str) -> CommandFailed:
    return CommandFailed(RomError.INVALID_MESSAGE, StubError.BAD_DATA_LEN, reason)


def _not_now(reason: str) -> CommandFailed:
    return CommandFailed(RomError.FAILED_TO_ACT, StubError.NOT_IN_FLASH_MODE, reason)


@dataclass
class _Download:
    """An open FLASH_BEGIN/FLASH_DEFL_BEGIN or MEM_BEGIN: where the next bytes go and what is expected."""

    kind: str  # "flash", "deflate" or "mem"
    address: int
    blocks: int
    block_size: int
    limit: int  # bytes the host announced (flash: erase size or uncompressed size)
    next_seq: int = 0
    written: int = 0
    inflater: zlib._Decompress | None = None
    ram: bytearray = field(default_factory=bytearray)


@dataclass
class _FlashRead:
    """A stub READ_FLASH in progress: data packets go out while the host acknowledges them."""

    address: int
    length: int
    packet_size: int
    max_unacked: int
    sent: int = 0
    acked: int = 0


@dataclass
class LoaderStats:
    """What happened, for tests, logs and the benchmark."""

    commands: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    flash_bytes_written: int = 0
    erased_bytes: int = 0
    chip_erases: int = 0


class Esp32Loader:
    """One ESP32 held in its serial bootloader (GPIO0 low at reset), with `flash` as its SPI flash."""

    def __init__(
        self,
        flash: SpiFlash,
        registers: Esp32Registers,
        *,
        on_baud_change: Callable[[int], None] | None = None,
        line_baud: Callable[[], int | None] | None = None,
    ) -> None:
        self.flash = flash
        self.registers = registers
        self.on_baud_change = on_baud_change
        self.line_baud = line_baud  # the rate the host's side of the line is set to, if known
        self.stats = LoaderStats()
        self.reset()

    def reset(self) -> None:
        """A reset with GPIO0 held low: back in the ROM loader at 115200 baud, not yet synchronised."""
        self.mode = Mode.ROM
        self.synced = False
        self.spi_attached = False
        self.flash_params_size: int | None = None
        self.baud = 115200
        self.registers.baud = self.baud
        self._download: _Download | None = None
        self._read: _FlashRead | None = None

    # -- the one entry point -------------------------------------------------------------------------

    def receive(self, packet: bytes) -> list[bytes]:
        """Handle one packet (SLIP already removed); return the packets to send, in order."""
        if self.mode is Mode.APP:
            return []  # the application runs; it does not speak this protocol
        if self._read is not None:
            return self._acknowledge_read(packet)
        request = parse_request(packet)
        if request is None:
            return []  # noise: the ROM ignores what is not a request
        if request.op == Op.SYNC:
            return self._sync(request)
        if not self.synced and self.mode is Mode.ROM:
            return []  # the UART has not found the baud rate yet
        name = Op(request.op).name if request.op in Op._value2member_map_ else f"{request.op:#04x}"
        self.stats.commands[name] = self.stats.commands.get(name, 0) + 1
        handler = self._handlers().get(request.op)
        if handler is None or (self.mode is Mode.ROM and request.op in STUB_ONLY):
            return [self._failure(request.op, RomError.INVALID_MESSAGE, StubError.CMD_NOT_IMPLEMENTED)]
        try:
            if not request.size_ok:
                raise _invalid("the size field does not match the data")
            return handler(request)
        except CommandFailed as failed:
            self.stats.failures.append(f"{name}: {failed}")
            log.info("rom loader: %s failed: %s", name, failed)
            return [self._failure(request.op, failed.rom_error, failed.stub_error)]
        except ValueError as exc:  # too few parameter words
            self.stats.failures.append(f"{name}: {exc}")
            return [self._failure(request.op, RomError.INVALID_MESSAGE, StubError.BAD_DATA_LEN)]

    def _handlers(self) -> dict[int, Callable[[Request], list[bytes]]]:
        return {
            Op.READ_REG: self._read_reg,
            Op.WRITE_REG: self._write_reg,
            Op.SPI_ATTACH: self._spi_attach,
            Op.SPI_SET_PARAMS: self._spi_set_params,
            Op.CHANGE_BAUDRATE: self._change_baudrate,
            Op.FLASH_BEGIN: self._flash_begin,
            Op.FLASH_DATA: self._flash_data,
            Op.FLASH_END: self._flash_end,
            Op.FLASH_DEFL_BEGIN: self._flash_begin,
            Op.FLASH_DEFL_DATA: self._flash_data,
            Op.FLASH_DEFL_END: self._flash_end,
            Op.SPI_FLASH_MD5: self._md5,
            Op.READ_FLASH_SLOW: self._read_flash_slow,
            Op.MEM_BEGIN: self._mem_begin,
            Op.MEM_DATA: self._mem_data,
            Op.MEM_END: self._mem_end,
            Op.ERASE_FLASH: self._erase_flash,
            Op.ERASE_REGION: self._erase_region,
            Op.READ_FLASH: self._read_flash,
            Op.RUN_USER_CODE: self._run_user_code,
        }

    # -- responses -----------------------------------------------------------------------------------

    def _status(self, error: int = 0) -> bytes:
        # The ESP32 ROM sends 4 status bytes (status, error, 2 reserved); the stub sends 2.
        status = bytes([1 if error else 0, error])
        return status + b"\x00\x00" if self.mode is Mode.ROM else status

    def _ok(self, op: int, payload: bytes = b"", value: int = 0) -> bytes:
        return build_response(op, payload + self._status(), value)

    def _failure(self, op: int, rom_error: RomError, stub_error: StubError) -> bytes:
        error = rom_error if self.mode is Mode.ROM else stub_error
        return build_response(op, self._status(int(error)))

    # -- commands ------------------------------------------------------------------------------------

    def _sync(self, request: Request) -> list[bytes]:
        if request.data != SYNC_PAYLOAD:
            return []
        self.synced = True
        if self.mode is Mode.ROM and self.line_baud is not None:
            # The ROM's UART detects the baud rate from the SYNC frame's 0x55 bytes, whatever it ran at.
            detected = self.line_baud()
            if detected:
                self.baud = detected
                self.registers.baud = detected
        value = SYNC_VALUE if self.mode is Mode.ROM else 0  # esptool tells the stub by value 0
        return [self._ok(Op.SYNC, value=value)] * SYNC_ANSWERS

    def _read_reg(self, request: Request) -> list[bytes]:
        (address,) = request.words(1)
        return [self._ok(request.op, value=self.registers.read(address))]

    def _write_reg(self, request: Request) -> list[bytes]:
        if not request.data or len(request.data) % 16:
            raise _invalid("WRITE_REG takes groups of address, value, mask, delay")
        for address, value, mask, _delay in struct.iter_unpack("<IIII", request.data):
            self.registers.write(address, value, mask)
        return [self._ok(request.op)]

    def _spi_attach(self, request: Request) -> list[bytes]:
        # The ROM takes 8 bytes (pin config and a zero word), the stub 4.
        expected = 8 if self.mode is Mode.ROM else 4
        if len(request.data) != expected:
            raise _invalid(f"SPI_ATTACH takes {expected} bytes here, not {len(request.data)}")
        self.spi_attached = True
        return [self._ok(request.op)]

    def _spi_set_params(self, request: Request) -> list[bytes]:
        _id, total_size, _block, sector, _page, _mask = request.words(6)
        if sector != SECTOR_SIZE:
            raise _invalid(f"sector size {sector:#x} is not the flash's {SECTOR_SIZE:#x}")
        self.flash_params_size = total_size
        return [self._ok(request.op)]

    def _change_baudrate(self, request: Request) -> list[bytes]:
        new, _old = request.words(2)
        if not 300 <= new <= 5_000_000:
            raise _invalid(f"baud rate {new} is out of range")
        answer = self._ok(request.op)  # sent at the old rate, then the UART switches
        self.baud = new
        self.registers.baud = new
        if self.on_baud_change is not None:
            self.on_baud_change(new)
        return [answer]

    def _require_flash(self) -> None:
        if not self.spi_attached:
            raise _not_now("the SPI flash is not attached (send SPI_ATTACH first)")

    def _flash_begin(self, request: Request) -> list[bytes]:
        self._require_flash()
        # ESP32 ROM: 4 words; the stub takes a 5th (encrypted write), which this flash does not support.
        size, blocks, block_size, offset = request.words(4)
        if len(request.data) == 20 and request.words(5)[4] != 0:
            raise CommandFailed(RomError.FAILED_TO_ACT, StubError.FAILED_SPI_OP, "no flash encryption")
        if blocks and not block_size:
            raise _invalid("a block size of 0")
        try:
            # The ROM erases the whole region now; the stub erases as it writes. Either way, what ends up
            # erased is every sector the download touches, so erase it up front.
            start, end = self.flash.erase(offset, size)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FAILED_TO_ACT, StubError.FAILED_SPI_OP, str(exc)) from None
        self.stats.erased_bytes += end - start
        deflate = request.op == Op.FLASH_DEFL_BEGIN
        self._download = _Download(
            kind="deflate" if deflate else "flash",
            address=offset,
            blocks=blocks,
            block_size=block_size,
            limit=size,
            inflater=zlib.decompressobj() if deflate else None,
        )
        return [self._ok(request.op)]

    def _data_block(self, request: Request, kind: str) -> tuple[_Download, bytes]:
        """Check a *_DATA request against the open download; return it and the block's bytes."""
        download = self._download
        if download is None or download.kind != kind:
            raise _not_now(f"{Op(request.op).name} without its BEGIN")
        if len(request.data) < DATA_HEADER.size:
            raise _invalid("a data block has a 16-byte header")
        size, seq, _, _ = DATA_HEADER.unpack_from(request.data)
        block = request.data[DATA_HEADER.size :]
        if size != len(block):
            raise _invalid(f"the block says {size} bytes but carries {len(block)}")
        if size > download.block_size:
            raise CommandFailed(RomError.INVALID_MESSAGE, StubError.BAD_BLOCKSIZE, "block too large")
        if checksum(block) != request.checksum & 0xFF:
            raise CommandFailed(RomError.INVALID_CRC, StubError.BAD_DATA_CHECKSUM, f"bad checksum, seq {seq}")
        if seq != download.next_seq:
            raise _invalid(f"sequence {seq}, expected {download.next_seq}")
        return download, block

    def _flash_data(self, request: Request) -> list[bytes]:
        kind = "deflate" if request.op == Op.FLASH_DEFL_DATA else "flash"
        download, block = self._data_block(request, kind)
        if download.inflater is not None:
            try:
                block = download.inflater.decompress(block)
            except zlib.error as exc:
                raise CommandFailed(RomError.DEFLATE, StubError.INFLATE_ERROR, f"inflate: {exc}") from None
            if download.inflater.unused_data:
                raise CommandFailed(
                    RomError.DEFLATE, StubError.INFLATE_ERROR, "data after the end of the stream"
                )
            if self.mode is Mode.STUB and download.written + len(block) > download.limit:
                raise CommandFailed(RomError.DEFLATE, StubError.TOO_MUCH_DATA, "more data than announced")
        address = download.address + download.written
        try:
            exact = self.flash.program(address, block)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FAILED_TO_ACT, StubError.FAILED_SPI_OP, str(exc)) from None
        download.written += len(block)
        download.next_seq += 1
        self.stats.flash_bytes_written += len(block)
        if not exact:
            # The ROM reads each block back after writing it and compares.
            raise CommandFailed(
                RomError.FLASH_WRITE, StubError.FAILED_SPI_OP, f"verify failed at {address:#x}"
            )
        return [self._ok(request.op)]

    def _flash_end(self, request: Request) -> list[bytes]:
        (stay,) = request.words(1)  # 0: reboot; 1: run the application (ROM) or stay (stub)
        self._download = None
        answer = [self._ok(request.op)]
        if self.mode is Mode.ROM:
            self.mode = Mode.APP  # the ROM leaves the loader either way (GPIO0 is no longer held)
        elif not stay:
            self.reset()  # a soft reset from the stub starts the ROM loader again (esptool's no-reset)
        return answer

    def _md5(self, request: Request) -> list[bytes]:
        address, size, _, _ = request.words(4)
        try:
            digest = self.flash.md5(address, size)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FLASH_READ, StubError.FAILED_SPI_OP, str(exc)) from None
        payload = digest.hex().encode() if self.mode is Mode.ROM else digest
        return [self._ok(request.op, payload)]

    def _read_flash_slow(self, request: Request) -> list[bytes]:
        if self.mode is not Mode.ROM:
            return [self._failure(request.op, RomError.INVALID_MESSAGE, StubError.CMD_NOT_IMPLEMENTED)]
        address, length = request.words(2)
        if length > READ_SLOW_BLOCK:
            raise CommandFailed(RomError.FLASH_READ_LENGTH, StubError.BAD_DATA_LEN, f"{length} > 64 bytes")
        try:
            data = self.flash.read(address, length)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FLASH_READ, StubError.FAILED_SPI_OP, str(exc)) from None
        return [self._ok(request.op, data.ljust(READ_SLOW_BLOCK, b"\x00"))]

    def _mem_begin(self, request: Request) -> list[bytes]:
        size, blocks, block_size, address = request.words(4)
        self._download = _Download(
            kind="mem", address=address, blocks=blocks, block_size=block_size, limit=size
        )
        return [self._ok(request.op)]

    def _mem_data(self, request: Request) -> list[bytes]:
        download, block = self._data_block(request, "mem")
        if len(download.ram) + len(block) > download.limit:
            raise _invalid("more RAM data than MEM_BEGIN announced")
        download.ram += block
        download.next_seq += 1
        return [self._ok(request.op)]

    def _mem_end(self, request: Request) -> list[bytes]:
        stay, entry = request.words(2)
        self._download = None
        answer = [self._ok(request.op)]
        if stay == 0 and entry:
            # Running uploaded code: what esptool uploads is its flasher stub, which attaches the SPI flash
            # itself and greets with OHAI.
            self.mode = Mode.STUB
            self.spi_attached = True
            return [*answer, OHAI]
        return answer

    def _erase_flash(self, request: Request) -> list[bytes]:
        self._require_flash()
        self.flash.erase_all()
        self.stats.chip_erases += 1
        self.stats.erased_bytes += self.flash.size
        return [self._ok(request.op)]

    def _erase_region(self, request: Request) -> list[bytes]:
        self._require_flash()
        offset, size = request.words(2)
        if offset % SECTOR_SIZE or size % SECTOR_SIZE:
            raise _invalid("erase offset and size must be multiples of the 4 KB sector")
        try:
            self.flash.erase(offset, size)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FAILED_TO_ACT, StubError.FAILED_SPI_OP, str(exc)) from None
        self.stats.erased_bytes += size
        return [self._ok(request.op)]

    def _read_flash(self, request: Request) -> list[bytes]:
        self._require_flash()
        address, length, packet_size, max_unacked = request.words(4)
        if not packet_size or not max_unacked:
            raise _invalid("packet size and packets in flight must not be 0")
        try:
            self.flash.read(address, length)
        except FlashRangeError as exc:
            raise CommandFailed(RomError.FLASH_READ, StubError.FAILED_SPI_OP, str(exc)) from None
        self._read = _FlashRead(address, length, packet_size, max_unacked)
        return [self._ok(request.op), *self._send_read_packets()]

    def _send_read_packets(self) -> list[bytes]:
        read = self._read
        assert read is not None
        packets = []
        while read.sent < read.length and (read.sent - read.acked) < read.packet_size * read.max_unacked:
            size = min(read.packet_size, read.length - read.sent)
            packets.append(self.flash.read(read.address + read.sent, size))
            read.sent += size
        return packets

    def _acknowledge_read(self, packet: bytes) -> list[bytes]:
        read = self._read
        assert read is not None
        if len(packet) != 4:
            self._read = None  # the host gave up; back to commands
            return self.receive(packet)
        read.acked = max(read.acked, int.from_bytes(packet, "little"))
        if read.acked >= read.length:
            self._read = None
            return [self.flash.md5(read.address, read.length)]
        return self._send_read_packets()

    def _run_user_code(self, request: Request) -> list[bytes]:
        self.mode = Mode.APP
        return []
