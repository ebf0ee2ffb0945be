"""The JSON of the messages in docs/protocol.md (protocol version 1) that the alarm path sends (alarm, evt,
with their loc and cell objects), and decoding what the backend sends. The others are made where they
are sent: `status` in connect.py, `tele` in network.py, `cmd/res` in commands.py.

Encoders return compact UTF-8 JSON bytes with the fields in the order of docs/protocol-examples/
(MicroPython dicts do not keep insertion order, so the messages are formatted here). A fix is the tuple
(lat_e6, lon_e6, acc_m, tst) in integer micro-degrees, so the ESP32's single-precision float loses
nothing; a cell is (rat, mcc, mnc, lac, cid). Decoders return None for anything malformed.
"""

import json


def encode(text, v):
    """The message text with a %s per field of v: bytes values are JSON already (loc, cell), others are
    dumped."""
    values = []
    for x in v:
        values.append(x.decode() if type(x) is bytes else json.dumps(x, separators=(",", ":")))
    return (text % tuple(values)).encode()


def loc(fix):
    """The `loc` object of a fix (see gnss.py), or null."""
    if not fix:
        return b"null"
    form = '{"lat":%s%d.%06d,"lon":%s%d.%06d,"acc":%d,"tst":%s,"src":"gnss"}'
    lat, lon, acc, tst = fix
    return (form % ("-"[: lat < 0], abs(lat) // 1000000, abs(lat) % 1000000, "-"[: lon < 0], abs(lon) // 1000000,
                    abs(lon) % 1000000, acc, json.dumps(tst))).encode()


def alarm(alarm_id, kind, tst, fix, serving, batt, test):
    """`alarm`; fix and serving (the cell) may be None, and the cell is only sent without a fix."""
    return encode('{"alarm_id":%s,"kind":%s,"tst":%s,"loc":%s,"cell":%s,"batt":%s,"test":%s}',
                  (alarm_id, kind, tst, loc(fix), cell(None if fix else serving), batt, test))


def cell(c):
    """The `cell` object of a serving cell (rat, mcc, mnc, lac, cid), or null."""
    if not c:
        return b"null"
    rat, mcc, mnc, lac, cid = c
    return encode('{"mcc":%s,"mnc":%s,"lac":%s,"cid":%s,"rat":%s}', (mcc, mnc, lac, cid, rat))


def evt(name, tst, *fields):
    """`evt` from its name, tst and its own fields as key, value, key, value, ..."""
    return pairs('{"evt":%s,"tst":%s', (name, tst), fields)


def pairs(form, values, more):
    """form and its values, then ,"key":value for each (key, value) of more, and the closing brace."""
    values = list(values)
    for i in range(0, len(more) - 1, 2):  # MicroPython slices have no step
        form += ',"' + more[i] + '":%s'
        values.append(more[i + 1])
    return encode(form + "}", values)


def decode(payload, *names):
    """Parse a JSON object; None unless the payload is one and the fields `names` are strings in it."""
    try:
        message = json.loads(payload)
    except (TypeError, ValueError):  # not JSON, or no payload at all (None)
        return None
    if type(message) is not dict:
        return None
    for name in names:
        if type(message.get(name)) is not str:
            return None
    return message
