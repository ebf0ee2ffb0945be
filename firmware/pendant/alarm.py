"""The alarm flow: build, persist, publish, wait for `alarm/ack`, drop; resend after reconnect or reboot;
location updates while the alarm is open; when the fallback is due.

An alarm is on flash (outbox) before anything that can fail, so a power cut, a crash or an outage never
loses it; raising one touches no modem (it works while the modem is busy). Its content never changes:
every resend is the same message, and a fresh fix goes out as a `location` event instead. `send()`,
called by the app's worker every 50 ms, publishes every queued alarm once per MQTT connection and again,
oldest first, while the backend's `alarm/ack` for its alarm_id does not come: ack_timeout_s after the
send, then after twice the wait before, up to 5 minutes (or ack_timeout_s if longer); a reconnect
starts the waits again at ack_timeout_s. Only that ack removes it.
Other queued messages (events that must not be lost) are published once and removed. Duplicate and
unknown acks are harmless, and the backend stores an alarm once however often it comes.
The fallback is due for an alarm without an ack after ack_timeout_s, or at once when there was no
data path at the press (fallback.py runs it; its note in the outbox marks it started).
"""

from time import ticks_diff, ticks_ms

from micropython import const

from . import log, protocol
from .store import load_note

_REGISTERED = ("home", "roaming")
# Queued.fallback
NOT_DUE = const(0)
DUE = const(1)
DONE = const(2)


class Queued:
    """An alarm in the outbox, as this boot knows it."""

    def __init__(self, alarm_id, fallback=NOT_DUE):
        self.alarm_id = alarm_id
        self.raised = ticks_ms()  # when it was raised (or loaded at boot)
        self.gen = -1  # Session.gen of its last publish
        self.published = 0  # ticks_ms of that publish
        self.wait = 0  # ms from that publish to the next without an ack
        self.felt = False  # `sent` vibrated
        self.fallback = fallback  # NOT_DUE, DUE (at once, or resumed after a reboot), DONE
        self.acknowledged = False  # an operator took it (`acknowledged` felt), once acked


class Late:
    """An alarm acked while its fallback ran: fallback.py reports what the fallback did."""

    def __init__(self, alarm_id, note, name):
        self.alarm_id = alarm_id
        self.note = note  # its store.Note
        self.name = name  # its outbox name


class Updates:
    """The location updates of the open alarm (gnss.py sends them). Made anew at a press; the one made
    at boot (an alarm left open before the reboot) sends its first update at once."""

    def __init__(self, fix_ticks=0, sent=0, fresh_sent=True):
        self.fix_ticks = fix_ticks  # Modem.fix_ticks of the fix sent last (or of the alarm's)
        self.sent = sent  # ticks_ms when the last went out (or the alarm was raised)
        self.fresh_sent = fresh_sent  # a fix newer than the alarm's went out

    def sent_now(self, fix_ticks, fresh):
        """An update went out, with the fix of fix_ticks; fresh: newer than the alarm's."""
        self.fix_ticks = fix_ticks
        self.sent = ticks_ms()
        self.fresh_sent = self.fresh_sent or fresh


