"""The A7670 driver: bring-up and registration, network clock, GNSS, serving cell and the AT+CMQTT* family.

Every method is a coroutine over an ATChannel and raises ATError / ATTimeout when the modem refuses or
stays silent; the MQTT session above turns those into retries. The parse_* functions are pure.
Commands and response lines are str (see atparse); data written at a prompt is bytes.
"""

import asyncio
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from . import log
from .atchan import ATError, ATTimeout, until

_START_MS = const(12000)  # +CMQTTSTART: 0 can take up to 12 s
_CONNECT_MS = const(30000)
_PUB_S = const(30)  # AT+CMQTTPUB timeout argument
_BUSY = const(14)  # "client is busy": retry the publish
_BUSY_TRIES = const(6)


class Clock:
    """Seconds since an origin, from time.ticks_ms: a network or GNSS time, or 0 at boot for the uptime.

    time.time() is not used: the ESP32 epoch is 2000, the unix port's 1970, and the RTC is not set. The
    base moves forward on every read, so ticks_diff never spans more than a minute (it is only valid
    within half the ticks period).
    """

    def __init__(self, value=None):
        self.set(value)

    def set(self, value):
        """Declare that it is `value` seconds now."""
        self._base = value
        self._ticks = ticks_ms()

    def now(self):
        """Whole seconds now, or None while the clock has never been set."""
        if self._base is None:
            return None
        whole = ticks_diff(ticks_ms(), self._ticks) // 1000
        if whole >= 60:
            self._base += whole
            self._ticks = ticks_add(self._ticks, whole * 1000)
            return self._base
        return self._base + whole


def unix_time(t):
    """Unix seconds of a UTC (year, month, day, hour, minute, second): proleptic Gregorian arithmetic,
    no library epoch involved."""
    year, month = (t[0] - 1, t[1] + 9) if t[1] <= 2 else (t[0], t[1] - 3)
    era = year // 400
    year -= era * 400
    days = era * 146097 + year * 365 + year // 4 - year // 100 + (153 * month + 2) // 5 + t[2] - 1 - 719468
    return days * 86400 + t[3] * 3600 + t[4] * 60 + t[5]


def fields(line):
    """The comma-separated fields after the `:` of a response line."""
    return line[line.find(":") + 1 :].strip().split(",")


def parse_cclk(line):
    """`+CCLK: "yy/MM/dd,hh:mm:ss+zz"` (local time, zz in quarter hours) -> Unix seconds, None if unset."""
    try:
        value = line[line.find('"') + 1 : line.rfind('"')]
        t = list(map(int, value[:17].replace(",", "/").replace(":", "/").split("/")))
        zone = int(value[17:] or 0)
    except ValueError:
        return None
    if len(t) != 6 or not 24 <= t[0] < 70:  # 70/01/01, 80/01/06...: the power-on default, no network time
        return None
    t[0] += 2000
    return unix_time(t) - zone * 900


def parse_gnss(line):
    """`+CGNSSINFO: ...` -> (lat_e6, lon_e6, acc_m, tst) or None without a fix.

    Firmware builds differ in the number of satellite-count fields (3 or 4) and in the latitude format
    (decimal degrees or ddmm.mmmm): the position is found by its N/S and E/W fields.
    """
    f = fields(line)
    for i in range(1, len(f) - 2):
        if f[i] in ("N", "S") and f[i + 2] in ("E", "W"):
            break
    else:
        return None
    # Integer micro-degrees (the ESP32 float keeps 7 digits only), from decimal degrees "52.373101"
    # or NMEA ddmm.mmmm "5222.3861" / dddmm.mmmm "00453.5322" (4 or more digits before the point).
    position = []
    for value, side in ((f[i - 1], f[i]), (f[i + 1], f[i + 2])):
        whole, _, fraction = value.partition(".")
        try:
            fraction = int(fraction[:6] or 0) * 10 ** (6 - len(fraction[:6]))
            if len(whole) >= 4:
                fraction = (int(whole[-2:]) * 1000000 + fraction + 30) // 60
                whole = whole[:-2]
            value = int(whole) * 1000000 + fraction
        except ValueError:
            return None
        position.append(-value if side == "S" or side == "W" else value)
    lat, lon = position
    if abs(lat) > 90000000 or abs(lon) > 180000000:
        return None
    try:
        d, t = f[i + 3], f[i + 4]
        tst = unix_time([2000 + int(d[4:6]), int(d[2:4]), int(d[:2]), int(t[:2]), int(t[2:4]), int(t[4:6])])
    except (ValueError, IndexError):
        tst = None
    try:
        acc = max(1, int(float(f[i + 9]) * 5 + 0.5))  # HDOP times a typical 5 m range error
    except (ValueError, IndexError):
        acc = 50  # no HDOP given
    return (lat, lon, acc, tst)


