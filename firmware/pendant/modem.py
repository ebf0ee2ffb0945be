"""The A7670 driver for what runs all the time: commands and queries, the clock, the state of calls,
publishing with the AT+CMQTT* family; and what it learned (identity, registration, cell, fix).

Every method is a coroutine over an ATChannel and raises ATError / ATTimeout when the modem refuses or
stays silent; the MQTT session above turns those into retries. Bringing the modem up and reading the
network status are in network.py, connecting in start.py and connect.py, the GNSS in gnss.py. Commands
and response lines are str (see atparse); data written at a prompt is bytes.
"""

from asyncio import sleep_ms
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from . import log
from .atchan import ATError, ATTimeout, until

_PUB_S = const(30)  # AT+CMQTTPUB timeout argument
_BUSY = const(14)  # "client is busy": retry the publish
_BUSY_TRIES = const(6)


# voice call states (Call.state)
IDLE = const(0)
DIALLING = const(1)
ACTIVE = const(2)
ENDED = const(3)  # answered, then over
FAILED = const(4)  # never answered: busy, no answer, no carrier, refused


# What the MQTT session must redo before it connects (mqtt.Session.need); each includes those below it
NOTHING = const(0)
START = const(1)  # the modem's MQTT service from AT+CMQTTSTART (start.py)
BRING_UP = const(2)  # the modem brought up (network.py)
POWER_CYCLE = const(3)  # the modem switched off and on first (it hung)


def unix_time(t):
    """Unix seconds of a UTC (year, month, day, hour, minute, second): proleptic Gregorian arithmetic,
    no library epoch involved."""
    year, month = (t[0] - 1, t[1] + 9) if t[1] <= 2 else (t[0], t[1] - 3)
    era = year // 400
    year -= era * 400
    days = era * 146097 + year * 365 + year // 4 - year // 100 + (153 * month + 2) // 5 + t[2] - 1 - 719468
    return days * 86400 + t[3] * 3600 + t[4] * 60 + t[5]


class Call:
    """The state of voice calls, as the URCs report it (Modem.call)."""

    def __init__(self):
        self.state = IDLE
        self.since = ticks_ms()  # when the state last changed
        self.seconds = 0  # how long the last answered call lasted
        self.number = None  # the number of the call ringing ("" withheld), from +CLIP
        self.rang = None  # ticks_ms of its last RING, None when it stopped ringing
        self.owner = None  # whose call: "in" (a call-back taken), or an outbox name (that alarm's fallback)
        self.refused = None  # the number refused last (logged once)

    def rings(self):
        """A RING (or its +CLIP) came now."""
        self.rang = ticks_ms()


class Modem:
    """One A7670 behind an ATChannel; remembers what it learned: identity, registration, cell, fix, time,
    and the state of voice calls. power_key: a coroutine pulsing PWRKEY, or None.

    Time: time.time() is not used (the ESP32 epoch is 2000, the unix port's 1970, and the RTC is not
    set): `now()` counts from the last network or GNSS time with ticks_ms, moving its base forward on
    every read so that ticks_diff never spans more than a minute.

    Calls: progress arrives as URCs (shared/reference/a7670-at.md): `VOICE CALL: BEGIN` once answered,
    `VOICE CALL: END: <hhmmss>` when an answered call ends, `NO CARRIER` / `BUSY` / `NO ANSWER` when it
    fails, `RING` and `+CLIP: "<number>",...` for an incoming call, `MISSED_CALL: <time> <number>` when it
    rang out. The handler runs in the AT reader task and only records in `call` (a Call). The commands
    that make calls and send SMS are in fallback.py.

    GNSS: `gnss` is None while it is off, the ticks_ms when it was powered, True once `+CGNSSPWR:
    READY!` came (or a minute passed); gnss.py drives it.
    """

    def __init__(self, chan, power_key=None):
        self.chan = chan
        self.power_key = power_key
        self.ready = False  # brought up: registered, clock read
        self._mqtt_busy = False  # one CMQTT sequence (will + connect, topic + payload + publish) at a time
        self.imei = self.rssi = self.rat = self.cell = self.fix = self.gnss = None
        self.fix_ticks = 0  # ticks_ms when the last fix was read
        self.gps = False  # the SIM7600 path: AT+CGPS / AT+CGPSINFO instead of AT+CGNSSPWR / AT+CGNSSINFO
        self.reg = "none"
        self._seconds = None  # Unix seconds at ticks _base (None: no time yet)
        self._base = 0
        self.call = Call()
        chan.on(("+CGNSSPWR: READY", "VOICE CALL:", "NO CARRIER", "BUSY", "NO ANSWER", "RING", "+CLIP:",
                 "MISSED_CALL"), self._urc)

    def _urc(self, line, data):
        call = self.call
        now = ticks_ms()
        if line.startswith("+CGNSSPWR: READY"):
            self.gnss = True  # (after the OK of AT+CGNSSPWR=1)
        elif line == "RING":
            call.rings()
        elif line.startswith("+CLIP:"):
            parts = line.split('"')
            call.number = parts[1] if len(parts) > 2 else None
            call.rings()
        elif line.startswith("MISSED_CALL"):
            call.rang = None
        elif line.startswith("VOICE CALL: BEGIN"):
            call.state, call.since = ACTIVE, now
        elif call.state == ACTIVE:  # VOICE CALL: END: <hhmmss> or NO CARRIER: the call is over
            t = line[-6:]
            if t.isdigit():
                call.seconds = int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:])
            else:
                call.seconds = ticks_diff(now, call.since) // 1000
            call.state, call.since = ENDED, now
        elif call.state == DIALLING:  # BUSY, NO ANSWER, NO CARRIER before anyone answered
            call.state, call.since = FAILED, now
            log("modem", line)

    def ringing(self):
        """The number of an incoming call ringing now ("" when it is withheld), else None."""
        call = self.call
        rang = call.rang
        if rang is not None and ticks_diff(ticks_ms(), rang) < 7000 and call.state != ACTIVE:  # RING every ~6 s
            return call.number or ""
        return None

    def now(self):
        """Unix seconds now, or None while no network or GNSS time came."""
        if self._seconds is None:
            return None
        whole = ticks_diff(ticks_ms(), self._base) // 1000
        if whole >= 60:
            self._seconds += whole
            self._base = ticks_add(self._base, whole * 1000)
            whole = 0
        return self._seconds + whole

    def set_time(self, seconds):
        """The clock is seconds (Unix) now: from the network (AT+CCLK?) or a GNSS fix."""
        self._seconds = seconds
        self._base = ticks_ms()

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
        await until(lambda: not self._mqtt_busy, 90000, "MQTT client busy")
        self._mqtt_busy = True
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
            self._mqtt_busy = False

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
