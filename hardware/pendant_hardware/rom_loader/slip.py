"""SLIP framing as the ESP32 serial bootloader uses it: every packet between two 0xC0 bytes, with 0xC0 and
0xDB inside escaped as 0xDB 0xDC and 0xDB 0xDD (esptool docs, "Serial Protocol", low level protocol)."""

from __future__ import annotations

import re

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD


def encode(packet: bytes) -> bytes:
    """One SLIP frame around `packet`, escaped, with 0xC0 at both ends."""
    body = packet.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(bytes([END]), bytes([ESC, ESC_END]))
    return bytes([END]) + body + bytes([END])


class SlipError(ValueError):
    """A frame broke the escaping rules (0xDB followed by anything but 0xDC or 0xDD)."""


_ESCAPE = re.compile(rb"\xdb(.?)", re.DOTALL)
_UNESCAPED = {bytes([ESC_END]): bytes([END]), bytes([ESC_ESC]): bytes([ESC])}


def decode(frame: bytes) -> bytes:
    """The packet inside one frame's bytes (between its 0xC0s); SlipError on a bad escape."""
    if ESC not in frame:
        return frame

    def unescape(found: re.Match[bytes]) -> bytes:
        try:
            return _UNESCAPED[found.group(1)]
        except KeyError:
            raise SlipError(f"0xDB followed by {found.group(1).hex() or 'the end of the frame'}") from None

    return _ESCAPE.sub(unescape, frame)


class Decoder:
    """Turns a byte stream into packets. Bytes before the first 0xC0 (line noise, a boot banner) are
    dropped; after that every 0xC0 ends one packet and starts the next, and an empty packet (two 0xC0 in a
    row, as between esptool's frames) yields nothing. A frame with a bad escape is dropped whole."""

    def __init__(self) -> None:
        self._frame = b""
        self._in_frame = False
        self.dropped = 0  # bytes seen before the first frame
        self.broken = 0  # frames discarded for a bad escape

    def feed(self, data: bytes) -> list[bytes]:
        """Packets completed by `data`, in order."""
        if not self._in_frame:
            start = data.find(END)
            if start < 0:
                self.dropped += len(data)
                return []
            self.dropped += start
            data = data[start + 1 :]
            self._in_frame = True
        *complete, self._frame = (self._frame + bytes(data)).split(bytes([END]))
        packets = []
        for frame in complete:
            if not frame:
                continue
            try:
                packets.append(decode(frame))
            except SlipError:
                self.broken += 1
        return packets
