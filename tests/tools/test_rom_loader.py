"""The ESP32 bootloader emulator on its own: SLIP, the flash file, and the protocol state machine driven
packet by packet, as esptool's "Serial Protocol" documentation describes the ROM and the stub."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from pendant_hardware.rom_loader import slip
from pendant_hardware.rom_loader.esp32 import (
    CHIP_DETECT_MAGIC_REG,
    ESP32_MAGIC_VALUE,
    SPI_CMD,
    SPI_CMD_USR,
    SPI_MISO_DLEN,
    SPI_USR2,
    SPI_W0,
    UART0_CLKDIV,
    Esp32Registers,
    mac_for,
)
from pendant_hardware.rom_loader.loader import OHAI, SYNC_ANSWERS, Esp32Loader, Mode
from pendant_hardware.rom_loader.protocol import (
    SYNC_PAYLOAD,
    Op,
    RomError,
    StubError,
    build_request,
    checksum,
    parse_response,
)
from pendant_hardware.rom_loader.spi_flash import MB, FlashRangeError, SpiFlash

# -- SLIP ----------------------------------------------------------------------------------------------


def test_slip_escapes_both_special_bytes_and_round_trips() -> None:
    packet = bytes([0x01, 0xC0, 0x02, 0xDB, 0x03, 0xDB, 0xDC])
    frame = slip.encode(packet)
    assert frame == bytes([0xC0, 0x01, 0xDB, 0xDC, 0x02, 0xDB, 0xDD, 0x03, 0xDB, 0xDD, 0xDC, 0xC0])
    assert slip.Decoder().feed(frame) == [packet]


def test_slip_decoder_handles_split_frames_noise_and_empty_frames() -> None:
    decoder = slip.Decoder()
    stream = b"boot noise" + slip.encode(b"one") + b"\xc0\xc0" + slip.encode(b"tw\xc0o")
    got = []
    for i in range(0, len(stream), 3):  # arrives in small pieces, as from a UART
        got += decoder.feed(stream[i : i + 3])
    assert got == [b"one", b"tw\xc0o"]
    assert decoder.dropped == len(b"boot noise")


def test_slip_decoder_drops_a_frame_with_a_bad_escape_and_resynchronises() -> None:
    decoder = slip.Decoder()
    assert decoder.feed(b"\xc0ab\xdb\x01cd\xc0" + slip.encode(b"good")) == [b"good"]
    assert decoder.broken == 1


# -- the flash file ------------------------------------------------------------------------------------


def test_flash_starts_erased_programs_only_clear_bits_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    with SpiFlash(path, 1 * MB) as flash:
        assert flash.read(0, 4) == b"\xff" * 4
        assert flash.program(0x1000, b"\x0f\xf0") is True
        assert flash.program(0x1000, b"\xf0\xff") is False  # not erased: bits only clear
        assert flash.read(0x1000, 2) == b"\x00\xf0"
        assert flash.erase(0x1001, 1) == (0x1000, 0x2000)  # the whole sector
        assert flash.read(0x1000, 2) == b"\xff\xff"
        flash.program(0x2000, b"kept")
    with SpiFlash(path, 1 * MB) as again:
        assert again.read(0x2000, 4) == b"kept"
        assert again.md5(0x2000, 4) == hashlib.md5(b"kept").digest()
    with pytest.raises(ValueError, match="not a 2097152-byte flash"):
        SpiFlash(path, 2 * MB)


def test_flash_refuses_ranges_outside_it(tmp_path: Path) -> None:
    with SpiFlash(tmp_path / "f.bin", 1 * MB) as flash, pytest.raises(FlashRangeError, match="outside"):
        flash.program(MB - 1, b"ab")


# -- the protocol ----------------------------------------------------------------------------------------


class Host:
    """Drives an Esp32Loader packet by packet, as esptool would."""

    def __init__(self, tmp_path: Path) -> None:
        self.flash = SpiFlash(tmp_path / "flash.bin", 4 * MB)
        self.registers = Esp32Registers(mac=mac_for("test"), flash_size=4 * MB)
        self.loader = Esp32Loader(self.flash, self.registers)

    def send(self, op: int, data: bytes = b"", check: int = 0) -> list[bytes]:
        return self.loader.receive(build_request(op, data, check))

    def command(self, op: int, data: bytes = b"", check: int = 0) -> tuple[int, bytes]:
        """(value, body) of the one answer; asserts it answers the command."""
        answers = self.send(op, data, check)
        assert len(answers) == 1, answers
        answered, value, body = parse_response(answers[0])
        assert answered == op
        return value, body

    def status(self, body: bytes) -> tuple[int, int]:
        # The ROM ends its body with 4 status bytes, the stub with 2.
        tail = body[-4:-2] if self.loader.mode is Mode.ROM else body[-2:]
        return tail[0], tail[1]

    def sync(self) -> None:
        assert len(self.send(Op.SYNC, SYNC_PAYLOAD)) == SYNC_ANSWERS

    def data(self, op: int, block: bytes, seq: int, *, check: int | None = None) -> tuple[int, int]:
        payload = struct.pack("<IIII", len(block), seq, 0, 0) + block
        _, body = self.command(op, payload, checksum(block) if check is None else check)
        return self.status(body)

    def start_stub(self) -> None:
        self.command(Op.MEM_BEGIN, struct.pack("<IIII", 4, 1, 0x1800, 0x40080000))
        self.data(Op.MEM_DATA, b"code", 0)
        answers = self.send(Op.MEM_END, struct.pack("<II", 0, 0x40080000))
        assert answers[-1] == OHAI
        assert self.loader.mode is Mode.STUB


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_nothing_is_answered_before_a_correct_sync(host: Host) -> None:
    assert host.send(Op.READ_REG, struct.pack("<I", CHIP_DETECT_MAGIC_REG)) == []
    assert host.send(Op.SYNC, b"\x07\x07\x12\x20" + b"\x00" * 32) == []
    answers = host.send(Op.SYNC, SYNC_PAYLOAD)
    assert len(answers) == 8
    assert all(parse_response(answer)[1] != 0 for answer in answers)  # the ROM's non-zero value


def test_chip_detection_registers_say_esp32(host: Host) -> None:
    host.sync()
    value, body = host.command(Op.READ_REG, struct.pack("<I", CHIP_DETECT_MAGIC_REG))
    assert value == ESP32_MAGIC_VALUE
    assert body == b"\x00\x00\x00\x00"  # success, and the ROM's 2 reserved bytes
    clkdiv, _ = host.command(Op.READ_REG, struct.pack("<I", UART0_CLKDIV))
    assert round(115200 * clkdiv / 1e6) == 40  # esptool infers a 40 MHz crystal from this


def test_commands_the_rom_lacks_are_invalid_messages(host: Host) -> None:
    host.sync()
    for op in (Op.GET_SECURITY_INFO, Op.ERASE_FLASH, 0x77):
        _, body = host.command(op)
        assert host.status(body) == (1, RomError.INVALID_MESSAGE)


def test_spi_user_command_reads_the_flash_jedec_id(host: Host) -> None:
    host.sync()
    for address, value in (
        (SPI_MISO_DLEN, 23),
        (SPI_USR2, (7 << 28) | 0x9F),
        (SPI_W0, 0),
        (SPI_CMD, SPI_CMD_USR),
    ):
        host.command(Op.WRITE_REG, struct.pack("<IIII", address, value, 0xFFFFFFFF, 0))
    done, _ = host.command(Op.READ_REG, struct.pack("<I", SPI_CMD))
    assert done & SPI_CMD_USR == 0
    jedec, _ = host.command(Op.READ_REG, struct.pack("<I", SPI_W0))
    assert (jedec & 0xFF, jedec >> 16) == (0xC8, 22)  # GigaDevice, 2**22 bytes = 4 MB


def begin(host: Host, op: int, size: int, blocks: int, block_size: int, offset: int) -> tuple[int, int]:
    _, body = host.command(op, struct.pack("<IIII", size, blocks, block_size, offset))
    return host.status(body)


def test_rom_write_needs_spi_attach_then_writes_and_reports_md5_in_hex(host: Host) -> None:
    host.sync()
    assert begin(host, Op.FLASH_BEGIN, 0x1000, 1, 0x400, 0x10000) == (1, RomError.FAILED_TO_ACT)
    host.command(Op.SPI_ATTACH, b"\x00" * 8)
    assert begin(host, Op.FLASH_BEGIN, 0x1000, 1, 0x400, 0x10000) == (0, 0)
    block = bytes(range(256)) * 4
    assert host.data(Op.FLASH_DATA, block, 0) == (0, 0)
    _, body = host.command(Op.SPI_FLASH_MD5, struct.pack("<IIII", 0x10000, 0x400, 0, 0))
    assert body[:32] == hashlib.md5(block).hexdigest().encode()
    assert host.status(body) == (0, 0)


def test_rom_rejects_bad_checksum_wrong_sequence_and_unerased_flash(host: Host) -> None:
    host.sync()
    host.command(Op.SPI_ATTACH, b"\x00" * 8)
    begin(host, Op.FLASH_BEGIN, 0x1000, 2, 0x400, 0)
    assert host.data(Op.FLASH_DATA, b"\x01" * 0x400, 0, check=0) == (1, RomError.INVALID_CRC)
    assert host.data(Op.FLASH_DATA, b"\x01" * 0x400, 1) == (1, RomError.INVALID_MESSAGE)
    assert host.data(Op.FLASH_DATA, b"\x01" * 0x400, 0) == (0, 0)
    # Bypass the erase of FLASH_BEGIN: data already there cannot be programmed to ones again.
    host.loader._download.written = 0  # type: ignore[union-attr]
    assert host.data(Op.FLASH_DATA, b"\xfe" * 0x400, 1) == (1, RomError.FLASH_WRITE)


def test_compressed_download_inflates_into_flash(host: Host) -> None:
    host.sync()
    host.command(Op.SPI_ATTACH, b"\x00" * 8)
    image = b"pendant firmware " * 5000
    packed = zlib.compress(image, 9)
    blocks = [packed[i : i + 0x400] for i in range(0, len(packed), 0x400)]
    assert begin(host, Op.FLASH_DEFL_BEGIN, len(image), len(blocks), 0x400, 0x1000) == (0, 0)
    for seq, block in enumerate(blocks):
        assert host.data(Op.FLASH_DEFL_DATA, block, seq) == (0, 0)
    assert host.flash.read(0x1000, len(image)) == image
    assert host.data(Op.FLASH_DEFL_DATA, b"more", len(blocks)) == (1, RomError.DEFLATE)
    begin(host, Op.FLASH_DEFL_BEGIN, 0x1000, 1, 0x400, 0x20000)
    assert host.data(Op.FLASH_DEFL_DATA, b"\x00garbage", 0) == (1, RomError.DEFLATE)


def test_rom_read_flash_slow_returns_64_byte_blocks(host: Host) -> None:
    host.flash.program(0x3000, b"hello")
    host.sync()
    _, body = host.command(Op.READ_FLASH_SLOW, struct.pack("<II", 0x3000, 5))
    assert body[:5] == b"hello" and len(body) == 64 + 4
    _, body = host.command(Op.READ_FLASH_SLOW, struct.pack("<II", 0x3000, 65))
    assert host.status(body) == (1, RomError.FLASH_READ_LENGTH)


def test_running_uploaded_code_starts_the_stub_protocol(host: Host) -> None:
    host.sync()
    host.start_stub()
    _, body = host.command(Op.SPI_FLASH_MD5, struct.pack("<IIII", 0, 16, 0, 0))
    assert body == hashlib.md5(b"\xff" * 16).digest() + b"\x00\x00"  # raw digest, 2 status bytes
    _, body = host.command(0x77)
    assert host.status(body) == (1, StubError.CMD_NOT_IMPLEMENTED)


def test_stub_erases_the_whole_chip_and_regions(host: Host) -> None:
    host.flash.program(0x5000, b"old credentials")
    host.flash.program(0x300000, b"old filesystem")
    host.sync()
    host.start_stub()
    _, body = host.command(Op.ERASE_REGION, struct.pack("<II", 0x5000, 0x1000))
    assert host.status(body) == (0, 0)
    assert host.flash.read(0x5000, 3) == b"\xff" * 3
    _, body = host.command(Op.ERASE_REGION, struct.pack("<II", 0x5001, 0x1000))
    assert host.status(body) == (1, StubError.BAD_DATA_LEN)
    host.command(Op.ERASE_FLASH)
    assert host.flash.read(0x300000, 14) == b"\xff" * 14


def test_stub_read_flash_sends_packets_as_the_host_acknowledges_them(host: Host) -> None:
    content = bytes(range(256)) * 40  # 10240 bytes
    host.flash.program(0x2000, content)
    host.sync()
    host.start_stub()
    answers = host.send(Op.READ_FLASH, struct.pack("<IIII", 0x2000, len(content), 4096, 2))
    assert parse_response(answers[0])[2] == b"\x00\x00"
    received = b"".join(answers[1:])
    assert received == content[:8192]  # two packets in flight, then it waits
    more = host.loader.receive((4096).to_bytes(4, "little"))
    received += b"".join(more)
    assert received == content
    digest = host.loader.receive(len(content).to_bytes(4, "little"))
    assert digest == [hashlib.md5(content).digest()]


def test_change_baudrate_moves_the_uart_divider(host: Host) -> None:
    host.sync()
    host.command(Op.CHANGE_BAUDRATE, struct.pack("<II", 921600, 0))
    clkdiv, _ = host.command(Op.READ_REG, struct.pack("<I", UART0_CLKDIV))
    assert round(921600 * clkdiv / 1e6) == 40
