"""Where the pendant is: the GNSS on only when needed, its position lines parsed, location updates while
an alarm is open, and the answer to `locate`: the app's worker calls `tick` once a second.

The GNSS draws tens of mA: it is on while an alarm is open or a `locate` waits, and for up to 90 s
every settings["fix_s"] to keep the last known fix fresh (an alarm goes out at once with that fix and
its age); off otherwise. Location updates: a `location` event as soon as a fix newer than the alarm's
came, then every settings["loc_s"] until the backend resolves the alarm (app.state.open).

A fix is the tuple (lat_e6, lon_e6, acc_m, tst): integer micro-degrees (the ESP32's single-precision
float keeps 7 digits only, micro-degrees lose nothing), accuracy in metres, Unix seconds of the fix (None
when the modem gave no date).
"""

from time import ticks_diff, ticks_ms

from micropython import const

from . import log, protocol
from .atchan import ATError, ATTimeout
from .atparse import fields
from .modem import unix_time

_TRY_S = const(90)  # how long an idle refresh of the fix keeps the GNSS on


class Locate:
    """A `locate` command waiting for a fix newer than itself (answered after 30 s at the latest)."""

    def __init__(self, cmd_id, fix_ticks):
        self.cmd_id = cmd_id
        self.fix_ticks = fix_ticks  # Modem.fix_ticks when it came
        self.asked = ticks_ms()


class Schedule:
    """When the GNSS does what, in uptime seconds (App.uptime)."""

    def __init__(self):
        self.refresh = 0  # the next idle refresh of the last known fix
        self.refresh_end = 0  # the end of the refresh under way
        self.query = 0  # the next position query


def parse_gnss(line):
    """`+CGNSSINFO: ...` or `+CGPSINFO: ...` -> fix, or None without one.

    A76xx firmware builds differ in the number of satellite-count fields before the position (3 or 4)
    and in its format (decimal degrees or ddmm.mmmm); `+CGPSINFO` (SIM7600) has no satellite fields and
    no HDOP. The position is found by its N/S and E/W fields; date and time follow it in every form.
    """
    f = fields(line)
    for i in range(1, len(f) - 2):
        if f[i] in ("N", "S") and f[i + 2] in ("E", "W"):
            break
    else:
        return None
    # From decimal degrees "52.373101" or NMEA ddmm.mmmm "5222.3861" / dddmm.mmmm "00453.5322" (4 or
    # more digits before the point).
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
        acc = 50  # no HDOP given (+CGPSINFO)
    return (lat, lon, acc, tst)


async def query(modem):
    """One position query; remember and return the fix, or None without one. The first call powers the
    GNSS (AT+CGNSSPWR=1; a modem that refuses it is a SIM7600: AT+CGPS=1 and AT+CGPSINFO);
    AT+CGNSSINFO queries start after `+CGNSSPWR: READY!`, or a minute later (a GNSS that was on already
    may not say it again). Never waits for either."""
    gnss = modem.gnss  # None: off; ticks_ms when powered; True once READY! (or a minute) passed
    if gnss is None:
        try:
            await modem.query("AT+CGNSSPWR=1", 3000)
        except ATError:
            await modem.query("AT+CGPS=1", 3000)
            modem.gps = modem.gnss = True
            return None
        if modem.gnss is None:  # READY! may have come with the OK already
            modem.gnss = ticks_ms()
        return None
    if gnss is not True:
        if ticks_diff(ticks_ms(), gnss) < 60000:
            return None
        modem.gnss = True
    line = await modem.query("AT+CGPSINFO" if modem.gps else "AT+CGNSSINFO", 3000)
    fix = parse_gnss(line) if line else None
    if fix:
        modem.fix_ticks = ticks_ms()
        modem.fix = fix
        tst = fix[3]  # (lat, lon, acc, tst)
        if modem.now() is None and tst:
            modem.set_time(tst)
    return fix


async def tick(app):
    """The GNSS's turn of the worker's duties, once a second (app.gnss_at: a Schedule)."""
    at = app.gnss_at
    now = app.uptime
    modem = app.modem
    active = app.state.open or app.locating
    if not active and now >= at.refresh:
        at.refresh = now + app.settings["fix_s"]
        at.refresh_end = now + _TRY_S
    try:
        if not active and now >= at.refresh_end:
            if modem.gnss is not None:  # off: AT+CGNSSPWR=0, or AT+CGPS=0 on a SIM7600
                modem.gnss = None
                await modem.query("AT+CGPS=0" if modem.gps else "AT+CGNSSPWR=0")
        elif now >= at.query:
            at.query = now + (5 if modem.fix and ticks_diff(ticks_ms(), modem.fix_ticks) < 10000 else 2)
            if await query(modem) and not active:
                at.refresh_end = now  # fresh: off until the next refresh
    except (ATError, ATTimeout) as e:
        log("gnss", "%r" % e)
    await _update(app)
    locating = app.locating
    waited = locating and ticks_diff(ticks_ms(), locating.asked) >= 30000
    if locating and (modem.fix_ticks != locating.fix_ticks or waited):
        # `locate`: answered once a fix newer than the command came, or after 30 s with the last known
        # one (or the serving cell without any)
        app.locating = None
        fix = modem.fix
        await app.session.publish("cmd/res", protocol.pairs('{"id":%s,"ok":true', (locating.cmd_id,), (
            "loc", protocol.loc(fix), "cell", protocol.cell(None if fix else modem.cell))))


async def _update(app):
    # While an alarm is open and the session is up: a `location` event as soon as a fix newer than the
    # alarm's came (app.alarms.updates), then every loc_s seconds.
    alarm_id = app.state.open
    if not alarm_id or not app.session.up:
        return
    modem = app.modem
    updates = app.alarms.updates
    fresh = not updates.fresh_sent and modem.fix and modem.fix_ticks != updates.fix_ticks
    if not fresh and ticks_diff(ticks_ms(), updates.sent) < app.settings["loc_s"] * 1000:
        return
    fix = modem.fix
    if await app.session.publish("evt", protocol.evt(
            "location", modem.now(), "alarm_id", alarm_id, "loc", protocol.loc(fix),
            "cell", protocol.cell(None if fix else modem.cell))):
        updates.sent_now(modem.fix_ticks, bool(fresh))
