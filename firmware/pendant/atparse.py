"""Pure splitter of the A7670's byte stream into events: lines, `>` prompts and length-counted raw blocks.

No I/O, no time: `feed()` takes whatever bytes the UART delivered (any split, any garbage) and calls
`sink(kind, line, data)` once per event:

- LINE, line, None: one line (str) without CR LF and surrounding blanks (empty lines are skipped);
- PROMPT, None, None: the `>` the modem prints, with no line end, when it waits for data;
- BLOCK, header, data: a `+CMQTTRXTOPIC: 0,<n>` / `+CMQTTRXPAYLOAD: 0,<n>` header line and the exactly
  n bytes (bytes) after it, which may hold CR and LF; data is None when n exceeds 4096 (protocol
  payloads are at most 2048 bytes).
Lines are str (text the AT layer compares and logs). A line that is not UTF-8 (garbage) becomes its repr.
`fields` splits a response line's values.
"""

from micropython import const

LINE = const(0)
PROMPT = const(1)
BLOCK = const(2)
_LINE_MAX = const(160)  # the longest A7670 line we read (+CGNSSINFO) is ~100; garbage beyond is cut
_RAW_MAX = const(4096)


def fields(line):
    """The comma-separated fields after the `:` of a response line."""
    return line[line.find(":") + 1 :].strip().split(",")


class Parser:
    """Incremental splitter; one per modem stream."""

    def __init__(self, sink):
        self._sink = sink
        self._line = bytearray(_LINE_MAX)
        self._used = 0  # bytes of the current line held in _line
        self._after_prompt = False  # a ">" opened this line: a blank right after it belongs to the prompt
        self._header = None  # the header line of the raw block being read, else None
        self._raw = None  # the block's bytes (bytearray of n), None when it is too long to keep
        self._left = 0  # bytes of the block still to come

    def feed(self, data, n=-1):
        """Consume the first n bytes of data (all of it when n < 0) and emit every complete event."""
        if n < 0:
            n = len(data)
        i = 0
        while i < n:
            left = self._left
            if left:  # inside a raw block: take bytes by count, whatever they are
                k = min(n - i, left)
                raw = self._raw
                if raw is not None:
                    at = len(raw) - left
                    raw[at : at + k] = data[i : i + k]
                self._left = left - k
                i += k
                if k == left:
                    self._done()
                continue
            used = self._used
            if not used:
                c = data[i]
                if c == 0x3E:  # ">" opening a line: the data prompt, which has no line end
                    self._after_prompt = True
                    i += 1
                    self._sink(PROMPT, None, None)
                    continue
                if self._after_prompt:
                    self._after_prompt = False
                    if c == 0x20:  # the prompt is "> "
                        i += 1
                        continue
            end = data.find(10, i, n)  # LF
            stop = n if end < 0 else end
            k = min(stop - i, _LINE_MAX - used)
            if k > 0:
                self._line[used : used + k] = data[i : i + k]
                self._used = used + k
            if end < 0:
                return
            i = end + 1
            self._done()

    def _done(self):
        # The end of a line, or of a raw block: emit it.
        line = self._header
        if line:
            raw = self._raw
            self._header = self._raw = None
            self._sink(BLOCK, line, None if raw is None else bytes(raw))
            return
        line = bytes(self._line[: self._used])
        self._used = 0
        try:
            line = line.decode().strip()
        except UnicodeError:
            line = repr(line)
        if not line:
            return
        n = -1
        if line.startswith("+CMQTTRXTOPIC:") or line.startswith("+CMQTTRXPAYLOAD:"):
            try:
                n = int(line[line.find(",") + 1 :]) if "," in line else -1
            except ValueError:
                pass
        if n < 0:
            self._sink(LINE, line, None)
            return
        self._header = line
        self._raw = bytearray(n) if n <= _RAW_MAX else None
        self._left = n
        if not n:
            self._done()
