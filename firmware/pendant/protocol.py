"""The JSON of the messages in docs/protocol.md (protocol version 1) that the alarm path sends (alarm, evt,
with their loc and cell objects), and decoding what the backend sends. The rarely sent ones are made
where they are sent, in modules loaded only then: `status` and `tele` in connect.py, `cmd/res` in
commands.py (the heap has no room to keep them loaded).

Encoders return compact UTF-8 JSON bytes with the fields in the order of docs/protocol-examples/
(MicroPython dicts do not keep insertion order, so the messages are formatted here). A fix is the tuple
(lat_e6, lon_e6, acc_m, tst) in integer micro-degrees, so the ESP32's single-precision float loses
nothing; a cell is (rat, mcc, mnc, lac, cid). Decoders return None for anything malformed.
Encoders take their fields positionally (*v): on the unix port every parameter name costs heap.
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
    lat, lon = fix[0], fix[1]
    return (form % ("-"[: lat < 0], abs(lat) // 1000000, abs(lat) % 1000000, "-"[: lon < 0], abs(lon) // 1000000,
                    abs(lon) % 1000000, fix[2], json.dumps(fix[3]))).encode()


def alarm(*v):
    """`alarm` from (alarm_id, kind, tst, fix, cell, batt, test); fix and cell may be None, and the
    cell is only sent without a fix."""
    return encode('{"alarm_id":%s,"kind":%s,"tst":%s,"loc":%s,"cell":%s,"batt":%s,"test":%s}',
                   v[:3] + (loc(v[3]), cell(None if v[3] else v[4])) + v[5:])


def cell(c):
    """The `cell` object of a serving cell (rat, mcc, mnc, lac, cid), or null."""
    if not c:
        return b"null"
    return encode('{"mcc":%s,"mnc":%s,"lac":%s,"cid":%s,"rat":%s}', c[1:] + c[:1])


def evt(*v):
    """`evt` from (name, tst, key, value, key, value, ...): the event's own fields after name and tst."""
    return pairs('{"evt":%s,"tst":%s', v[:2], v[2:])


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
    except ValueError:
        return None
    if type(message) is not dict:
        return None
    for name in names:
        if type(message.get(name)) is not str:
            return None
    return message
