"""MicroPython code the technician commands run on a pendant through its REPL (the firmware is stopped
meanwhile), and the host-side reading of what it prints. Every probe prints one JSON line.

The probes reach the hardware only through the firmware's board module (`pendant.boards.t_a7670e` on
the pendant, `pendant.boards.sim` on the bench): `Board(device)`, `open_modem()`, `pwrkey()` (or the
older `modem_power_on()`), `battery_mv()`, `charging()`, `buttons()` (or the older `button.value()`),
`vibrate(pattern)` and `tasks()`, run on asyncio as the firmware's own tasks are (or on `pendant.sched`,
the scheduler of older firmware, on a pendant that still has it).
They speak plain AT to the modem with a small helper of their own, so that a probe does not depend on
the firmware's AT channel, and they switch a modem that does not answer on (PWRKEY) first. (The
firmware's `pendant.identity.about()`, for a technician at the REPL, reads the IMEI and ICCID too, but
leaves an off modem off.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# -- MicroPython: shared prelude ---------------------------------------------------------------------

PRELUDE = """\
import sys, time, json
try:
    from pendant import sched as _s
    _run, _task, _sleep = _s.run, _s.create_task, _s.sleep_ms
    def _cancel(t):
        if hasattr(_s, 'cancel'):
            _s.cancel(t)
        else:
            t[1].close()  # ends the coroutine: its finally closes its sockets
except ImportError:
    import asyncio as _s
    _run, _task, _sleep = _s.run, _s.create_task, _s.sleep_ms
    def _cancel(t):
        t.cancel()
def _board():
    if sys.platform == 'linux':
        from pendant.boards import sim as m
    else:
        from pendant.boards import t_a7670e as m
    return m.Board({'device_id': 'bench'})
def _pressed(b):
    return b.buttons()[0] if hasattr(b, 'buttons') else b.button.value()
class _AT:
    def __init__(self, stream):
        self.s = stream
    def drain(self):
        for _ in range(50):
            if not self.s.read(512):
                return
    def cmd(self, c, ms=3000, done=(b'\\r\\nOK\\r\\n', b'ERROR')):
        self.drain()
        self.s.write(c.encode() + b'\\r')
        return self.wait(done, ms, c)
    def wait(self, done, ms, c=''):
        buf = b''
        t = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t) < ms:
            d = self.s.read(512)
            if d:
                buf += d
                for m in done:
                    if m in buf:
                        return self.lines(buf, c)
            else:
                time.sleep_ms(10)
        return None
    def lines(self, buf, c):
        return [x.strip() for x in buf.decode('utf-8', 'ignore').split('\\n') if x.strip() and x.strip() != c]
def _modem(b):
    at = _AT(_run(b.open_modem()))
    power = getattr(b, 'pwrkey', None) or getattr(b, 'modem_power_on', None)
    if at.cmd('AT', 1000) is None and power:
        _run(power())
        t = time.ticks_ms()
        while at.cmd('AT', 1000) is None and time.ticks_diff(time.ticks_ms(), t) < 20000:
            pass
    return at
def _with_board(job):
    b = _board()
    async def main():
        tasks = [_task(f()) for _, f in b.tasks()]
        try:
            await _sleep(500)
            return await job(b)
        finally:
            for t in tasks:
                _cancel(t)
    return _run(main())
"""


def probe(body: str) -> str:
    """A complete probe: the prelude, then `body`, which prints one JSON line."""
    return PRELUDE + body


# -- identity (provisioning) -------------------------------------------------------------------------

IDENTITY = probe("""\
def _identity():
    try:
        import pendant
        fw = pendant.FW
    except ImportError:
        print(json.dumps({'error': 'firmware'}))
        return
    at = _modem(_board())
    r = {'fw': fw, 'imei': at.cmd('AT+CGSN'), 'iccid': at.cmd('AT+CICCID'), 'cpin': at.cmd('AT+CPIN?')}
    print(json.dumps(r))
