"""The backend's commands (`cmd`, docs/protocol.md): locate, test_alarm, vibrate, reboot, selftest.

Every command is answered on `cmd/res` with its correlation id; `locate` is answered by gnss.py once a
fresh fix came (or after 30 s with the last known one).
"""

import gc
import json
import os

from . import log, protocol
from .atchan import ATError, ATTimeout
from .gnss import Locate

_PATTERNS = ("sent", "received", "acknowledged", "failed")


async def receive(app, payload):
    """A `cmd` message: carry out the command and answer it (a malformed one is logged and dropped)."""
    command = protocol.decode(payload)
    if not command or type(command.get("id")) is not str:
        log("app", "malformed command")
        return
    cid = command["id"]
    name = command.get("cmd")
    log("app", "command %s" % name)
    answer = (cid, None)
    try:
        if name == "locate":
            app.locating = Locate(cid, app.modem.fix_ticks)
            return  # the worker answers (gnss.py)
        if name == "test_alarm":
            answer = (cid, None, "alarm_id", app.alarms.raise_alarm("test", True))
        elif name == "vibrate":
            pattern = command.get("pattern", "sent")
            if pattern not in _PATTERNS:
                answer = (cid, "unknown pattern")
            else:
                await app.alarms.vibrate(pattern)
        elif name == "reboot":
            await app.session.publish("cmd/res", cmd_res(cid))
            app.board.reset()
        elif name == "selftest":
            answer = (cid, None, "report", await report(app))
        else:
            answer = (cid, "unknown command")
    except (ATError, ATTimeout) as e:
        answer = (cid, "modem error: %s" % e)
    await app.session.publish("cmd/res", cmd_res(*answer))


async def report(app):
    """The self-test: what the pendant can check of itself, as the JSON bytes of the `report` object.
    `pass` is true when the modem answers, the SIM is ready, the pendant is registered, the flash
    takes a write and the battery is readable."""
    modem = app.modem
    board = app.board
    try:
        await modem.chan.command("AT", 2000)
        at = True
        sim = await modem.query("AT+CPIN?") == "+CPIN: READY"
    except (ATError, ATTimeout):
        at = sim = False
    try:
        with open("selftest.tmp", "w") as f:
            f.write("ok")
        os.remove("selftest.tmp")
        flash = True
    except OSError:
        flash = False
    gc.collect()
    mv = board.battery_mv()
    registered = modem.reg in ("home", "roaming")
    return dumps({
        "pass": at and sim and registered and flash and mv is not None,
        "modem": at, "sim": sim, "reg": modem.reg, "rssi": modem.rssi, "rat": modem.rat,
        "gnss": modem.gnss is not None, "fix": modem.fix is not None, "flash": flash, "mv": mv,
        "batt": app.battery(), "chg": board.charging(), "out": len(app.outbox.names()),
        "heap": gc.mem_free(), "cfg": app.settings["rev"], "boot": app.state.boot, "up": app.uptime,
    })


def cmd_res(cmd_id, err=None, *fields):
    """`cmd/res`: a failure with err (a short reason), else success with the result's own fields (key,
    value, key, value, ...)."""
    if err is not None:
        return protocol.encode('{"id":%s,"ok":false,"err":%s}', (cmd_id, err))
    return protocol.pairs('{"id":%s,"ok":true', (cmd_id,), fields)


def dumps(value):
    """Compact JSON (bytes) of any value: for objects whose field order does not matter."""
    return json.dumps(value, separators=(",", ":")).encode()
