"""Owns the modem stream: one reader task, one command lock, URCs to handlers, a timeout on every wait.

Every line the modem sends goes, in this order, to:
1. the waiter of a running command's asynchronous final result such as `+CMQTTPUB: 0,0`, which the
   A7670 may print before or after the command's `OK`, so the waiter is registered before the command
   is sent (command(..., final=prefix));
2. a URC handler from `on(prefix, fn)`: fn(line, data) runs in the reader task and must not wait;
3. the running command: `OK`, `ERROR`, `+CME ERROR: <n>` end it, other lines are its response;
4. otherwise it is an unknown unsolicited line: logged and dropped.

The stream is a non-blocking object with readinto(buf) -> count, None when nothing is there, 0 at its
end, and write(bytes) -> count (a UART with timeout=0, a non-blocking socket). The reader polls it every
10 ms, and every wait is a poll with a deadline (`until`), as mqtt_as polls its socket: nothing waits
without a timeout, and no wait blocks the event loop. The channel also knows when the modem last
answered and how many commands in a row it left unanswered (`silent_ms`: the app power-cycles a hung modem), and wakes a modem that was allowed to sleep
(`sleep`, the DTR line) before the next command.
"""

from time import ticks_add, ticks_diff, ticks_ms

from asyncio import sleep_ms

from . import atparse, log

# Lines, prefixes and commands are str (see atparse); data written at a prompt and raw blocks are bytes.


class ATError(Exception):
    """The modem answered ERROR or `+CME ERROR: <n>` (the message is that line)."""


class ATTimeout(Exception):
    """The modem did not answer in time, or the stream is not open."""


async def until(condition, timeout_ms, message="modem silent"):
    """Poll condition() every 5 ms until it is true; ATTimeout(message) after timeout_ms."""
    deadline = ticks_add(ticks_ms(), timeout_ms)
    while not condition():
        if ticks_diff(deadline, ticks_ms()) <= 0:
            raise ATTimeout(message)
        await sleep_ms(5)


async def write(stream, data):
    """Write all of data to a non-blocking stream."""
    data = memoryview(data)
    while data:
        try:
            data = data[stream.write(data) or 0 :]
        except OSError as e:
            if e.errno != 11:  # EAGAIN: the socket buffer is full, try again
                raise
        if data:
            await sleep_ms(5)


async def write_file(stream, path):
    """Write a file on flash to the stream in pieces of 128 bytes (a certificate: no copy in the heap)."""
    buf = bytearray(128)
    with open(path, "rb") as f:
        n = f.readinto(buf)
        while n:
            await write(stream, memoryview(buf)[:n])
            n = f.readinto(buf)