_identity()
del _identity
""")


@dataclass(frozen=True)
class Identity:
    """What identifies a pendant: its modem's IMEI, its SIM's ICCID, and the firmware it runs."""

    imei: str
    iccid: str | None  # None: no SIM (or it does not answer)
    firmware: str


class ProbeError(ValueError):
    """A probe's answer says the pendant cannot do what was asked; the message says what to do."""


_IMEI = re.compile(r"^(\d{15})$")
_ICCID = re.compile(r"^\+ICCID:\s*([0-9]{18,20}F?)$")


def parse_identity(answer: dict[str, Any]) -> Identity:
    """Identity from the IDENTITY probe's JSON; ProbeError with advice when it cannot be read."""
    if answer.get("error") == "firmware":
        raise ProbeError("the pendant firmware is not installed: run `pendant deploy` first")
    imei_lines = answer.get("imei")
    if imei_lines is None:
        raise ProbeError("the pendant's modem does not answer AT commands: check its antenna cable and power")
    imei = next((m.group(1) for line in imei_lines if (m := _IMEI.match(line))), None)
    if imei is None:
        raise ProbeError(f"the modem did not give its IMEI (it answered {imei_lines!r})")
    iccid = next((m.group(1) for line in answer.get("iccid") or [] if (m := _ICCID.match(line))), None)
    return Identity(imei=imei, iccid=iccid, firmware=str(answer.get("fw", "")))


def parse_json_line(output: str) -> Any:
    """The JSON of a probe's last printed line."""
    lines = output.strip().splitlines()
    if not lines:
        raise ProbeError("the probe printed nothing")
    return json.loads(lines[-1])


# -- bench probes ------------------------------------------------------------------------------------

# The device id from config.json, without reading anything else of it out (the password stays put).
DEVICE_ID = """\
import json
try:
    with open('config.json') as f:
        print(json.dumps({'device_id': json.load(f).get('device_id')}))
except (OSError, ValueError):
    print(json.dumps({'device_id': None}))
"""

MODEM = probe("""\
def _p():
    at = _modem(_board())
    print(json.dumps({'at': at.cmd('AT', 2000), 'ati': at.cmd('ATI'), 'imei': at.cmd('AT+CGSN'),
                      'cpin': at.cmd('AT+CPIN?'), 'iccid': at.cmd('AT+CICCID')}))
_p()
del _p
""")

# Registration: AT+CEREG? (LTE), then AT+CREG? (2G), until home or roaming or `wait_s` ran out.
REGISTRATION = probe("""\
def _p(wait_s):
    at = _modem(_board())
    t = time.ticks_ms()
    while True:
        r = {'cereg': at.cmd('AT+CEREG?'), 'creg': at.cmd('AT+CREG?'), 'csq': at.cmd('AT+CSQ'),
             's': time.ticks_diff(time.ticks_ms(), t) / 1000}
        text = ' '.join((r['cereg'] or []) + (r['creg'] or []))
        if ',1' in text or ',5' in text or time.ticks_diff(time.ticks_ms(), t) > wait_s * 1000:
            print(json.dumps(r))
            return
        time.sleep_ms(1000)
_p(%d)
del _p
""")

# GNSS: power it, then ask for a position every second until one comes or `wait_s` ran out.
GNSS = probe("""\
def _p(wait_s):
    at = _modem(_board())
    at.cmd('AT+CGNSSPWR=1', 5000)
    t = time.ticks_ms()
    last = None
    while time.ticks_diff(time.ticks_ms(), t) < wait_s * 1000:
        last = at.cmd('AT+CGNSSINFO', 3000)
        for line in last or []:
            if line.startswith('+CGNSSINFO:') and line[11:].strip(' ,'):
                print(json.dumps({'info': line, 's': time.ticks_diff(time.ticks_ms(), t) / 1000}))
                return
        time.sleep_ms(1000)
    print(json.dumps({'info': None, 'last': last, 's': wait_s}))
_p(%d)
del _p
""")

