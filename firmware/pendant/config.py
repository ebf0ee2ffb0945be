"""The `config` document (docs/protocol.md): validation field by field, defaults, and its copy on flash.

The settings dict it fills holds every field, so the rest of the firmware reads settings["press_ms"] without knowing the defaults.
"""

import json

from . import log, protocol
from .store import write

PATH = "settings.json"  # the config in force, as the backend sent it
# The integer fields as (name, default, low, high). A value equal to the default is always valid:
# presses 0 turns the multi-press gesture off.
INTS = (
    ("rev", 0, 0, 999999999),
    ("heartbeat_s", 180, 60, 86400),
    ("ack_timeout_s", 30, 5, 300),
    ("press_ms", 2000, 300, 10000),
    ("presses", 0, 2, 6),
    ("off_ms", 3000, 1000, 10000),
    ("batt_low", 20, 5, 50),
    ("batt_critical", 5, 1, 20),
    ("loc_s", 30, 10, 600),
    ("fix_s", 600, 60, 86400),
    ("rounds", 5, 1, 10),
)
LISTS = ("sms", "call", "callback")  # phone numbers, default []


def _number(value):
    return type(value) is str and 2 <= len(value.lstrip("+")) <= 20 and value.lstrip("+").isdigit() \
        and value.count("+") <= 1


def check(message, config=None):
    """Validate a decoded `config`: None if valid, else (field, reason). Unknown fields are ignored.
    When valid and a config dict is given, set all its fields: the message's, or the defaults for the
    fields it leaves out (check({}, settings) fills in the defaults)."""
    if message and "rev" not in message:
        return "rev", "missing"
    for apply in (False, True):  # validate everything first, then apply
        for name, default, low, high in INTS:
            value = message.get(name, default)
            if type(value) is not int or value != default and not low <= value <= high:
                return name, "must be %d..%d" % (low, high)
            if apply:
                config[name] = value
        for name in LISTS:
            value = message.get(name, [])
            if type(value) is not list or len(value) > 8 or [n for n in value if not _number(n)]:
                return name, "must be a list of up to 8 phone numbers"
            if apply:
                config[name] = value
        value = message.get("off_alarm", False)
        if type(value) is not bool:
            return "off_alarm", "must be true or false"
        if message.get("batt_critical", 5) >= message.get("batt_low", 20):
            return "batt_critical", "must be below batt_low"
        if config is None:
            return None
        config["off_alarm"] = value
    return None


def load(settings):
    """Fill settings (a dict) from the config on flash, or with the defaults when there is none."""
    message = {}
    for path in (PATH, PATH + ".tmp"):  # .tmp: a FAT rename cut short
        try:
            with open(path) as f:
                message = json.load(f)
            break
        except OSError:
            pass  # never configured: the defaults
        except ValueError:
            log("config", "unreadable " + path)
    if type(message) is not dict or check(message, settings):
        check({}, settings)


def save(payload):
    """Keep the config just applied (its JSON bytes) on flash, atomically."""
    write(PATH, payload)


async def receive(app, message, payload):
    """A `config` message (decoded, and its bytes) with a revision newer than the one in force and not
    refused before (app.py looks): applied when every field is valid (then kept on flash), else refused
    naming the field; either way reported on `evt`."""
    rev = message.get("rev")
    problem = check(message, app.settings)
    if problem:
        app.rejected = rev
        event = ("config_rejected", app.modem.now(), "rev", rev, "field", problem[0], "err", problem[1])
    else:
        save(payload)
        event = ("config_applied", app.modem.now(), "rev", rev)
    log("app", "%s %s" % (event[0], rev))
    await app.session.publish("evt", protocol.evt(*event))
