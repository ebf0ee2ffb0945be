"""The ESP32's SPI NOR flash, kept in a file: erased bytes read 0xFF, programming can only clear bits (so
writing over data that was not erased first leaves a mix, as on the real chip), and erasing works on whole
4 KB sectors."""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

SECTOR_SIZE = 0x1000
MB = 1024 * 1024
SIZES = {"1MB": 1 * MB, "2MB": 2 * MB, "4MB": 4 * MB, "8MB": 8 * MB, "16MB": 16 * MB}


class FlashRangeError(ValueError):
    """An address range reaches outside the flash."""


class SpiFlash:
    """`size` bytes of NOR flash in `path`. A new file starts erased; an existing one keeps its contents
    (it is the device's flash across runs) and must have the same size."""

    def __init__(self, path: Path, size: int = 4 * MB) -> None:
        if size <= 0 or size % SECTOR_SIZE:
            raise ValueError(f"flash size must be a positive multiple of {SECTOR_SIZE}, not {size}")
        self.path = Path(path)
        self.size = size
        if self.path.exists():
            actual = self.path.stat().st_size
            if actual != size:
                raise ValueError(f"{self.path} holds {actual} bytes, not a {size}-byte flash")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as new:
                chunk = b"\xff" * MB
                for start in range(0, size, MB):
                    new.write(chunk[: min(MB, size - start)])
        self._fd = os.open(self.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, size)

    def close(self) -> None:
        """Write everything to the file and release it."""
        if self._map is not None:
            self._map.flush()
            self._map.close()
            os.close(self._fd)
            self._map = None  # type: ignore[assignment]

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashRangeError(
                f"{offset:#x}+{length:#x} is outside the {self.size // MB} MB flash (0x0-{self.size:#x})"
            )

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset`."""
        self._check(offset, length)
        return self._map[offset : offset + length]

    def erase(self, offset: int, length: int) -> tuple[int, int]:
        """Erase every sector that [offset, offset+length) touches; return the erased (start, end)."""
        self._check(offset, length)
        if length == 0:
            return offset, offset
        start = offset - offset % SECTOR_SIZE
        end = -(-(offset + length) // SECTOR_SIZE) * SECTOR_SIZE
        self._map[start:end] = b"\xff" * (end - start)
        return start, end

    def erase_all(self) -> None:
        """Chip erase: every byte back to 0xFF."""
        self.erase(0, self.size)

    def program(self, offset: int, data: bytes) -> bool:
        """Program `data` at `offset` (bits can only go from 1 to 0); True if the flash now holds exactly
        `data`, False if some of it was not erased before."""
        self._check(offset, len(data))
        old = self._map[offset : offset + len(data)]
        if old == b"\xff" * len(data):
            new = bytes(data)
        else:
            new = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(
                len(data), "little"
            )
        self._map[offset : offset + len(data)] = new
        return new == data

    def md5(self, offset: int, length: int) -> bytes:
        """MD5 of a region, as SPI_FLASH_MD5 computes it."""
        self._check(offset, length)
        return hashlib.md5(self._map[offset : offset + length]).digest()

    def __enter__(self) -> SpiFlash:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
