"""Pure splitter of the A7670's byte stream into events: lines, `>` prompts and length-counted raw blocks.

No I/O, no time: `feed()` takes whatever bytes the UART delivered (any split, any garbage) and calls
`sink(kind, line, data)` once per event:

- LINE, line, None: one line (str) without CR LF and surrounding blanks (empty lines are skipped);
- PROMPT, None, None: the `>` the modem prints, with no line end, when it waits for data;
- BLOCK, header, data: a `+CMQTTRXTOPIC: 0,<n>` / `+CMQTTRXPAYLOAD: 0,<n>` header line and the exactly
  n bytes (bytes) after it, which may hold CR and LF; data is None when n exceeds 4096 (protocol
  payloads are at most 2048 bytes).
Lines are str, not bytes: on MicroPython a short str constant costs a third of a bytes constant, and the
AT layer compares with many. A line that is not UTF-8 (garbage) becomes its repr.
"""

from micropython import const

LINE = const(0)
PROMPT = const(1)
BLOCK = const(2)
_LINE_MAX = const(160)  # the longest A7670 line we read (+CGNSSINFO) is ~100; garbage beyond is cut
_RAW_MAX = const(4096)
# indexes into Parser._st (one list instead of five attributes: every attribute name costs heap)
_USED = const(0)  # bytes of the current line held in _line
_AFTER_PROMPT = const(1)  # a ">" opened this line: a blank right after it belongs to the prompt
_HEADER = const(2)  # the header line of the raw block being read, else None
_RAW = const(3)  # the block's bytes (bytearray of n), None when it is too long to keep
_LEFT = const(4)  # bytes of the block still to come


class Parser:
    """Incremental splitter; one per modem stream."""

    def __init__(self, sink):
        self._sink = sink
        self._line = bytearray(_LINE_MAX)
        self._st = [0, False, None, None, 0]

    def feed(self, data, n=-1):
        """Consume the first n bytes of data (all of it when n < 0) and emit every complete event."""
        st = self._st
        if n < 0:
            n = len(data)
        i = 0
        while i < n:
            left = st[_LEFT]
            if left:  # inside a raw block: take bytes by count, whatever they are
                k = min(n - i, left)
                raw = st[_RAW]
                if raw is not None:
                    at = len(raw) - left
                    raw[at : at + k] = data[i : i + k]
                st[_LEFT] = left - k
                i += k
                if k == left:
                    self._done()
                continue
            used = st[_USED]
            if not used:
                c = data[i]
                if c == 0x3E:  # ">" opening a line: the data prompt, which has no line end
                    st[_AFTER_PROMPT] = True
                    i += 1
                    self._sink(PROMPT, None, None)
                    continue
                if st[_AFTER_PROMPT]:
                    st[_AFTER_PROMPT] = False
                    if c == 0x20:  # the prompt is "> "
                        i += 1
                        continue
            end = data.find(10, i, n)  # LF
            stop = n if end < 0 else end
            k = min(stop - i, _LINE_MAX - used)
            if k > 0:
                self._line[used : used + k] = data[i : i + k]
                st[_USED] = used + k
            if end < 0:
                return
            i = end + 1
            self._done()

    def _done(self):
        # The end of a line, or of a raw block: emit it.
        st = self._st
        line = st[_HEADER]
        if line:
            raw = st[_RAW]
            st[_HEADER] = st[_RAW] = None
            self._sink(BLOCK, line, None if raw is None else bytes(raw))
            return
        line = bytes(self._line[: st[_USED]])
        st[_USED] = 0
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
        st[_HEADER] = line
        st[_RAW] = bytearray(n) if n <= _RAW_MAX else None
        st[_LEFT] = n
        if not n:
            self._done()
