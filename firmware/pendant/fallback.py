"""The SMS and voice-call fallback for an alarm the data path did not deliver, and taking call-backs: one
step at a time.

The fallback goes in rounds (settings["rounds"], with pauses of 30 s, 60 s, ... up to 5 minutes between
them): an SMS with the location to every number of settings["sms"] not reached yet, then calls to the
numbers of settings["call"] in order until one answers (`VOICE CALL: BEGIN`); the call stays up until the
other side hangs up. It ends when every SMS is sent and a call was answered, after the last round, or
as soon as the backend acks the alarm. A test alarm's SMS says TEST, and a test alarm never calls.
Call-backs: an incoming call from a number of settings["callback"] (the police calling back) is
answered; others are left to ring.

The app's phone task loads this module for one `step` (send one SMS, dial one number, note how a call
went, answer a call-back) and drops it again; the waits between steps (a number ringing, a call, the
pause between rounds) happen in the phone task with the module out of memory, so the data path's own
modules get the room meanwhile. Each step writes the fallback's progress into a note next to the alarm
in the outbox, so a reboot resumes it (an SMS whose sending was cut short may go twice; none is
skipped). When it is over (or the backend acks the alarm first: alarm.py), a `fallback` event saying what
happened is queued in the outbox: it goes out when the data path is back.
"""

import json
from time import ticks_diff, ticks_ms

from micropython import const

from . import log, protocol
from .atchan import ATError, ATTimeout
from .modem import ACTIVE, DIALLING, ENDED, FAILED, IDLE

_RING_MS = const(45000)  # how long a called number may ring
_TALK_MS = const(3600000)  # a call is hung up after an hour
# the note: [numbers the SMS reached, numbers it did not reach (yet), calls made, the number that
#  answered, seconds talked, rounds done, over, numbers tried this round, the next call this round,
#  the number being called]
_SENT = const(0)
_FAILED = const(1)
_CALLS = const(2)
_ANSWERED = const(3)
_TALKED = const(4)
_ROUNDS = const(5)
_OVER = const(6)
_TRIED = const(7)
_NEXT = const(8)
_DIALLED = const(9)


def same_number(a, b):
    """True when two phone numbers name the same line: +31612345678 and 0612345678 match on their last 9
    digits (the national part); shorter numbers (112) must match exactly."""
    a = a.lstrip("+")
    b = b.lstrip("+")
    return a[-9:] == b[-9:] if len(a) >= 9 and len(b) >= 9 else a == b