def parse_cpsi(line):
    """`+CPSI: <mode>,<op>,<mcc>-<mnc>,<lac/tac>,<cell id>,...` -> (rat or None, cell or None).

    The cell is (rat, mcc, mnc, lac, cid) with lac and cid as hex strings, as in the alarm message.
    """
    f = fields(line)
    rat = f[0]
    if " " in rat:  # NO SERVICE
        return None, None
    try:
        mcc, mnc = f[2].split("-")
        cid = int(f[4], 16 if "x" in f[4] else 10)  # decimal on the A7670, hex on some firmware
        return rat, (rat, int(mcc), int(mnc), "0x%04X" % int(f[3], 16), "0x%07X" % cid)
    except (ValueError, IndexError):
        return rat, None


class Modem:
    """One A7670 behind an ATChannel; remembers what it learned: identity, registration, cell, fix, time."""

    def __init__(self, chan, power_on=None):
        self.chan = chan
        self.power_on = power_on
        self.clock = Clock()
        self.ready = False  # brought up: registered, clock read
        self._mqtt_busy = [False]  # one CMQTT sequence (will + connect, topic + payload + publish) at a time
        self.imei = self.iccid = self.rssi = self.rat = self.cell = self.fix = self._gnss = None
        self.reg = "none"
        chan.on("+CGNSSPWR: READY", self._gnss_ready)

    def _gnss_ready(self, line, data):
        self._gnss = True  # +CGNSSPWR: READY! (a URC, after the OK of AT+CGNSSPWR=1)

    async def query(self, cmd, ms=5000, lock_ms=30000):
        """Send one command; return its `+X:` response line for `AT+X` / `AT+X?`, else its first
        response line, else None (ATError / ATTimeout as ATChannel.command)."""
        lines = await self.chan.command(cmd, ms, lock_ms=lock_ms)
        prefix = cmd[2:].split("?")[0] + ":"
        for line in lines:
            if line.startswith(prefix):
                return line
        return lines[0] if lines else None

    async def bring_up(self, apn, ms=180000):
        """Wake the modem (AT until OK; PWRKEY if it stays silent), echo off, numeric errors, APN, SIM
        ready; read identity; wait up to ms for registration; read signal, cell and network time."""
        self.ready = False
        self._gnss = None  # a modem brought up again has its GNSS off
        for attempt in range(20):
            try:
                for cmd in ("AT", "ATE0", "AT+CMEE=1", 'AT+CGDCONT=1,"IP","%s"' % apn):
                    await self.chan.command(cmd, 1000)
                if await self.query("AT+CPIN?") == "+CPIN: READY":
                    break
            except (ATTimeout, ATError):  # asleep, off, or the SIM is still starting
                if attempt == 2 and self.power_on:
                    log("modem", "powering on")
                    await self.power_on()
            await asyncio.sleep_ms(1000)
        else:
            raise ATTimeout("modem or SIM not ready")
        self.imei = await self.query("AT+CGSN")
        self.iccid = (await self.query("AT+CICCID") or "")[7:].strip()  # "+ICCID: <digits>"
        deadline = ticks_add(ticks_ms(), ms)
        while await self.refresh() not in ("home", "roaming"):
            if ticks_diff(deadline, ticks_ms()) <= 0:
                raise ATTimeout("not registered")
            await asyncio.sleep_ms(2000)
        seconds = parse_cclk(await self.query("AT+CCLK?") or "")
        if seconds:
            self.clock.set(seconds)
        self.ready = True
        log("modem", "ready %s %s %s dBm" % (self.imei, self.reg, self.rssi))

    async def refresh(self):
        """Update signal (AT+CSQ), registration (AT+CEREG? for LTE, then AT+CREG?), radio technology
        and serving cell (AT+CPSI?); return the registration name."""
        try:
            rssi = int(fields(await self.query("AT+CSQ"))[0])
        except (TypeError, ValueError):
            rssi = 99
        self.rssi = -113 + 2 * rssi if 0 <= rssi <= 31 else None  # 99: unknown
        self.reg = "none"
        for cmd in "AT+CEREG?", "AT+CREG?":
            try:  # stat 1 home, 5 roaming, 2 searching, 3 denied, others none
                name = "none home searching denied none roaming".split()[int(fields(await self.query(cmd))[1])]
            except (TypeError, ValueError, IndexError):
                name = "none"
            if self.reg == "none" or name == "home" or name == "roaming":
                self.reg = name
        line = await self.query("AT+CPSI?")
        if line:
            # Keep the objects held when nothing changed: a long-lived object made now would sit
            # among the short-lived ones and split the free heap.
            rat, cell = parse_cpsi(line)
            if rat != self.rat:
                self.rat = rat
            if cell and cell != self.cell:
                self.cell = cell
        return self.reg

    async def gnss_query(self, ms=3000, lock_ms=30000):
        """One AT+CGNSSINFO; remember and return the fix, or None without one. The first call powers the
        GNSS (AT+CGNSSPWR=1); queries start after its `+CGNSSPWR: READY!`, or a minute later (a GNSS
        that was on already may not say it again). Never waits for either."""
        gnss = self._gnss  # None: off; ticks_ms when powered; True once READY! (or a minute) passed
        if gnss is None:
            await self.query("AT+CGNSSPWR=1", ms, lock_ms)
            if self._gnss is None:  # READY! may have come with the OK already
                self._gnss = ticks_ms()
            return None
        if gnss is not True:
            if ticks_diff(ticks_ms(), gnss) < 60000:
                return None
            self._gnss = True
        line = await self.query("AT+CGNSSINFO", ms, lock_ms)
        fix = parse_gnss(line) if line else None
        if fix and fix != self.fix:  # keep the object held when nothing changed (see refresh)
            self.fix = fix
            if self.clock.now() is None and fix[3]:
                self.clock.set(fix[3])
        return fix

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
                    line = await self.chan.command("AT+CMQTT" + step, data=data, final=final, final_ms=final_ms)
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

    async def mqtt_start(self, client_id, tls):
        """Start the MQTT service from scratch (stopping whatever ran) and acquire client 0."""
        for step in "DISC=0,10", "REL=0", "STOP":
            await self.mqtt([(step, None, 0 if step == "REL=0" else 12000)], True)
        try:
            if await self.mqtt((("START", None, _START_MS),)) not in (0, 23):  # 23: already opened
                return False
        except ATError:
            pass  # a bare ERROR: the service already runs
        await self.mqtt((('ACCQ=0,"%s"%s' % (client_id, ",1" if tls else ""), None, 0),))
        return True

    async def mqtt_connect(self, host, port, keepalive, user, password, topic, payload, root, topics):
        """Drop an old connection, set the will (topic, payload; QoS 1), connect (clean_session 0) and
        subscribe root + each of topics (QoS 1). Return 0, or the first failing `+CMQTTCONNECT` /
        `+CMQTTSUB` error code."""
        await self.mqtt((("DISC=0,10", None, 12000),), True)
        items = [
            ("WILLTOPIC=0,%d" % len(topic), topic, 0),
            ("WILLMSG=0,%d,1" % len(payload), payload, 0),
            ('CONNECT=0,"tcp://%s:%d",%d,0' % (host, port, keepalive)
             + (',"%s","%s"' % (user, password) if user else ""), None, _CONNECT_MS),
        ]
        for topic in topics:
            topic = (root + topic).encode()
            items.append(("SUBTOPIC=0,%d,1" % len(topic), topic, 0))
            items.append(("SUB=0", None, 15000))
        return await self.mqtt(items)

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
            await asyncio.sleep_ms(delay)
            delay *= 2
        return _BUSY
