"""Topics and the JSON of every message in docs/protocol.md (protocol version 1).

Encoders return compact UTF-8 JSON bytes with the fields in the order of docs/protocol-examples/
(MicroPython dicts do not keep insertion order, so the messages are formatted here). A fix is the tuple
(lat_e6, lon_e6, acc_m, tst) in integer micro-degrees, so the ESP32's single-precision float loses
nothing; a cell is (rat, mcc, mnc, lac, cid). Decoders return None for anything malformed.
Encoders take their fields positionally (*v): on the unix port every parameter name costs heap.
"""

import json

# config: the integer fields as name, default, low, high (one flat tuple: cheaper than a dict of tuples);
# the lists of phone numbers "sms", "call", "callback" default to []
CONFIG_INTS = (
    "rev", 0, 0, 999999999,
    "heartbeat_s", 180, 60, 86400,
    "ack_timeout_s", 30, 5, 300,
    "press_ms", 2000, 300, 10000,
    "batt_low", 20, 5, 50,
    "batt_critical", 5, 1, 20,
    "loc_s", 30, 10, 600,
)


def _encode(text, v):
    # text: the message with a %s per field; bytes values are JSON already (loc, cell), others are dumped
    values = []
    for x in v:
        values.append(x.decode() if type(x) is bytes else json.dumps(x))
    return (text % tuple(values)).encode()


def _loc(fix):
    if not fix:
        return b"null"
    form = '{"lat":%s%d.%06d,"lon":%s%d.%06d,"acc":%d,"tst":%s,"src":"gnss"}'
    lat, lon = fix[0], fix[1]
    return (form % ("-"[: lat < 0], abs(lat) // 1000000, abs(lat) % 1000000, "-"[: lon < 0], abs(lon) // 1000000,
                    abs(lon) % 1000000, fix[2], json.dumps(fix[3]))).encode()


def status(*v):
    """`status`: (True, boot, sess, fw) is the birth, (False, boot, sess) the will."""
    return _encode('{"online":%s,"boot":%s,"sess":%s' + (',"fw":%s}' if v[0] else "}"), v)


def alarm(*v):
    """`alarm` from (alarm_id, kind, tst, fix, cell, batt, test); fix and cell may be None, and the
    cell is only sent without a fix."""
    cell = v[4]
    if v[3] or not cell:
        cell = b"null"
    else:
        cell = _encode('{"mcc":%s,"mnc":%s,"lac":%s,"cid":%s,"rat":%s}', cell[1:] + cell[:1])
    return _encode('{"alarm_id":%s,"kind":%s,"tst":%s,"loc":%s,"cell":%s,"batt":%s,"test":%s}',
                   v[:3] + (_loc(v[3]), cell) + v[5:])


def tele(*v):
    """`tele` from (tst, boot, up, batt, mv, chg, rssi, reg, rat, fix, fw, cfg, out, heap)."""
    return _encode('{"tst":%s,"boot":%s,"up":%s,"batt":%s,"mv":%s,"chg":%s,"rssi":%s,"reg":%s,"rat":%s,'
                   '"loc":%s,"fw":%s,"cfg":%s,"out":%s,"heap":%s}', v[:9] + (_loc(v[9]),) + v[10:])


def evt(*v):
    """`evt` from (name, tst, key, value, key, value, ...): the event's own fields after name and tst."""
    form = '{"evt":%s,"tst":%s'
    values = list(v[:2])
    for i in range(2, len(v) - 1, 2):  # MicroPython slices have no step
        form += ',"' + v[i] + '":%s'
        values.append(v[i + 1])
    return _encode(form + "}", values)


def cmd_res(*v):
    """`cmd/res` from (id,) or (id, None) when the command succeeded, else (id, err: a short reason)."""
    if len(v) < 2 or v[1] is None:
        return _encode('{"id":%s,"ok":true}', v[:1])
    return _encode('{"id":%s,"ok":false,"err":%s}', v[:2])


def decode(payload, *names):
    """Parse a JSON object; with names, the tuple of those fields if all are strings. None if the
    payload is not such an object."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if type(message) is not dict:
        return None
    if not names:
        return message
    values = []
    for name in names:
        value = message.get(name)
        if type(value) is not str:
            return None
        values.append(value)
    return values


def check_config(message, config=None):
    """Validate a decoded `config`: None if valid, else (field, reason). Unknown fields are ignored.
    When valid and a config dict is given, set all its fields: the message's, or the defaults for the
    fields it leaves out (check_config({}, {}) fills in the configuration before any `config`)."""
    if message and "rev" not in message:
        return "rev", "missing"
    for apply in (False, True):  # validate everything first, then apply
        for i in range(0, len(CONFIG_INTS), 4):
            name, default, low, high = CONFIG_INTS[i : i + 4]
            value = message.get(name, default)
            if type(value) is not int or not low <= value <= high:
                return name, "must be %d..%d" % (low, high)
            if apply and config.get(name) != value:  # unchanged values stay: less heap churn
                config[name] = value
        for name in ("sms", "call", "callback"):
            value = message.get(name, [])
            if type(value) is not list or len(value) > 8:
                return name, "must be a list of phone numbers"
            for number in value:
                if type(number) is not str or not (number[1:] if number[:1] == "+" else number).isdigit():
                    return name, "must be a list of phone numbers"
            if apply and config.get(name) != value:
                config[name] = value
        if config is None:
            return None
    return None
