"""The SMS and voice-call fallback for an alarm the data path did not deliver, and taking call-backs: one
step at a time.

The fallback goes in rounds (settings["rounds"], with pauses of 30 s, 60 s, ... up to 5 minutes between
them): an SMS with the location to every number of settings["sms"] not reached yet, then calls to the
numbers of settings["call"] in order until one answers (`VOICE CALL: BEGIN`); the call stays up until the
other side hangs up. It ends when every SMS is sent and a call was answered, after the last round, or
as soon as the backend acks the alarm. A test alarm's SMS says TEST, and a test alarm never calls.
Call-backs: an incoming call from a number of settings["callback"] (the police calling back) is
answered; others are left to ring.

The app's phone task runs one `step` at a time (send one SMS, dial one number, note how a call went,
answer a call-back); the waits between steps (a number ringing, a call, the pause between rounds) are
the phone task's. Each step writes the fallback's progress (a store.Note) next to the alarm in the
outbox, so a reboot resumes it (an SMS whose sending was cut short may go twice; none is
skipped). When it is over (or the backend acks the alarm first: alarm.py), a `fallback` event saying what
happened is queued in the outbox: it goes out when the data path is back.
"""

from time import ticks_diff, ticks_ms

from micropython import const

from . import log, protocol
from .alarm import DONE
from .atchan import ATError, ATTimeout
from .modem import ACTIVE, DIALLING, ENDED, FAILED, IDLE
from .store import Note

_RING_MS = const(45000)  # how long a called number may ring
_TALK_MS = const(3600000)  # a call is hung up after an hour


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
        lat, lon, acc, tst = fix
        lat, lon = _degrees(lat), _degrees(lon)
        text += " %s,%s +-%dm" % (lat, lon, acc)
        if tst and now:
            text += " age %ds" % max(0, now - tst)
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
    call = modem.call
    alarms = app.alarms
    owner = call.owner  # "in": a call-back we took; an outbox name: the fallback call of that alarm
    late = alarms.late  # an alarm acked while its fallback ran
    if owner == "in" or owner and owner not in alarms.queued:
        if call.state == ACTIVE and ticks_diff(ticks_ms(), call.since) < _TALK_MS:
            return _TALK_MS  # a call-back, or the call of an alarm acked since, that is on: let it go on
        if call.state == ACTIVE or call.state == DIALLING:
            await hangup(modem)  # ringing still when the ack came: the data path has it now
        log("phone", "call over after %d s" % call.seconds)
        if late and late.name == owner:
            _noted(call, late.note)
        call.state, call.owner = IDLE, None
        return 0
    if late:  # no call of its own going on: say what the fallback did
        alarms.late = None
        report(app, late.alarm_id, late.note)
        return 0
    number = modem.ringing()
    if number is not None and number != call.refused and not owner:
        return await _incoming(app, number)
    due = alarms.fallback_due()
    if not due:
        return 0
    name, entry = due
    return await _alarm(app, name, entry.alarm_id)


async def _incoming(app, number):
    # A call rings: answer a call-back from a whitelisted number, leave others to ring.
    call = app.modem.call
    for allowed in app.settings["callback"]:
        if number and same_number(allowed, number):
            log("phone", "answering a call-back")
            call.rang = None
            try:
                await app.modem.chan.command("ATA", 5000)
            except (ATError, ATTimeout) as e:
                log("phone", "answer: %r" % e)
                return 0
            call.state, call.since, call.owner = ACTIVE, ticks_ms(), "in"
            return _TALK_MS
    call.refused = number  # logged once
    log("phone", "not answering a call from an unknown number")
    return 0


async def _alarm(app, name, alarm_id):
    # The next step of the fallback of alarm `name`, from its note.
    alarms = app.alarms
    note = alarms.note(name)
    if note is None:  # no note yet (or not one of ours): it starts now
        note = Note()
        log("fallback", "start %s" % alarm_id)
    if note.dialled:
        wait = await _called(app.modem, note)
    else:
        _, payload = alarms.outbox.read(name) or (None, None)
        message = protocol.decode(payload)
        test = bool(message and message.get("test"))
        kind = message.get("kind", "panic") if message else "panic"
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
    call = modem.call
    talking = call.state == ACTIVE and ticks_diff(ticks_ms(), call.since) < _TALK_MS
    if talking and note.answered != note.dialled:
        _noted(call, note)
        return _TALK_MS
    if call.state == DIALLING or call.state == ACTIVE:
        await hangup(modem)
    _noted(call, note)
    note.dialled = None
    call.state, call.owner = IDLE, None
    return 0