def _degrees(e6):
    return "%s%d.%06d" % ("-"[: e6 < 0], abs(e6) // 1000000, abs(e6) % 1000000)


def sms_text(device_id, kind, test, fix, cell, batt, now):
    """The fallback SMS: plain ASCII that the GSM 7-bit alphabet carries as is, at most 160 characters.
    Who (device id, not a name), what, where (position, accuracy, age and a map link; else the cell),
    when (UTC) and the battery."""
    text = "%sALARM %s %s" % ("TEST " if test else "", kind.upper(), device_id)
    if fix:
        lat, lon = _degrees(fix[0]), _degrees(fix[1])
        text += " %s,%s +-%dm" % (lat, lon, fix[2])
        if fix[3] and now:
            text += " age %ds" % max(0, now - fix[3])
        text += " https://maps.google.com/?q=%s,%s" % (lat, lon)
    elif cell:
        text += " no fix, cell %s %d-%d LAC %s CID %s" % cell
    else:
        text += " no location"
    if now:
        text += " %02d:%02dZ" % (now // 3600 % 24, now // 60 % 60)
    if batt is not None:
        text += " batt %d%%" % batt
    return text[:160]


async def step(app):
    """One step for the phone task; return how long (ms) it may wait for the call state to change
    before the next step (0: at once)."""
    modem = app.modem
    c = modem.call
    alarms = app.alarms
    owner = c[5]  # "in": a call-back we took; an outbox name: the fallback call of that alarm
    late = alarms.late  # [alarm_id, note, outbox name] of an alarm acked while its fallback ran
    if owner == "in" or owner and owner not in alarms._queued:
        if c[0] == ACTIVE and ticks_diff(ticks_ms(), c[1]) < _TALK_MS:
            return _TALK_MS  # a call-back, or the call of an alarm acked since, that is on: let it go on
        if c[0] == ACTIVE or c[0] == DIALLING:
            await hangup(modem)  # ringing still when the ack came: the data path has it now
        log("phone", "call over after %d s" % c[2])
        if late and late[2] == owner:
            _noted(c, late[1])
        c[0], c[5] = IDLE, None
        return 0
    if late:  # no call of its own going on: say what the fallback did
        alarms.late = None
        report(app, late[0], late[1])
        return 0
    number = modem.ringing()
    if number is not None and number != c[6] and not owner:
        return await _incoming(app, number)
    due = app.alarms.fallback_due()
    return await _alarm(app, due[0], due[1]) if due else 0


async def _incoming(app, number):
    # A call rings: answer a call-back from a whitelisted number, leave others to ring.
    c = app.modem.call
    for allowed in app.settings["callback"]:
        if number and same_number(allowed, number):
            log("phone", "answering a call-back")
            c[4] = 0
            try:
                await app.modem.chan.command("ATA", 5000)
            except (ATError, ATTimeout) as e:
                log("phone", "answer: %r" % e)
                return 0
            c[0], c[1], c[5] = ACTIVE, ticks_ms(), "in"
            return _TALK_MS
    c[6] = number  # logged once
    log("phone", "not answering a call from an unknown number")
    return 0


async def _alarm(app, name, alarm_id):
    # The next step of the fallback of alarm `name`, from its note. (Split in pieces: a heap in use a
    # long time has room in small pieces only, and every function's code is one piece.)
    alarms = app.alarms
    try:
        note = json.loads(alarms.outbox.note(name))
        if len(note) != 10:
            raise ValueError
    except (TypeError, ValueError):  # no note yet (or not one of ours): it starts now
        note = [[], [], 0, None, 0, 0, False, [], 0, None]
        log("fallback", "start %s" % alarm_id)
    if note[_DIALLED]:
        wait = await _called(app.modem, note)
    else:
        item = alarms.outbox.read(name)
        # Only the kind and the test flag are needed: found in the bytes, as a decoded alarm would take
        # a few hundred bytes in one piece from a heap that may be short just now (alarm.py wrote them).
        body = item[1] if item else b""
        test = b'"test":true' in body
        kind = "power_off" if b'"kind":"power_off"' in body else "test" if test else "panic"
        wait = await _sms(app, note, kind, test)
        if wait is None:
            wait = await _call(app, name, note, test)
        if wait is None:
            wait = await _round(app, name, alarm_id, note, test)
    _save(alarms, name, note)
    return wait


async def _called(modem, note):
    # How did the call go? Answered and on: let it go on; else (hung up when it rang or lasted too long)
    # over, and the next step goes on.
    c = modem.call
    if c[0] == ACTIVE and note[_ANSWERED] != note[_DIALLED] and ticks_diff(ticks_ms(), c[1]) < _TALK_MS:
        _noted(c, note)
        return _TALK_MS
    if c[0] == DIALLING or c[0] == ACTIVE:
        await hangup(modem)
    _noted(c, note)
    note[_DIALLED] = None
    c[0], c[5] = IDLE, None
    return 0


def _noted(c, note):
    # Note how the call to note[_DIALLED] went, as the modem's call state tells: answered (on, or over
    # after `VOICE CALL: BEGIN`, however short) and for how long.
    if (c[0] == ACTIVE or c[0] == ENDED) and not note[_ANSWERED]:
        note[_ANSWERED] = note[_DIALLED]
        log("fallback", "%s answered" % note[_DIALLED])
    if c[0] == ENDED and note[_ANSWERED] == note[_DIALLED]:
        note[_TALKED] = c[2]


async def _sms(app, note, kind, test):
    # One SMS, to the first number not reached nor tried this round; None when there is none.
    modem = app.modem
    for number in app.settings["sms"]:
        if number not in note[_SENT] and number not in note[_TRIED]:
            note[_TRIED].append(number)
            text = sms_text(app.device_id, kind, test, modem.fix,
                            modem.cell, app.battery(), modem.now())
            try:
                await modem.chan.command('AT+CMGS="%s"' % number, 60000, text.encode() + b"\x1a")
            except (ATError, ATTimeout, OSError) as e:  # the next round tries again
                log("fallback", "sms to %s: %r" % (number, e))
                if number not in note[_FAILED]:
                    note[_FAILED].append(number)
                return 0
            log("fallback", "sms to %s" % number)
            note[_SENT].append(number)
            if number in note[_FAILED]:
                note[_FAILED].remove(number)
            if len(note[_SENT]) == 1:
                await app.alarms.vibrate("sent")
            return 0
    return None


async def _call(app, name, note, test):
    # One call, to the next number of this round, until one answered; None when there is none.
    calls = app.settings["call"]
    if test or note[_ANSWERED] or note[_NEXT] >= len(calls):
        return None
    number = calls[note[_NEXT]]
    note[_NEXT] += 1
    note[_CALLS] += 1
    note[_DIALLED] = number
    _save(app.alarms, name, note)  # before dialling: a reboot must know a call was made
    log("fallback", "calling %s" % number)
    c = app.modem.call
    c[0], c[1], c[2], c[5] = DIALLING, ticks_ms(), 0, name
    try:
        await app.modem.chan.command("ATD%s;" % number, 10000)
    except ATError as e:
        log("fallback", "dial: %r" % e)
        c[0] = FAILED
    except ATTimeout:
        pass  # a firmware that answers BUSY instead of OK: the call state tells
    return _RING_MS if c[0] == DIALLING else 0


async def _round(app, name, alarm_id, note, test):
    # The round is over: another one after a pause, or the end (the report, and `failed` felt when
    # nobody was reached).
    settings = app.settings
    alarms = app.alarms
    note[_ROUNDS] += 1
    note[_TRIED] = []
    note[_NEXT] = 0
    calls = settings["call"]
    if note[_ROUNDS] < settings["rounds"] and (note[_FAILED] or calls and not note[_ANSWERED] and not test):
        return min(30000 << (note[_ROUNDS] - 1), 300000)
    # Over. In this order, so that a MemoryError on the way (the phone task then runs the step again)
    # never leaves the fallback marked over without its report:
    note[_OVER] = True
    if settings["sms"] or calls:
        report(app, alarm_id, note)
    else:
        log("fallback", "no numbers configured")
    _save(alarms, name, note)  # over on flash: a reboot does not run it again
    alarms._queued[name][5] = 2  # nor this boot
    log("fallback", "over %s" % alarm_id)
    if not note[_SENT] and not note[_ANSWERED]:
        await alarms.vibrate("failed")  # never raises
    return 0


def report(app, alarm_id, note):
    """Queue the `fallback` event for alarm_id from its note: what the fallback did."""
    app.outbox.put("evt", protocol.evt(
        "fallback", app.modem.now(), "alarm_id", alarm_id, "sms", note[_SENT], "sms_failed", note[_FAILED],
        "calls", note[_CALLS], "answered", note[_ANSWERED], "call_s", note[_TALKED], "rounds", note[_ROUNDS]))


def _save(alarms, name, note):
    if name in alarms._queued:  # an acked alarm has left the outbox, and its note with it
        alarms.outbox.put_note(name, json.dumps(note))


async def hangup(modem):
    """End the call (AT+CHUP); errors are logged, as there may be no call left to end."""
    c = modem.call
    if c[0] == ACTIVE:  # the END URC may not come after our own hang-up: count the seconds here
        c[2] = ticks_diff(ticks_ms(), c[1]) // 1000
    try:
        await modem.chan.command("AT+CHUP", 5000)
    except (ATError, ATTimeout) as e:
        log("phone", "hang up: %r" % e)
    if c[0] != IDLE:
        c[0] = ENDED if c[0] == ACTIVE or c[0] == ENDED else FAILED
