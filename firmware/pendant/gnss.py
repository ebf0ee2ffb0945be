"""Where the pendant is: the GNSS on only when needed, its position lines parsed, location updates while
an alarm is open, and the answer to `locate`. Loaded by the app's worker for one turn at a time
(`tick`), only while there is something to do: an alarm open, a `locate` waiting, a refresh of the last
known fix due or under way, or the GNSS to switch off.

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

# network.py has the same two helpers: only one of the two modules is ever loaded, and a
# module of their own would stay in the heap for good.
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


_TRY_S = const(90)  # how long an idle refresh of the fix keeps the GNSS on


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
    gnss = modem._gnss  # None: off; ticks_ms when powered; True once READY! (or a minute) passed
    if gnss is None:
        try:
            await modem.query("AT+CGNSSPWR=1", 3000)
        except ATError:
            await modem.query("AT+CGPS=1", 3000)
            modem.gps = modem._gnss = True
            return None
        if modem._gnss is None:  # READY! may have come with the OK already
            modem._gnss = ticks_ms()
        return None
    if gnss is not True:
        if ticks_diff(ticks_ms(), gnss) < 60000:
            return None
        modem._gnss = True
    line = await modem.query("AT+CGPSINFO" if modem.gps else "AT+CGNSSINFO", 3000)
    fix = parse_gnss(line) if line else None
    if fix:
        modem.fix_ticks = ticks_ms()
        if fix != modem.fix:  # keep the object held when nothing changed: less heap churn
            modem.fix = fix
        if modem._time[0] is None and fix[3]:
            modem._time = [fix[3], ticks_ms()]
    return fix


async def tick(app):
    """The GNSS's turn of the worker's duties (app.at: uptime seconds now, next heartbeat, next refresh,
    end of the current one, next query, next turn)."""
    at = app.at
    now = at[0]
    modem = app.modem
    active = app.state.open or app.locating
    if not active and now >= at[2]:
        at[2] = now + app.settings["fix_s"]
        at[3] = now + _TRY_S
    try:
        if not active and now >= at[3]:
            if modem._gnss is not None:  # off: AT+CGNSSPWR=0, or AT+CGPS=0 on a SIM7600
                modem._gnss = None
                await modem.query("AT+CGPS=0" if modem.gps else "AT+CGNSSPWR=0")
        elif now >= at[4]:
            at[4] = now + (5 if modem.fix and ticks_diff(ticks_ms(), modem.fix_ticks) < 10000 else 2)
            if await query(modem) and not active:
                at[3] = now  # fresh: off until the next refresh
    except (ATError, ATTimeout) as e:
        log("gnss", "%r" % e)
    await _update(app)
    # The next turn: at the next query while the GNSS is needed (an alarm open, a locate waiting, a
    # refresh under way), in a second to switch it off when it is no longer, else at the next refresh.
    if active or now < at[3]:
        at[5] = at[4]
    else:
        at[5] = now + 1 if modem._gnss is not None else at[2]
    locating = app.locating
    if locating and (modem.fix_ticks != locating[1] or ticks_diff(ticks_ms(), locating[2]) >= 30000):
        # `locate`: answered once a fix newer than the command came, or after 30 s with the last known
        # one (or the serving cell without any)
        app.locating = None
        fix = modem.fix
        await app.session.publish("cmd/res", protocol.pairs('{"id":%s,"ok":true', (locating[0],), (
            "loc", protocol.loc(fix), "cell", protocol.cell(None if fix else modem.cell))))


async def _update(app):
    # While an alarm is open and the session is up: a `location` event as soon as a fix newer than the
    # alarm's came (app.alarms.loc: [fix_ticks of the last update, ticks of it, fresh one sent]), then every
    # loc_s seconds.
    alarm_id = app.state.open
    if not alarm_id or not app.session.up:
        return
    modem = app.modem
    loc = app.alarms.loc
    fresh = not loc[2] and modem.fix and modem.fix_ticks != loc[0]
    if not fresh and ticks_diff(ticks_ms(), loc[1]) < app.settings["loc_s"] * 1000:
        return
    fix = modem.fix
    if await app.session.publish("evt", protocol.evt(
            "location", modem.now(), "alarm_id", alarm_id, "loc", protocol.loc(fix),
            "cell", protocol.cell(None if fix else modem.cell))):
        app.alarms.loc = [modem.fix_ticks, ticks_ms(), loc[2] or bool(fresh)]