def _noted(call, note):
    # Note how the call to note.dialled went, as the modem's call state tells: answered (on, or over
    # after `VOICE CALL: BEGIN`, however short) and for how long.
    if (call.state == ACTIVE or call.state == ENDED) and not note.answered:
        note.answered = note.dialled
        log("fallback", "%s answered" % note.dialled)
    if call.state == ENDED and note.answered == note.dialled:
        note.talked = call.seconds


async def _sms(app, note, kind, test):
    # One SMS, to the first number not reached nor tried this round; None when there is none.
    modem = app.modem
    for number in app.settings["sms"]:
        if number not in note.sent and number not in note.tried:
            note.tried.append(number)
            text = sms_text(app.device_id, kind, test, modem.fix, modem.cell, app.battery(), modem.now())
            try:
                await modem.chan.command('AT+CMGS="%s"' % number, 60000, text.encode() + b"\x1a")
            except (ATError, ATTimeout, OSError) as e:  # the next round tries again
                log("fallback", "sms to %s: %r" % (number, e))
                if number not in note.failed:
                    note.failed.append(number)
                return 0
            log("fallback", "sms to %s" % number)
            note.sent.append(number)
            if number in note.failed:
                note.failed.remove(number)
            if len(note.sent) == 1:
                await app.alarms.vibrate("sent")
            return 0
    return None


async def _call(app, name, note, test):
    # One call, to the next number of this round, until one answered; None when there is none.
    calls = app.settings["call"]
    if test or note.answered or note.next_call >= len(calls):
        return None
    number = calls[note.next_call]
    note.next_call += 1
    note.calls += 1
    note.dialled = number
    _save(app.alarms, name, note)  # before dialling: a reboot must know a call was made
    log("fallback", "calling %s" % number)
    call = app.modem.call
    call.state, call.since, call.seconds, call.owner = DIALLING, ticks_ms(), 0, name
    try:
        await app.modem.chan.command("ATD%s;" % number, 10000)
    except ATError as e:
        log("fallback", "dial: %r" % e)
        call.state = FAILED
    except ATTimeout:
        pass  # a firmware that answers BUSY instead of OK: the call state tells
    return _RING_MS if call.state == DIALLING else 0


async def _round(app, name, alarm_id, note, test):
    # The round is over: another one after a pause, or the end (the report, and `failed` felt when
    # nobody was reached).
    settings = app.settings
    alarms = app.alarms
    note.rounds += 1
    note.tried = []
    note.next_call = 0
    calls = settings["call"]
    if note.rounds < settings["rounds"] and (note.failed or calls and not note.answered and not test):
        return min(30000 << (note.rounds - 1), 300000)
    # Over. In this order, so that a failure on the way (the phone task then runs the step again) never
    # leaves the fallback marked over without its report:
    note.over = True
    if settings["sms"] or calls:
        report(app, alarm_id, note)
    else:
        log("fallback", "no numbers configured")
    _save(alarms, name, note)  # over on flash: a reboot does not run it again
    alarms.queued[name].fallback = DONE  # nor this boot
    log("fallback", "over %s" % alarm_id)
    if not note.sent and not note.answered:
        await alarms.vibrate("failed")  # never raises
    return 0


def report(app, alarm_id, note):
    """Queue the `fallback` event for alarm_id from its Note: what the fallback did."""
    app.outbox.put("evt", protocol.evt(
        "fallback", app.modem.now(), "alarm_id", alarm_id, "sms", note.sent, "sms_failed", note.failed,
        "calls", note.calls, "answered", note.answered, "call_s", note.talked, "rounds", note.rounds))


def _save(alarms, name, note):
    if name in alarms.queued:  # an acked alarm has left the outbox, and its note with it
        alarms.outbox.put_note(name, note.dumps())


async def hangup(modem):
    """End the call (AT+CHUP); errors are logged, as there may be no call left to end."""
    call = modem.call
    if call.state == ACTIVE:  # the END URC may not come after our own hang-up: count the seconds here
        call.seconds = ticks_diff(ticks_ms(), call.since) // 1000
    try:
        await modem.chan.command("AT+CHUP", 5000)
    except (ATError, ATTimeout) as e:
        log("phone", "hang up: %r" % e)
    if call.state != IDLE:
        call.state = ENDED if call.state == ACTIVE or call.state == ENDED else FAILED