class _Waiter:
    """A running command's wait for its asynchronous result: the line's prefix, and the line once seen."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.line = None


class ATChannel:
    """The AT command channel over the stream that `opener()` (a coroutine) returns."""

    def __init__(self, opener):
        self.opener = opener
        self._handlers = []
        self._waiters = []  # the _Waiter of every running command that expects an asynchronous result
        self.stream = None  # the open modem stream, None while there is none
        self._result = None  # the running command's final result line (OK, ERROR, +CME ERROR: <n>)
        self._prompt = False  # the `>` prompt (or the final result) came
        self._busy = False  # the command lock
        self._stale = False  # a timed-out command's final result may still come
        self._answered = ticks_ms()  # when the last final result came
        self._unanswered = 0  # commands in a row the modem did not answer
        self._ended = ticks_ms()  # when the last command ended
        self._lines = None  # the running command's response lines; None while idle
        self.dtr = None  # fn(level) driving the modem's DTR line: 1 lets it sleep (after AT+CSCLK=1)
        self.asleep = False

    def silent_ms(self):
        """How long the modem has been silent while commands went unanswered (0 while it answers)."""
        return ticks_diff(ticks_ms(), self._answered) if self._unanswered else 0

    def idle_ms(self):
        """How long no command has run (0 while one runs or waits for its result)."""
        return 0 if self._busy or self._waiters else ticks_diff(ticks_ms(), self._ended)

    def sleep(self):
        """Let the modem sleep until the next command (DTR high; the modem still wakes for URCs)."""
        if self.dtr and not self.asleep:
            self.dtr(1)
            self.asleep = True

    def on(self, prefix, handler):
        """Route lines (and raw blocks) starting with prefix to handler(line, data), in the reader task."""
        self._handlers.append((prefix, handler))

    async def run(self):
        """The reader task: open the stream and parse all it delivers; OSError at end of stream."""
        stream = await self.opener()
        parser = atparse.Parser(self._on_event)
        buf = bytearray(128)
        self.stream = stream
        try:
            while True:
                n = stream.readinto(buf)
                if n == 0:
                    raise OSError("modem stream closed")
                if n:
                    parser.feed(buf, n)
                else:
                    await sleep_ms(10)
        finally:
            self.stream = None
            try:
                stream.close()
            except Exception as e:
                log("atchan", "closing the stream: %r" % e)

    async def command(self, cmd, ms=5000, data=None, final=None, final_ms=0, lock_ms=30000):
        """Send `cmd` (str, no CR); return its response lines (list of str).

        ms bounds each wait for the modem. With `data` (bytes, or the path of a file on flash, which is
        streamed: `write_file`): wait for the `>` prompt, then write data. With
        `final`: also wait up to final_ms for the asynchronous result line starting with `final` (outside
        the lock, so other commands run meanwhile) and return that line. ATError on ERROR (unless the
        final line came with it), ATTimeout when the modem stays silent. lock_ms bounds the wait for
        the command before (ATTimeout "AT channel busy").
        """
        waiter = _Waiter(final)
        if final:
            self._waiters.append(waiter)
        try:
            await until(lambda: not self._busy, lock_ms, "AT channel busy")
            self._busy = True
            try:
                lines = await self._send(cmd, ms, data)
            except ATError:
                if not waiter.line:  # unless an error result (+CMQTTPUB: 0,14) came with the ERROR
                    raise
            finally:
                self._busy = False
            if final:
                await until(lambda: waiter.line, final_ms)
                return waiter.line
            return lines
        finally:
            if final:
                self._waiters.remove(waiter)

    async def _send(self, cmd, ms, data):
        if self._stale:  # let a timed-out command's late result pass first
            try:
                await until(lambda: not self._stale, 1000)
            except ATTimeout:
                self._stale = False
        await until(lambda: self.stream, ms, "no modem stream")
        if self.asleep:  # DTR low wakes it; the A7670 takes commands again after a few ms
            self.asleep = False
            self.dtr(0)
            await sleep_ms(50)
        self._lines = []
        self._result = None
        self._prompt = False
        stream = self.stream
        try:
            await write(stream, cmd.encode() + b"\r")
            if data is not None:
                try:  # the prompt comes at once; the result may not
                    await until(lambda: self._prompt, min(ms, 5000))
                except ATTimeout:
                    await write(stream, b"\x1b")  # ESC ends the data mode, should the prompt come late
                    raise
                if self._result:
                    raise ATError(self._result)
                await (write_file if type(data) is str else write)(stream, data)
            await until(lambda: self._result, ms)
            if self._result != "OK":
                raise ATError(self._result)
            return self._lines
        finally:
            self._stale = self._result is None
            self._ended = ticks_ms()
            if self._stale:
                self._unanswered += 1
            else:
                self._answered = self._ended
                self._unanswered = 0
            self._lines = None

    def _on_event(self, kind, line, data):
        if kind == atparse.PROMPT:
            self._prompt = True
            return
        for waiter in self._waiters:
            if not waiter.line and line.startswith(waiter.prefix):
                waiter.line = line
                return
        for prefix, handler in self._handlers:
            if line.startswith(prefix):
                try:
                    handler(line, data)
                except Exception as e:
                    log("atchan", "URC handler failed: %r" % e)
                return
        lines = self._lines
        if line == "OK" or "ERROR" in line[:10]:  # ERROR, +CME ERROR: <n>, +CMS ERROR: <n>
            if lines is not None:
                self._result = line
                self._prompt = True
            self._stale = False
        elif lines is not None and kind == atparse.LINE:
            if not line.startswith("AT") and len(lines) < 12:  # "AT...": our echo, until ATE0
                lines.append(line)
        else:
            log("atchan", "dropped line " + line)
