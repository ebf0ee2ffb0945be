"""Starting the pendant: config.json, the settings, the outbox and counters as a power cut may have
left them, the board, and every long-lived object wired to the others. Runs once at boot.

Flash after a power cut (see store.py): a complete `<n>.msg.tmp` (its payload parses) becomes the
message, a torn one is deleted; nothing handed to Outbox.put is lost and nothing half-written is sent.
A note left as `.tmp`, or without its message, is deleted. state.json is read, else state.json.tmp (a
FAT rename cut short), else the counters start afresh, the boot counter at a random number.
"""

import json
import os

from . import config, log
from .alarm import Alarms
from .atchan import ATChannel
from .modem import Modem
from .mqtt import Session
from .store import Outbox, State

_WDT_MS = 30000


def load_device_config(path="config.json"):
    """Read config.json (written at provisioning); ValueError saying what is wrong with it."""
    try:
        with open(path) as f:
            device = json.load(f)
        mqtt = device["mqtt"]
        if type(mqtt["port"]) is not int:
            raise TypeError("port is not a number")
        for value in (device["device_id"], mqtt["host"], mqtt.get("user", ""), mqtt.get("password", ""),
                      device.get("apn", "")):
            if '"' in value:  # these go into AT commands between quotes
                raise TypeError("a quote in a value")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError("%s missing or not a device config: %r" % (path, e)) from None
    return device


def load_state():
    """The State on flash, or a new one with a random boot counter (see store.py)."""
    for path in ("state.json", "state.json.tmp"):
        try:
            with open(path) as f:
                saved = json.load(f)
            return State((saved["boot"], saved["seq"], saved["sess"], saved.get("open")))
        except OSError:
            pass  # no such file: try the next
        except (ValueError, KeyError, TypeError, AttributeError):
            log("state", "unreadable " + path)
    return State((int.from_bytes(os.urandom(4), "big") >> 3, 0, 0, None))


def open_outbox(path="outbox"):
    """The Outbox in folder path, tidied after a power cut, numbering after its last message."""
    outbox = Outbox(path)
    for folder in (path, outbox.notes[:-1]):
        try:
            os.mkdir(folder)
        except OSError:
            pass  # it exists already
    folder = path + "/"
    names = os.listdir(path)
    for name in names:
        if name.endswith(".msg.tmp"):
            try:
                json.loads(outbox.read(name)[1])
                os.rename(folder + name, folder + name[:-4])
                log("outbox", "kept complete " + name)
                continue
            except (TypeError, ValueError, OSError):
                log("outbox", "dropped torn " + name)
        elif not name.endswith(".tmp"):
            continue
        os.remove(folder + name)
    names = os.listdir(path)
    for name in os.listdir(outbox.notes):  # a note left as .tmp, or without its message
        if name.endswith(".tmp") or name[:-3] + ".msg" not in names:
            os.remove(outbox.notes + name)
    for name in outbox.names():
        outbox.next_number = max(outbox.next_number, int(name[:-4]) + 1)
    return outbox


def count_boot(state, alarms):
    """Count this boot: the counter one up, and above the boot of every queued alarm (an alarm id is never
    reused, even when state.json was lost); the alarm sequence from 1. On flash before it is used."""
    highest = 0
    for entry in alarms.queued.values():
        boot = entry.alarm_id.split("-")[0]
        if boot.isdigit():
            highest = max(highest, int(boot))
    state.boot = max(state.boot, highest) + 1
    state.seq = 0
    state.save()
    log("state", "boot counter %d" % state.boot)


def start(app):
    """Build app's objects and fill app.settings, count the boot and arm the watchdog; return (device_id,
    outbox, state, board, modem, session, alarms, watchdog), or False when the pendant cannot start
    (logged): without a usable config.json it waits for provisioning (app.main)."""
    try:
        device_id = load_device_config()["device_id"]  # the rest is read when needed
    except ValueError as e:
        if "config.json" not in os.listdir():
            log("config", "none; waiting for provisioning")  # fresh from the factory
        else:
            log("config", "unusable; waiting for provisioning: %s" % e)
        return False
    try:
        outbox = open_outbox()
        state = load_state()
        app.board = board = app.boards.Board(device_id)  # sim.json, on the sim board; app.battery reads it
    except (OSError, ValueError, KeyError) as e:
        log("app", "cannot start: %s" % e)
        return False
    config.load(app.settings)
    chan = ATChannel(board.open_modem)
    chan.dtr = board.dtr
    modem = Modem(chan, board.pwrkey)
    session = Session(modem, device_id, state)
    alarms = Alarms(session, outbox, state, modem, board, app.settings, app.battery, app.report_memory)
    count_boot(state, alarms)
    if "pressed" in os.listdir():  # a press whose alarm could not be raised before the reboot (app.py)
        alarms.raise_alarm()
        os.remove("pressed")
    session.on_message = app.on_message
    session.on_connect = alarms.on_connect
    wdt = board.watchdog(_WDT_MS)
    log("app", "started on %s, config rev %d" % (board.NAME, app.settings["rev"]))
    return device_id, outbox, state, board, modem, session, alarms, wdt
