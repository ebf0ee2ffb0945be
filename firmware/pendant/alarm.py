"""The alarm flow: build, persist, publish, wait for `alarm/ack`, drop; resend after reconnect or reboot.

An alarm is on flash (outbox) before anything that can fail, so a power cut, a crash or an outage never
loses it. `send()`, called by the app's worker task every 50 ms, publishes every queued alarm once per
MQTT connection and again every ack_timeout_s until the backend's `alarm/ack` for its alarm_id arrives;
only that ack removes it.
Duplicate and unknown acks are harmless, and the backend stores an alarm once however often it comes.
"""

import gc
from time import ticks_diff, ticks_ms

from . import log, protocol


class Alarms:
    """Alarm service over a Session, an Outbox, the State counters, the Modem (fix, cell, clock), a board
    (vibrate), the settings (ack_timeout_s), a battery() -> percent and a report_memory() printing the mem: line."""

    def __init__(self, session, outbox, state, modem, board, settings, battery, report_memory):
        self.session = session
        self.outbox = outbox
        self.state = state
        self.modem = modem
        self.board = board
        self.settings = settings
        self.battery = battery
        self.report_memory = report_memory
        # outbox name -> [alarm_id, ticks raised (or loaded), session gen of last publish, ticks of it, felt]
        self._queued = {}
        self._recent = []  # [alarm_id, operator acknowledged] of acked alarms, newest last
        self._due = True  # something may need sending now
        self._looked = ticks_ms()
        for name in outbox.names():
            self._index(name)

    def _index(self, name):
        item = self.outbox.read(name)
        found = protocol.decode(item[1], "alarm_id") if item else None
        if found:
            self._queued[name] = [found[0], ticks_ms(), -1, 0, False]
        return found

    def highest_boot(self):
        """The highest boot counter among queued alarm ids: a floor for the boot counter."""
        highest = 0
        for entry in self._queued.values():
            boot = entry[0].split("-")[0]
            if boot.isdigit():
                highest = max(highest, int(boot))
        return highest

    def on_connect(self):
        """Called by the session after every (re)connect: resend everything queued."""
        self._due = True

    async def raise_alarm(self, kind="panic", test=False):
        """Raise an alarm now with the last known fix; return its alarm_id once it is on flash."""
        gc.collect()  # a known point: the alarm's allocations find the most room
        modem = self.modem
        alarm_id = self.state.next_alarm_id()
        tst = modem.clock.now()
        batt = self.battery()
        fix = modem.fix
        name = self.outbox.put("alarm", protocol.alarm(alarm_id, kind, tst, fix, modem.cell, batt, test))
        self._queued[name] = [alarm_id, ticks_ms(), -1, 0, False]
        log("alarm", "raised " + alarm_id)
        if not fix:  # one quick query; the alarm is already safe on flash
            try:
                fix = await modem.gnss_query(2000, 2000)
            except Exception as e:
                log("alarm", "no quick fix: %r" % e)
            if fix and name in self._queued:
                self.outbox.replace(name, "alarm", protocol.alarm(alarm_id, kind, tst, fix, None, batt, test))
        self._due = True
        self.report_memory()
        return alarm_id

    async def send(self):
        """Publish what is due: everything queued after a (re)connect or a new alarm, and any alarm
        unacknowledged for ack_timeout_s. Looks at the outbox every second at most, unless due."""
        session = self.session
        if not session.up or not self._due and ticks_diff(ticks_ms(), self._looked) < 1000:
            return
        self._due = False
        self._looked = ticks_ms()
        for name in self.outbox.names():
            entry = self._queued.get(name)
            if not (entry or self._index(name)):
                continue
            entry = self._queued[name]
            if entry[2] == session.gen and ticks_diff(ticks_ms(), entry[3]) < self.settings["ack_timeout_s"] * 1000:
                continue
            item = self.outbox.read(name)
            if not item:  # acked meanwhile
                continue
            if not await session.publish(item[0], item[1]):
                break
            entry[2], entry[3] = session.gen, ticks_ms()
            log("alarm", "published " + entry[0])
            if not entry[4]:
                entry[4] = True
                await self._vibrate("sent")

    async def on_ack(self, alarm_id, state):
        """Handle an `alarm/ack`: the first drops the alarm from the outbox; a later `acknowledged` buzzes."""
        recent = None
        for entry in self._recent:
            if entry[0] == alarm_id:
                recent = entry
        for name, entry in self._queued.items():
            if entry[0] == alarm_id:
                self.outbox.remove(name)
                del self._queued[name]
                log("alarm", "acked %s after %d ms" % (alarm_id, ticks_diff(ticks_ms(), entry[1])))
                recent = [alarm_id, False]
                self._recent.append(recent)
                if len(self._recent) > 4:
                    self._recent.pop(0)
                if state != "acknowledged":
                    await self._vibrate("received")
                break
        else:
            if not recent:
                log("alarm", "unknown ack " + alarm_id)
                return
        if state == "acknowledged" and not recent[1]:
            recent[1] = True
            await self._vibrate(state)
        self.report_memory()

    async def _vibrate(self, pattern):
        try:
            await self.board.vibrate(pattern)
        except Exception as e:  # feedback only: the motor never stops the alarm flow
            log("alarm", "vibrate: %r" % e)