class Alarms:
    """Alarm service over a Session, an Outbox, the State, the Modem (fix, cell, clock), a board
    (vibrate), the settings, a battery() -> percent and a report_memory() printing the mem: line.
    queued: outbox name -> Queued; late: a Late or None; updates: the open alarm's Updates; dark: no
    vibration at all (after a power-off gesture raised a silent alarm)."""

    def __init__(self, session, outbox, state, modem, board, settings, battery, report_memory):
        self.session = session
        self.outbox = outbox
        self.state = state
        self.modem = modem
        self.board = board
        self.settings = settings
        self.battery = battery
        self.report_memory = report_memory
        self.dark = False
        self.late = None
        self.queued = {}
        self._recent = []  # the Queued of acked alarms, newest last
        self._due = True  # something may need sending now
        self._looked = ticks_ms()
        self.updates = Updates()
        for name in outbox.names():
            self._index(name)

    def _index(self, name):
        topic, payload = self.outbox.read(name) or (None, None)
        found = protocol.decode(payload, "alarm_id") if topic == "alarm" else None
        if found:
            # a note: the fallback started before a reboot (go on with it at once), or is over; the note
            # written at a press without data path ("{}") is no Note yet, and means started
            data = self.outbox.note(name)
            note = load_note(data)
            fallback = NOT_DUE if data is None else DONE if note and note.over else DUE
            self.queued[name] = Queued(found["alarm_id"], fallback)
        return found

    def note(self, name):
        """The fallback's Note of the alarm `name`, or None."""
        return load_note(self.outbox.note(name))

    def on_connect(self):
        """Called by the session after every (re)connect: resend everything queued."""
        self._due = True

    def raise_alarm(self, kind="panic", test=False):
        """Raise an alarm now, with the last known fix (or the serving cell without one); return its
        alarm_id once it is on flash. A real alarm becomes the open one (location updates follow)."""
        modem = self.modem
        session = self.session
        alarm_id = self.state.next_alarm_id(not test)
        name = self.outbox.put("alarm", protocol.alarm(
            alarm_id, kind, modem.now(), modem.fix, modem.cell, self.battery(), test))
        # No data path at the press: the session is down and reconnecting has failed, or no network.
        down = not session.up and (session.failures or modem.reg not in _REGISTERED)
        if down:
            self.outbox.put_note(name, b"{}")  # the fallback starts now (and after a reboot)
        self.queued[name] = Queued(alarm_id, DUE if down else NOT_DUE)
        if not test:
            self.updates = Updates(modem.fix_ticks, ticks_ms(), False)
        log("alarm", "raised " + alarm_id)  # a fixed form (docs/architecture.md): the bench reads it
        if down:
            log("alarm", "no data path: fallback now")
        self._due = True
        self.report_memory()
        return alarm_id

    async def send(self):
        """Publish what is due: everything queued after a (re)connect or a new message, and any alarm
        whose wait for its ack is over. Looks at the outbox every second at most, unless due."""
        session = self.session
        if not session.up or not self._due and ticks_diff(ticks_ms(), self._looked) < 1000:
            return
        self._due = False
        self._looked = ticks_ms()
        for name in self.outbox.names():
            if not (name in self.queued or self._index(name)):
                item = self.outbox.read(name)  # an event: published once, then gone
                if item and not await session.publish(*item):
                    break
                self.outbox.remove(name)
                continue
            entry = self.queued[name]
            same = entry.gen == session.gen  # sent on this connection already
            if same and ticks_diff(ticks_ms(), entry.published) < entry.wait:
                continue
            item = self.outbox.read(name)
            if not item:  # acked meanwhile
                continue
            if not await session.publish(*item):
                break
            entry.gen, entry.published = session.gen, ticks_ms()
            # the next wait: ack_timeout_s after the first send on a connection, then doubling (backoff)
            wait = self.settings["ack_timeout_s"] * 1000
            entry.wait = max(wait, min(entry.wait * 2, 300000)) if same else wait
            log("alarm", "published " + entry.alarm_id)
            if not entry.felt:
                entry.felt = True
                await self.vibrate("sent")

    def fallback_due(self):
        """(name, Queued) of the oldest queued alarm whose fallback is due, else None."""
        timeout = self.settings["ack_timeout_s"] * 1000
        for name in sorted(self.queued):
            entry = self.queued[name]
            late = ticks_diff(ticks_ms(), entry.raised) >= timeout
            if entry.fallback == DUE or entry.fallback == NOT_DUE and late:
                return name, entry
        return None

    async def on_ack(self, alarm_id, state):
        """Handle an `alarm/ack`: the first drops the alarm from the outbox; `acknowledged` (an operator
        took it) buzzes once; `resolved` closes the open alarm (no more location updates)."""
        recent = None
        for entry in self._recent:
            if entry.alarm_id == alarm_id:
                recent = entry
        for name, entry in self.queued.items():
            if entry.alarm_id == alarm_id:
                note = self.note(name)
                if note and not note.over:  # the fallback had started: fallback.py says what it did
                    self.late = Late(alarm_id, note, name)  # once its call, if one is on, is over
                self.outbox.remove(name)
                del self.queued[name]
                log("alarm", "acked %s after %d ms" % (alarm_id, ticks_diff(ticks_ms(), entry.raised)))
                recent = entry
                self._recent.append(entry)
                if len(self._recent) > 4:
                    self._recent.pop(0)
                if state != "acknowledged":
                    await self.vibrate("received")
                break
        else:
            if not recent and state != "resolved":
                log("alarm", "unknown ack " + alarm_id)
                return
        if state == "acknowledged" and not recent.acknowledged:
            recent.acknowledged = True
            await self.vibrate(state)
        elif state == "resolved" and self.state.open == alarm_id:
            self.state.open = None
            self.state.save()
            log("alarm", "resolved " + alarm_id)
        self.report_memory()

    async def vibrate(self, pattern):
        """Play a feedback pattern (sent, received, acknowledged, failed), unless dark; the motor never
        stops the alarm flow."""
        if self.dark:
            return
        try:
            await self.board.vibrate(pattern)
        except Exception as e:
            log("alarm", "vibrate: %r" % e)
