"""A stand-in for MicroPython's ESP32 firmware .bin, for tests and benchmarks: laid out as the real merged
image (second-stage bootloader at its start, partition table at +0x7000, application at +0xF000, written
at flash offset 0x1000), with valid ESP image headers for the ESP32 (magic 0xE9, chip id 0) and content
that deflates about as well as real firmware (to ~2/3). It does not run: the emulator never executes it."""

from __future__ import annotations

import random
import struct

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
PARTITION_TABLE_AT = 0x7000  # 0x8000 in flash
APP_AT = 0xF000  # 0x10000 in flash


def _esp_image(segments: list[tuple[int, bytes]], entry: int) -> bytes:
    """An ESP32 app/bootloader image: 8-byte header, 16-byte extended header (chip id 0 = ESP32), the
    segments (load address, length, data), then the checksum byte at the end of a 16-byte block."""
    header = struct.pack("<BBBBI", IMAGE_MAGIC, len(segments), 0x02, 0x20, entry)  # DIO, 4 MB, 40 MHz
    extended = struct.pack("<B3sHBHH4sB", 0xEE, b"\x00\x00\x00", 0, 0, 0, 0, b"\x00" * 4, 0)
    body = bytearray(header + extended)
    check = CHECKSUM_SEED
    for address, data in segments:
        body += struct.pack("<II", address, len(data)) + data
        for byte in data:
            check ^= byte
    body += b"\x00" * (15 - len(body) % 16) + bytes([check])
    return bytes(body)


def _code_like(rng: random.Random, size: int) -> bytes:
    """Bytes with the statistics of compiled code: a skewed vocabulary of short words, some noise."""
    vocabulary = [bytes(rng.randrange(256) for _ in range(rng.choice((2, 3, 3, 4)))) for _ in range(1500)]
    out = bytearray()
    while len(out) < size:
        out += vocabulary[min(int(rng.expovariate(1 / 150)), len(vocabulary) - 1)]
        if rng.random() < 0.25:
            out.append(rng.randrange(256))
    return bytes(out[:size])


def micropython_like_image(size: int = 1_600_000, seed: int = 1) -> bytes:
    """A merged ESP32 firmware image of exactly `size` bytes (at least 0x10000)."""
    if size < APP_AT + 0x1000:
        raise ValueError(f"an image with an application needs at least {APP_AT + 0x1000} bytes")
    rng = random.Random(seed)
    bootloader = _esp_image([(0x3FFF0000, _code_like(rng, 0x5000))], entry=0x40080400)
    partitions = bytearray(b"\xff" * 0xC00)
    for index, (kind, subtype, offset, length, label) in enumerate(
        [
            (1, 2, 0x9000, 0x6000, b"nvs"),
            (1, 1, 0xF000, 0x1000, b"phy_init"),
            (0, 0, 0x10000, 0x1F0000, b"factory"),
            (1, 0x81, 0x200000, 0x200000, b"vfs"),
        ]
    ):
        entry = struct.pack("<HBBII16sI", 0x50AA, kind, subtype, offset, length, label, 0)
        partitions[index * 32 : index * 32 + 32] = entry
    app_size = size - APP_AT
    segment = _code_like(rng, app_size - 24 - 8 - 16)
    app = _esp_image([(0x3F400020, segment)], entry=0x40081000)[:app_size]
    image = bytearray(b"\xff" * size)
    image[: len(bootloader)] = bootloader
    image[PARTITION_TABLE_AT : PARTITION_TABLE_AT + len(partitions)] = partitions
    image[APP_AT : APP_AT + len(app)] = app
    return bytes(image)
