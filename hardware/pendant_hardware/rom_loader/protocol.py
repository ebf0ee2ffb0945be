"""The serial bootloader's packets: command codes, error codes, the request and response layouts and the
data checksum, as esptool's documentation ("Serial Protocol") describes them. Pure: no I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class Op(IntEnum):
    """Command codes. The ESP32 ROM answers the first group; the flasher stub also the 0xD* group."""

    FLASH_BEGIN = 0x02
    FLASH_DATA = 0x03
    FLASH_END = 0x04
    MEM_BEGIN = 0x05
    MEM_END = 0x06
    MEM_DATA = 0x07
    SYNC = 0x08
    WRITE_REG = 0x09
    READ_REG = 0x0A
    SPI_SET_PARAMS = 0x0B
    SPI_ATTACH = 0x0D
    READ_FLASH_SLOW = 0x0E
    CHANGE_BAUDRATE = 0x0F
    FLASH_DEFL_BEGIN = 0x10
    FLASH_DEFL_DATA = 0x11
    FLASH_DEFL_END = 0x12
    SPI_FLASH_MD5 = 0x13
    GET_SECURITY_INFO = 0x14  # not on the ESP32 ROM: it answers "invalid message"
    ERASE_FLASH = 0xD0
    ERASE_REGION = 0xD1
    READ_FLASH = 0xD2
    RUN_USER_CODE = 0xD3


STUB_ONLY = frozenset({Op.ERASE_FLASH, Op.ERASE_REGION, Op.READ_FLASH, Op.RUN_USER_CODE})


class RomError(IntEnum):
    """Error byte of a failed ROM loader response."""

    INVALID_MESSAGE = 0x05  # parameters or length field invalid; also "unsupported command"
    FAILED_TO_ACT = 0x06
    INVALID_CRC = 0x07
    FLASH_WRITE = 0x08  # what was read back after a write differs from what was sent
    FLASH_READ = 0x09
    FLASH_READ_LENGTH = 0x0A
    DEFLATE = 0x0B


class StubError(IntEnum):
    """Error byte of a failed flasher-stub response (all 0xC*, or 0xFF for an unknown command)."""

    BAD_DATA_LEN = 0xC0
    BAD_DATA_CHECKSUM = 0xC1
    BAD_BLOCKSIZE = 0xC2
    INVALID_COMMAND = 0xC3
    FAILED_SPI_OP = 0xC4
    NOT_IN_FLASH_MODE = 0xC6
    INFLATE_ERROR = 0xC7
    TOO_MUCH_DATA = 0xC9
    CMD_NOT_IMPLEMENTED = 0xFF


SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
CHECKSUM_SEED = 0xEF
_HEADER = struct.Struct("<BBHI")  # direction, command, size, checksum (requests) or value (responses)
DATA_HEADER = struct.Struct("<IIII")  # size, sequence, 0, 0 before the bytes of a *_DATA command


def checksum(data: bytes) -> int:
    """The 8-bit checksum of a *_DATA payload: 0xEF XOR every byte."""
    value = CHECKSUM_SEED
    for byte in data:
        value ^= byte
    return value


@dataclass(frozen=True)
class Request:
    """A command from the host: its code (an int, as unknown codes must be answered too), the checksum
    field and the data that follows the 8-byte header."""

    op: int
    checksum: int
    data: bytes
    size_ok: bool  # the header's size field matched the data that came

    def words(self, count: int) -> tuple[int, ...]:
        """The first `count` little-endian 32-bit words of the data (ValueError if it is shorter)."""
        if len(self.data) < 4 * count:
            raise ValueError(f"expected {4 * count} bytes of parameters, got {len(self.data)}")
        return struct.unpack_from(f"<{count}I", self.data)


def parse_request(packet: bytes) -> Request | None:
    """The request in a SLIP packet, or None if it is not one (too short, or not direction 0x00)."""
    if len(packet) < _HEADER.size:
        return None
    direction, op, size, check = _HEADER.unpack_from(packet)
    if direction != 0x00:
        return None
    data = packet[_HEADER.size :]
    return Request(op=op, checksum=check, data=data, size_ok=size == len(data))


def build_response(op: int, body: bytes, value: int = 0) -> bytes:
    """A response packet (before SLIP framing): direction 0x01, the command, the body's size, `value`."""
    return _HEADER.pack(0x01, op, len(body), value & 0xFFFFFFFF) + body


def build_request(op: int, data: bytes = b"", check: int = 0) -> bytes:
    """A request packet as a host sends it (tests and the benchmark's baseline use this)."""
    return _HEADER.pack(0x00, op, len(data), check) + data


def parse_response(packet: bytes) -> tuple[int, int, bytes]:
    """(command, value, body) of a response packet; ValueError if it is not one."""
    if len(packet) < _HEADER.size:
        raise ValueError("a response has at least 8 bytes")
    direction, op, size, value = _HEADER.unpack_from(packet)
    if direction != 0x01:
        raise ValueError(f"a response starts with 0x01, not {direction:#04x}")
    return op, value, packet[_HEADER.size :]
