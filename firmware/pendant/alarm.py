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

import gc
import json
from time import ticks_diff, ticks_ms

from . import log, protocol

_REGISTERED = ("home", "roaming")


class Alarms:
    """Alarm service over a Session, an Outbox, the State, the Modem (fix, cell, clock), a board
    (vibrate), the settings, a battery() -> percent and a report_memory() printing the mem: line.
    dark: no vibration at all (after a power-off gesture raised a silent alarm)."""

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
        self.late = None  # [alarm_id, fallback note, outbox name]: acked while its fallback ran
        # outbox name -> [alarm_id, ticks raised (or loaded), session gen of last publish, ticks of it,
        #  felt, fallback: 0 not due yet, 1 due, 2 done, ms from that publish to the next without an ack]
        self._queued = {}
        self._recent = []  # [alarm_id, operator acknowledged] of acked alarms, newest last
        self._due = True  # something may need sending now
        self._looked = ticks_ms()
        self.loc = [0, 0, True]  # location updates (gnss.py): fix_ticks of the last, ticks of it, fresh one sent
        for name in outbox.names():
            self._index(name)

    def _index(self, name):
        item = self.outbox.read(name)
        found = protocol.decode(item[1], "alarm_id") if item and item[0] == "alarm" else None
        if found:
            # a note: the fallback started before a reboot (1: go on with it at once), or is over (2); the
            # note written at a press without data path ("{}") is no list yet, and means started
            note = self._note(name)
            started = 0 if self.outbox.note(name) is None else 2 if note and note[6] else 1
            self._queued[name] = [found["alarm_id"], ticks_ms(), -1, 0, False, started, 0]
        return found

    def _note(self, name):
        try:
            note = json.loads(self.outbox.note(name))
        except (TypeError, ValueError):
            return None
        return note if type(note) is list and len(note) == 10 else None

    def on_connect(self):
        """Called by the session after every (re)connect: resend everything queued."""
        self._due = True

    def raise_alarm(self, kind="panic", test=False):
        """Raise an alarm now, with the last known fix (or the serving cell without one); return its
        alarm_id once it is on flash. A real alarm becomes the open one (location updates follow)."""
        gc.collect()  # a known point: the alarm's allocations find the most room
        modem = self.modem
        session = self.session
        alarm_id = self.state.next_alarm_id(not test)
        name = self.outbox.put("alarm", protocol.alarm(
            alarm_id, kind, modem.now(), modem.fix, modem.cell, self.battery(), test))
        # No data path at the press: the session is down and reconnecting has failed, or no network.
        down = not session.up and (session._retry[0] or modem.reg not in _REGISTERED)
        if down:
            self.outbox.put_note(name, b"{}")  # the fallback starts now (and after a reboot)
        self._queued[name] = [alarm_id, ticks_ms(), -1, 0, False, 1 if down else 0, 0]
        if not test:
            self.loc = [modem.fix_ticks, ticks_ms(), False]
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
            entry = self._queued.get(name)
            if not (entry or self._index(name)):
                item = self.outbox.read(name)  # an event: published once, then gone
                if item and not await session.publish(item[0], item[1]):
                    break
                self.outbox.remove(name)
                continue
            entry = self._queued[name]
            same = entry[2] == session.gen  # sent on this connection already
            if same and ticks_diff(ticks_ms(), entry[3]) < entry[6]:
                continue
            item = self.outbox.read(name)
            if not item:  # acked meanwhile
                continue
            if not await session.publish(item[0], item[1]):
                break
            entry[2], entry[3] = session.gen, ticks_ms()
            # the next wait: ack_timeout_s after the first send on a connection, then doubling (backoff)
            wait = self.settings["ack_timeout_s"] * 1000
            entry[6] = max(wait, min(entry[6] * 2, 300000)) if same else wait
            log("alarm", "published " + entry[0])
            if not entry[4]:
                entry[4] = True
                await self.vibrate("sent")

    def fallback_due(self):
        """(name, alarm_id) of the oldest queued alarm whose fallback is due, else None."""
        timeout = self.settings["ack_timeout_s"] * 1000
        for name in sorted(self._queued):
            entry = self._queued[name]
            if entry[5] == 1 or entry[5] == 0 and ticks_diff(ticks_ms(), entry[1]) >= timeout:
                return name, entry[0]
        return None

    async def on_ack(self, alarm_id, state):
        """Handle an `alarm/ack`: the first drops the alarm from the outbox; `acknowledged` (an operator
        took it) buzzes once; `resolved` closes the open alarm (no more location updates)."""
        recent = None
        for entry in self._recent:
            if entry[0] == alarm_id:
                recent = entry
        for name, entry in self._queued.items():
            if entry[0] == alarm_id:
                note = self._note(name)
                if note and not note[6]:  # the fallback had started: fallback.py says what it did
                    self.late = [alarm_id, note, name]  # once its call, if one is on, is over
                self.outbox.remove(name)
                del self._queued[name]
                log("alarm", "acked %s after %d ms" % (alarm_id, ticks_diff(ticks_ms(), entry[1])))
                recent = [alarm_id, False]
                self._recent.append(recent)
                if len(self._recent) > 4:
                    self._recent.pop(0)
                if state != "acknowledged":
                    await self.vibrate("received")
                break
        else:
            if not recent and state != "resolved":
                log("alarm", "unknown ack " + alarm_id)
                return
        if state == "acknowledged" and not recent[1]:
            recent[1] = True
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
