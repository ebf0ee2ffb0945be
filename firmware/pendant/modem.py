"""The A7670 driver for what runs all the time: commands and queries, the clock, the state of calls,
publishing with the AT+CMQTT* family; and what it learned (identity, registration, cell, fix).

Every method is a coroutine over an ATChannel and raises ATError / ATTimeout when the modem refuses or
stays silent; the MQTT session above turns those into retries. Bringing the modem up and reading the
network status (network.py), connecting (connect.py) and the GNSS (gnss.py) are loaded only then (their parsing helpers
with them). Commands and response lines are str
(see atparse); data written at a prompt is bytes.
"""

from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from . import log
from .atchan import ATError, ATTimeout, until
from .sched import sleep_ms

_PUB_S = const(30)  # AT+CMQTTPUB timeout argument
_BUSY = const(14)  # "client is busy": retry the publish
_BUSY_TRIES = const(6)


# voice call states (Modem.call[0])
IDLE = const(0)
DIALLING = const(1)
ACTIVE = const(2)
ENDED = const(3)  # answered, then over
FAILED = const(4)  # never answered: busy, no answer, no carrier, refused


class Modem:
    """One A7670 behind an ATChannel; remembers what it learned: identity, registration, cell, fix, time,
    and the state of voice calls. power_key: a coroutine pulsing PWRKEY, or None.

    Time: time.time() is not used (the ESP32 epoch is 2000, the unix port's 1970, and the RTC is not
    set): `now()` counts from the last network or GNSS time with ticks_ms, moving its base forward on
    every read so that ticks_diff never spans more than a minute.

    Calls: progress arrives as URCs (shared/reference/a7670-at.md): `VOICE CALL: BEGIN` once answered,
    `VOICE CALL: END: <hhmmss>` when an answered call ends, `NO CARRIER` / `BUSY` / `NO ANSWER` when it
    fails, `RING` and `+CLIP: "<number>",...` for an incoming call, `MISSED_CALL: <time> <number>` when it
    rang out. The handler runs in the AT reader task and only records in `call`: [state, ticks it
    changed, seconds the last call lasted, the number ringing, ticks of its last RING, whose call it is
    ("in": a call-back taken; an outbox name: that alarm's fallback call), the number refused last].
    The commands that make calls and send SMS are in fallback.py.
    """

    def __init__(self, chan, power_key=None):
        self.chan = chan
        self.power_key = power_key
        self.ready = False  # brought up: registered, clock read
        self._mqtt_busy = [False]  # one CMQTT sequence (will + connect, topic + payload + publish) at a time
        self.imei = self.rssi = self.rat = self.cell = self.fix = self._gnss = None
        self.fix_ticks = 0  # ticks_ms when the last fix was read
        self.gps = False  # the SIM7600 path: AT+CGPS / AT+CGPSINFO instead of AT+CGNSSPWR / AT+CGNSSINFO
        self.reg = "none"
        self._time = [None, 0]  # Unix seconds at ticks_ms
        self.call = [IDLE, 0, 0, None, 0, None, None]
        chan.on(("+CGNSSPWR: READY", "VOICE CALL:", "NO CARRIER", "BUSY", "NO ANSWER", "RING", "+CLIP:",
                 "MISSED_CALL"), self._urc)

    def _urc(self, line, data):
        c = self.call
        now = ticks_ms()
        if line[:5] == "+CGNS":
            self._gnss = True  # +CGNSSPWR: READY! (after the OK of AT+CGNSSPWR=1)
        elif line == "RING":
            c[4] = now
        elif line[:6] == "+CLIP:":
            parts = line.split('"')
            c[3] = parts[1] if len(parts) > 2 else None
            c[4] = now
        elif line[:6] == "MISSED":
            c[4] = 0
        elif line[:17] == "VOICE CALL: BEGIN":
            c[0], c[1] = ACTIVE, now
        elif c[0] == ACTIVE:  # VOICE CALL: END: <hhmmss> or NO CARRIER: the call is over
            t = line[-6:]
            c[2] = int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:]) if t.isdigit() else ticks_diff(now, c[1]) // 1000
            c[0], c[1] = ENDED, now
        elif c[0] == DIALLING:  # BUSY, NO ANSWER, NO CARRIER before anyone answered
            c[0], c[1] = FAILED, now
            log("modem", line)

    def ringing(self):
        """The number of an incoming call ringing now ("" when it is withheld), else None."""
        c = self.call
        if c[4] and ticks_diff(ticks_ms(), c[4]) < 7000 and c[0] != ACTIVE:  # RING comes every ~6 s
            return c[3] or ""
        return None

    def now(self):
        """Unix seconds now, or None while no network or GNSS time came."""
        t = self._time
        if t[0] is None:
            return None
        whole = ticks_diff(ticks_ms(), t[1]) // 1000
        if whole >= 60:
            t[0] += whole
            t[1] = ticks_add(t[1], whole * 1000)
            whole = 0
        return t[0] + whole

    async def query(self, cmd, ms=5000, lock_ms=30000):
        """Send one command; return its `+X:` response line for `AT+X` / `AT+X?`, else its first
        response line, else None (ATError / ATTimeout as ATChannel.command)."""
        lines = await self.chan.command(cmd, ms, lock_ms=lock_ms)
        prefix = cmd[2:].split("?")[0] + ":"
        for line in lines:
            if line.startswith(prefix):
                return line
        return lines[0] if lines else None

    # --- MQTT, client index 0 ---

    async def mqtt(self, items, ignore=False):
        """Run `AT+CMQTT<step>` commands as one sequence, each item (step, data, final_ms): data is written
        at the prompt; with final_ms the `+CMQTT<name>:` result is awaited and its error code checked.
        Return 0, or the first non-zero error code; with ignore, run every step whatever fails."""
        await until(self._mqtt_busy, 0, 90000, "MQTT client busy", False)
        self._mqtt_busy[0] = True
        try:
            for step, data, final_ms in items:
                final = "+CMQTT" + step.split("=")[0] + ":" if final_ms else None
                try:
                    # lock_ms: an SMS holds the channel for up to a minute; a publish waits for it
                    line = await self.chan.command(
                        "AT+CMQTT" + step, data=data, final=final, final_ms=final_ms, lock_ms=90000)
                except (ATError, ATTimeout):
                    if ignore:
                        continue
                    raise
                if final_ms:  # "+CMQTTxxx: 0,<err>"
                    try:
                        err = int(line[max(line.rfind(","), line.find(":")) + 1 :])
                    except ValueError:
                        err = -1
                    if err and not ignore:
                        return err
            return 0
        finally:
            self._mqtt_busy[0] = False

    async def mqtt_publish(self, topic, payload):
        """Publish at QoS 1, never retained; return the `+CMQTTPUB: 0,<err>` code, retrying while the
        client is busy (14, seen under load on real modems)."""
        delay = 250
        for _ in range(_BUSY_TRIES):
            err = await self.mqtt((
                ("TOPIC=0,%d" % len(topic), topic, 0),
                ("PAYLOAD=0,%d" % len(payload), payload, 0),
                ("PUB=0,1,%d" % _PUB_S, None, _PUB_S * 1000 + 5000),
            ))
            if err != _BUSY:
                return err
            log("modem", "busy, retry")
            await sleep_ms(delay)
            delay *= 2
        return _BUSY