# The board's own view; on the bench board its pins need the io channel, which _with_board runs.
BATTERY = probe("""\
async def _p(b):
    samples = []
    for _ in range(5):
        samples.append(b.battery_mv())
        await _sleep(100)
    return {'mv': samples, 'charging': b.charging()}
print(json.dumps(_with_board(_p)))
""")

BUTTON_PROMPT = "bench: press the button"
BUTTON = probe("""\
async def _p(b):
    print('%s')
    t = time.ticks_ms()
    pressed = None
    while time.ticks_diff(time.ticks_ms(), t) < %d * 1000:
        if _pressed(b):
            pressed = time.ticks_diff(time.ticks_ms(), t) / 1000
            break
        await _sleep(10)
    held = 0
    while pressed is not None and _pressed(b) and held < 10000:
        await _sleep(10)
        held += 10
    return {'pressed_after': pressed, 'held_ms': held}
print(json.dumps(_with_board(_p)))
""")

VIBRATE = probe("""\
async def _p(b):
    await b.vibrate('acknowledged')
    await _sleep(200)
    return {'played': 'acknowledged'}
print(json.dumps(_with_board(_p)))
""")

# SMS in text mode, then a voice call, to the bench's test phone; the call is hung up once answered.
SMS_AND_CALL = probe("""\
def _p(number, text, ring_s):
    at = _modem(_board())
    at.cmd('AT+CMGF=1')
    at.cmd('AT+CVHU=0')
    prompt = at.cmd('AT+CMGS="' + number + '"', 5000, (b'>', b'ERROR'))
    sent = None
    if prompt is not None and not any('ERROR' in x for x in prompt):
        at.s.write(text.encode() + b'\\x1a')
        sent = at.wait((b'\\r\\nOK\\r\\n', b'ERROR'), 60000)
    dialled = at.cmd('ATD' + number + ';', 10000)
    call = None
    if dialled is not None and 'OK' in dialled:
        got = at.wait((b'VOICE CALL: BEGIN', b'NO CARRIER', b'BUSY', b'NO ANSWER'), ring_s * 1000)
        call = got[-1] if got else 'no outcome within %%d s' %% ring_s
        if call == 'VOICE CALL: BEGIN':
            time.sleep_ms(2000)
        at.cmd('ATH', 5000)
    print(json.dumps({'prompt': prompt, 'sms': sent, 'dial': dialled, 'call': call}))
_p(%r, %r, %d)
del _p
""")


# -- reading the bench probes' answers (pure) --------------------------------------------------------

_REG = re.compile(r"^\+C(?:E)?REG:\s*(?:\d+,)?(\d+)")
_CSQ = re.compile(r"^\+CSQ:\s*(\d+),")
REGISTERED = {1: "home", 5: "roaming"}
REG_NAMES = {0: "not searching", 2: "searching", 3: "denied", 4: "unknown", 11: "emergency only"}


def registration_status(lines: list[str] | None) -> int | None:
    """The <stat> of a +CREG/+CEREG answer (the last number: `+CEREG: 0,1` -> 1)."""
    for line in lines or []:
        if line.startswith(("+CREG:", "+CEREG:")):
            parts = line.split(":", 1)[1].split(",")
            try:
                return int(parts[1] if len(parts) > 1 else parts[0])
            except ValueError:
                return None
    return None


def csq_rssi(lines: list[str] | None) -> int | None:
    """The <rssi> of `+CSQ: <rssi>,<ber>` (0..31, 99 unknown), None if absent."""
    for line in lines or []:
        found = _CSQ.match(line)
        if found:
            return int(found.group(1))
    return None


def rssi_dbm(rssi: int) -> int:
    """dBm of a CSQ rssi value 0..31 (-113 + 2 * rssi)."""
    return -113 + 2 * rssi


def gnss_fields(line: str) -> list[str]:
    """The comma-separated fields of a `+CGNSSINFO:` line."""
    return [field.strip() for field in line.split(":", 1)[1].split(",")]
