"""The modem's network side: bringing it up from power-on (or a hang) to registered, reading signal,
registration, radio, cell and time, and the heartbeat (`tele`) that reports them. The MQTT session uses
it to bring the modem up, the app for the heartbeat.

Power: a short PWRKEY pulse switches an off modem on and does nothing to a running one; a long pulse
switches a running one off. Whether a silent modem is off, still booting or hung cannot be told apart,
so `wake` gives the short pulse and waits long enough for a boot (`_BOOT_TRIES`); if it stays silent it
gives the long pulse and the short one (off, then on). A modem that stopped answering while it ran
(hung) is switched off and on first.

A cell is (rat, mcc, mnc, lac, cid) with lac and cid as hex strings, as in the alarm message.
"""

import gc
import json
from asyncio import sleep_ms
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from . import FW, log, protocol
from .atchan import ATError, ATTimeout
from .atparse import fields
from .modem import BRING_UP, POWER_CYCLE, unix_time

_BOOT_TRIES = const(12)  # `AT` about every 2 s: an A7670 answers within ~15 s of its power-on pulse
_PULSES = const(4)
# PWRKEY pulses (A7670 hardware design manual; LilyGO's examples): >= 50 ms switches an off modem on,
# >= 2.5 s a running one off; a short pulse on a running modem does nothing.
_ON_MS = const(100)
_OFF_MS = const(3000)
_SETUP = ("ATE0", "AT+CMEE=1")  # after every power-on
# The modem may refuse these: they help the fallback (calls, SMS) or save power (DTR sleep); the
# alarm path works without them.
_OPTIONAL = ("AT+CVHU=0", "AT+CLIP=1", "AT+CMGF=1", "AT+CSCLK=1")
_REGISTERED = ("home", "roaming")


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



def parse_cpsi(line):
    """`+CPSI: <mode>,<op>,<mcc>-<mnc>,<lac/tac>,<cell id>,...` -> (rat or None, cell or None)."""
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


async def wake(modem):
    """AT until OK; while the modem stays silent, switch it on (a short PWRKEY pulse, which a running
    modem ignores), and if it stays silent still, off (a long pulse) and on again. ATTimeout when it
    never answers."""
    chan = modem.chan
    for pulse in range(_PULSES + 1):
        if pulse:
            if not modem.power_key:
                break
            log("modem", "silent: PWRKEY")
            if pulse > 1:
                await modem.power_key(_OFF_MS)
                await sleep_ms(2000)
            await modem.power_key(_ON_MS)
        for _ in range(_BOOT_TRIES if pulse else 3):
            try:
                await chan.command("AT", 1000)
                return
            except (ATTimeout, ATError):
                await sleep_ms(1000)
    raise ATTimeout("modem silent")


async def bring_up(session, ms=120000):
    """Bring the session's modem up: power-cycle it first when session.need is POWER_CYCLE (it hung);
    wake it, switch echo off, set numeric errors, the APN, call and SMS handling and DTR sleep; wait for
    the SIM; read the identity; wait up to ms for registration; read signal, cell and network time."""
    modem = session.modem
    if session.need == POWER_CYCLE and modem.power_key:  # off (a long PWRKEY pulse); wake switches it on
        log("modem", "hung: power cycle")
        await modem.power_key(_OFF_MS)
        await sleep_ms(2000)
    session.need = BRING_UP
    with open("config.json") as f:  # checked at boot
        apn = json.load(f).get("apn", "internet")
    modem.ready = False
    modem.gnss = None  # a modem brought up again has its GNSS off
    chan = modem.chan
    await wake(modem)
    for cmd in _SETUP + ('AT+CGDCONT=1,"IP","%s"' % apn,) + _OPTIONAL:
        try:
            await chan.command(cmd, 2000)
        except ATError as e:
            if cmd in _SETUP:
                raise
            log("modem", "%s refused: %s" % (cmd, e))
    for _ in range(20):  # the SIM may still be starting
        try:
            if await modem.query("AT+CPIN?") == "+CPIN: READY":
                break
        except ATError:
            pass
        await sleep_ms(1000)
    else:
        raise ATTimeout("SIM not ready")
    modem.imei = await modem.query("AT+CGSN")
    deadline = ticks_add(ticks_ms(), ms)
    while await refresh(modem) not in _REGISTERED:
        if ticks_diff(deadline, ticks_ms()) <= 0:
            raise ATTimeout("not registered")
        await sleep_ms(2000)
    seconds = parse_cclk(await modem.query("AT+CCLK?") or "")
    if seconds:
        modem.set_time(seconds)
    modem.ready = True
    log("modem", "ready %s %s %s dBm" % (modem.imei, modem.reg, modem.rssi))


async def refresh(modem):
    """Update signal (AT+CSQ), registration (AT+CEREG? for LTE, then AT+CREG?), radio technology and
    serving cell (AT+CPSI?); return the registration name."""
    try:
        rssi = int(fields(await modem.query("AT+CSQ"))[0])
    except (TypeError, ValueError):
        rssi = 99
    modem.rssi = -113 + 2 * rssi if 0 <= rssi <= 31 else None  # 99: unknown
    reg = "none"
    for cmd in "AT+CEREG?", "AT+CREG?":
        try:  # stat 1 home, 5 roaming, 2 searching, 3 denied, others none
            name = "none home searching denied none roaming".split()[int(fields(await modem.query(cmd))[1])]
        except (TypeError, ValueError, IndexError):
            name = "none"
        if reg == "none" or name in _REGISTERED:
            reg = name
    modem.reg = reg
    line = await modem.query("AT+CPSI?")
    if line:
        rat, cell = parse_cpsi(line)
        if rat != modem.rat:
            modem.rat = rat
        if cell and cell != modem.cell:
            modem.cell = cell
    return reg


async def heartbeat(app):
    """Read the network status and publish `tele`."""
    modem = app.modem
    try:
        await refresh(modem)
    except (ATError, ATTimeout) as e:
        log("app", "modem status not read: %r" % e)
    board = app.board
    await app.session.publish("tele", tele(
        modem.now(), app.state.boot, app.uptime, app.battery(), board.battery_mv(), board.charging(),
        modem.rssi, modem.reg, modem.rat, modem.fix, FW, app.settings["rev"], len(app.outbox.names()),
        gc.mem_free()))


def tele(tst, boot, up, batt, mv, chg, rssi, reg, rat, fix, fw, cfg, out, heap):
    """The `tele` message."""
    return protocol.encode(
        '{"tst":%s,"boot":%s,"up":%s,"batt":%s,"mv":%s,"chg":%s,"rssi":%s,"reg":%s,"rat":%s,'
        '"loc":%s,"fw":%s,"cfg":%s,"out":%s,"heap":%s}',
        (tst, boot, up, batt, mv, chg, rssi, reg, rat, protocol.loc(fix), fw, cfg, out, heap))
