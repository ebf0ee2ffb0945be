"""The battery alerts and switching off (app.py reads the battery every 10 s and calls `check`).

Battery: the thresholds settings["batt_low"] and ["batt_critical"] are percentages (button.percent). A
radio burst makes the voltage sag for a moment, so an alert needs three readings in a row; `low_battery`
is reported once until the battery recovers (5 points above the threshold) or charges; at critical, the
pendant switches off after a last message with its location.

Switching off (the power button, or a critical battery): a power-off gesture raises a silent alarm
instead when settings["off_alarm"] is set (for when an aggressor switches the pendant off): the pendant
then only looks off (no vibration) and goes on until the backend resolves that alarm. Otherwise a last
`power_off` event with the location is queued, the outbox gets up to 30 s to empty (alarms delivered,
the event sent), and the board cuts its power.
"""

from asyncio import sleep_ms
from time import ticks_diff, ticks_ms

from micropython import const

from . import log, protocol

_WAIT_MS = const(30000)
_READINGS = const(3)


class Alerts:
    """What the battery alerts remember between readings (App.battery_alerts)."""

    def __init__(self):
        self.readings = 0  # readings in a row at or below batt_low
        self.low_sent = False  # `low_battery` reported (until the battery recovers or charges)


async def check(app):
    """One battery reading: queue `low_battery`, or set app.off at critical."""
    st = app.battery_alerts
    settings = app.settings
    batt = app.battery()
    low = settings["batt_low"]
    if batt is None or app.board.charging() or batt > low:
        st.readings = 0
        if batt is not None and batt > low + 5:
            st.low_sent = False
        return
    st.readings += 1
    if st.readings < _READINGS:
        return
    if batt <= settings["batt_critical"]:
        if not app.off:
            log("app", "critical battery %d%%" % batt)
            app.off = "battery"
    elif not st.low_sent:
        st.low_sent = True
        log("app", "low battery %d%%" % batt)
        app.outbox.put("evt", protocol.evt(
            "low_battery", app.modem.now(), "batt", batt, "mv", app.board.battery_mv()))


async def power_off(app):
    """Switch off for the reason in app.off ("button" or "battery")."""
    alarms = app.alarms
    modem = app.modem
    reason = app.off
    if reason == "button" and app.settings["off_alarm"] and not alarms.dark:
        app.off = None
        alarms.dark = True  # no vibration from now on: the pendant looks switched off
        log("app", "power off refused: silent alarm")
        alarms.raise_alarm("power_off")
        return
    fix = modem.fix
    app.outbox.put("evt", protocol.evt(
        "power_off", modem.now(), "reason", reason, "loc", protocol.loc(fix),
        "cell", protocol.cell(None if fix else modem.cell), "batt", app.battery()))
    log("app", "switching off (%s)" % reason)
    started = ticks_ms()
    alarms.on_connect()
    while app.outbox.names() and ticks_diff(ticks_ms(), started) < _WAIT_MS:
        await app.session.keep()
        await app.session.dispatch()
        await alarms.send()
        await sleep_ms(100)
    log("app", "off")
    app.board.off()
