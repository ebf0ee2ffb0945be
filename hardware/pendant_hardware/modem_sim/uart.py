"""The modem's UART as a TCP port: command lines with echo, raw data after a `>` prompt, framed output.

One client at a time, as on a real UART: a new connection replaces the old one. What the modem sends
while nobody is connected is lost, as it would be on a wire with no listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import strftime

log = logging.getLogger(__name__)

CR, LF = 0x0D, 0x0A
# AT+CMQTTCONNECT=<client>,"<address>",<keepalive>,<clean>,"<user>","<password>": the password part.
_PASSWORD = re.compile(r'^(AT\+CMQTTCONNECT=[^"]*"[^"]*",[^,]*,[^,]*,"[^"]*",)"[^"]*"', re.IGNORECASE)
MAX_LINE_BYTES = 4096  # a real modem's command buffer is smaller; longer lines are dropped with ERROR


class ConnectionClosed(Exception):
    """The client went away (end of stream)."""


class LineTooLong(Exception):
    """A command line exceeded MAX_LINE_BYTES."""


@dataclass
class _Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytearray = field(default_factory=bytearray)
    # After a CR the host may send LF (CR LF line ends); that LF belongs to the line, not to the next data.
    skip_lf: bool = False


class Uart:
    """Listens on host:port and runs `session()` for the connected client until it leaves or is replaced."""

    def __init__(
        self,
        session: Callable[[], Awaitable[None]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_connect: Callable[[], None] | None = None,
        trace_path: Path | None = None,
    ) -> None:
        self._session = session
        self._host = host
        self._port = port
        self._on_connect = on_connect
        self._trace_path = trace_path
        self.echo = True  # ATE1; checked as bytes are consumed, so a change applies at once
        # Why the modem hears nothing now ("off", "asleep", "hung"), None while it listens.
        self.deaf: str | None = None
        self.mute = False  # True: nothing goes out (off, hung)
        # Fault injection on the wire (faults.py): each gets the bytes and returns what survives.
        self.input_filter: Callable[[bytes], bytes] | None = None
        self.output_filter: Callable[[bytes], bytes] | None = None
        self._server: asyncio.Server | None = None
        self._client: _Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The TCP port the UART listens on (known after start())."""
        return self._port

    @property
    def connected(self) -> bool:
        """True while a client is connected."""
        return self._client is not None

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop the client."""
        if self._server is not None:
            self._server.close()
        self.disconnect()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def discard_input(self) -> None:
        """Forget bytes received but not yet read (a modem that powers off loses its UART buffer)."""
        if self._client is not None:
            self._client.buffer.clear()
            self._client.skip_lf = False

    def disconnect(self) -> None:
        """Drop the current client, if any."""
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            self._client.writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._client is not None:
            log.info("uart %d: a new client replaces the old one", self._port)
            self.disconnect()
        client = _Client(reader, writer)
        self._client = client
        self._task = asyncio.current_task()
        self.trace("client connected")
        try:
            if self._on_connect is not None:
                self._on_connect()
            await self._session()
        except (ConnectionClosed, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # replaced by a newer client, or the modem stopped
        finally:
            writer.close()
            if self._client is client:
                self._client = None
                self._task = None
                self.trace("client disconnected")

    # -- input ---------------------------------------------------------------------------------------

    async def read_line(self) -> str:
        """The next command line without its CR, echoing the bytes as they are consumed while `echo`."""
        client = self._require_client()
        line = bytearray()
        while True:
            await self._fill(client)
            self._skip_lf(client)
            if not client.buffer:
                continue
            end = client.buffer.find(b"\r")
            size = end + 1 if end >= 0 else len(client.buffer)
            chunk = bytes(client.buffer[:size])
            del client.buffer[:size]
            if self.echo:
                self._write(client, chunk)
            line += chunk
            if end >= 0:
                client.skip_lf = True
                text = line[:-1].replace(b"\n", b"").decode("latin-1")
                self.trace(f"-> {redacted(text)}")
                return text
            if len(line) > MAX_LINE_BYTES:
                raise LineTooLong

    async def read_data(self, size: int, timeout: float) -> bytes:
        """Exactly `size` raw bytes (what follows a `>` prompt), no echo; TimeoutError if they do not come."""
        client = self._require_client()
        async with asyncio.timeout(timeout):
            while True:
                if not client.buffer:
                    await self._fill(client)
                self._skip_lf(client)
                if len(client.buffer) >= size:
                    break
                if client.buffer:
                    await self._fill(client, force=True)
        data = bytes(client.buffer[:size])
        del client.buffer[:size]
        self.trace(f"-> data {data!r}")
        return data

    async def read_text(self, stops: bytes, timeout: float, newline_prompt: bytes) -> tuple[bytes, int]:
        """Text mode input (SMS): bytes up to one of `stops`, echoed while `echo` (a CR is echoed as
        `newline_prompt`); returns (text, the stop byte). TimeoutError if no stop byte comes in time."""
        client = self._require_client()
        text = bytearray()
        async with asyncio.timeout(timeout):
            while True:
                await self._fill(client)
                self._skip_lf(client)
                while client.buffer:
                    byte = client.buffer.pop(0)
                    if byte in stops:
                        self.trace(f"-> text {bytes(text)!r} + {byte:#04x}")
                        return bytes(text), byte
                    text.append(byte)
                    if self.echo:
                        self._write(client, newline_prompt if byte == CR else bytes([byte]))

    async def _fill(self, client: _Client, force: bool = False) -> None:
        if client.buffer and not force:
            return
        while True:
            chunk = await client.reader.read(4096)
            if not chunk:
                raise ConnectionClosed
            if self.deaf is not None:
                self.trace(f"-> dropped {chunk!r} (modem {self.deaf})")
                continue
            if self.input_filter is not None:
                chunk = self.input_filter(chunk)
                if not chunk:
                    continue
            client.buffer += chunk
            return

    @staticmethod
    def _skip_lf(client: _Client) -> None:
        if client.skip_lf and client.buffer:
            if client.buffer[0] == LF:
                del client.buffer[0]
            client.skip_lf = False

    def _require_client(self) -> _Client:
        if self._client is None:
            raise ConnectionClosed
        return self._client

    # -- output --------------------------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        """Send one response or URC line framed as a real modem does in verbose mode: CR LF text CR LF."""
        self.trace(f"<- {text}")
        self.send_raw(b"\r\n" + text.encode("utf-8") + b"\r\n", trace=False)

    def send_raw(self, data: bytes, trace: bool = True) -> None:
        """Send bytes as they are (a prompt, or a length-counted block)."""
        if trace:
            self.trace(f"<- data {data!r}")
        if self._client is None:
            log.debug("uart %d: nobody listening, dropped %r", self._port, data[:80])
            return
        self._write(self._client, data)

    def _write(self, client: _Client, data: bytes) -> None:
        if self.mute:
            return
        if self.output_filter is not None:
            data = self.output_filter(data)
        if data and not client.writer.is_closing():
            client.writer.write(data)

    def trace(self, text: str) -> None:
        """Log one line of traffic (and append it to the trace file, if any)."""
        log.debug("uart %d %s", self._port, text)
        if self._trace_path is not None:
            with self._trace_path.open("a", encoding="utf-8") as trace:
                trace.write(f"{strftime('%H:%M:%S')} {text}\n")


def redacted(line: str) -> str:
    """A command line as the trace shows it: a device's broker password replaced by ***, so that the
    bench's modem.log holds no secret."""
    return _PASSWORD.sub(r'\1"***"', line)
