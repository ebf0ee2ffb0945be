"""Runs the pendant: starts it (boot.py), supervises its tasks, and does the work no other module owns.

`main(board_module)` runs for ever (or idles, without a usable config.json, until provisioning). A task
that raises is logged and started again after a pause that grows while it keeps failing; the other tasks
go on. A MemoryError (a heap in pieces) is logged as `short of memory`: the worker retries its round,
other tasks restart; ten within a minute reboot the pendant (alarms wait on flash). The tasks:
- `atchan`: the modem's reader;
- `worker`: every 50 ms the MQTT session, received messages and the alarm queue; once a second the
  duties: memory sample, modem health (probe a quiet modem, power-cycle a hung one), switching off,
  battery alerts, GNSS on only when needed, location updates, `locate` answers, the heartbeat. One task
  for all of it: every task costs heap, and so does every concurrent AT sequence;
- `button`: both buttons; it feeds the watchdog while the worker comes round and lets the pendant
  sleep when nothing goes on;
- `phone`: the SMS and call fallback when due, call-backs (fallback.py, loaded while an alarm waits);
- whatever the board needs (the sim board's pins).
What is rare runs in modules loaded for that one job and dropped again: `config` (config.py), `cmd`
(commands.py), the heartbeat (network.py), the GNSS and location updates (gnss.py, every few seconds
while it is on), battery alerts and switching off (power.py).
"""

import gc
from time import sleep_ms, ticks_diff, ticks_ms

from micropython import const

from . import button, drop, log, protocol, sched, use
from .atchan import ATError, ATTimeout

_HEALTHY_MS = const(300000)  # the worker must come round within 5 minutes, or the watchdog resets us
_HANG_MS = const(20000)  # a modem silent this long while commands go unanswered is power-cycled
_PROBE_MS = const(60000)  # a quiet modem is asked `AT` this often


class App:
    """The running pendant; attributes are public for the modules loaded for one job, and the tests.
    off: why it is switching off ("button" or "battery"); locating: [cmd id, fix_ticks and ticks when
    asked] of a `locate` waiting for a fresh fix; rejected: the config revision refused last."""

    def __init__(self, boards):
        self.boards = boards  # the board module: pendant.boards.sim or pendant.boards.t_a7670e
        # built by boot.py: the Board, Modem, Session, Alarms, State, Outbox, the watchdog, the device id
        self.board = self.modem = self.session = self.alarms = self.state = self.outbox = None
        self.wdt = self.device_id = None
        self.settings = {}  # the configuration in force (config.py), the defaults until one is applied
        self.peak = 0
        self.off = self.locating = None
        self.rejected = -1
        self.batt = [0, False]  # the battery alerts' memory (power.py)
        self.alive = ticks_ms()  # when the worker last came round
        # uptime seconds: now, next heartbeat, next idle fix refresh, end of the current one, next query,
        # next GNSS turn (gnss.py sets it: loading the module every second would churn the heap)
        self.at = [0, 0, 0, 0, 0, 0]
        self._tasks = []  # [name, factory, task, pause ms, when started or failed] of the supervised tasks
        self._oom = [0, ticks_ms()]  # memory shortages in a row, when the last one was

    def report_memory(self, count=0):
        """Collect and track the peak of live heap; print `mem: peak <bytes> free <bytes>` when count is
        a multiple of 10 (the worker passes its seconds; the alarm flow nothing)."""
        gc.collect()
        self.peak = max(self.peak, gc.mem_alloc())
        if count % 10 == 0:
            log("mem", "peak %d free %d" % (self.peak, gc.mem_free()))

    def battery(self):
        """Battery percent now, or None when the board cannot tell."""
        return button.percent(self.board.battery_mv())

    async def run(self, buf=None):
        """Start everything and supervise it for ever."""
        try:
            parts = (await use("boot")).start(self)
        finally:
            drop("boot")
        if not parts:
            return False
        (self.device_id, self.outbox, self.state, self.board, self.modem, self.session, self.alarms,
         self.wdt) = parts
        if buf:
            buf.clear()  # the tasks start now: give them the room kept in one piece
        # Every module loaded later for one job interns its names for good the first time it loads, and
        # the table of interned names grows in one piece of several KB: load each once now, while the
        # heap is still in one piece, rather than amid the running tasks' objects. Not start.py: the
        # first connect loads it within a second anyway, and loaded here it left the heap in pieces
        # (1.4 KB more in use after this loop, the largest free block 288 bytes: too small for
        # network.py to load after a reboot with a queued alarm).
        for name in ("network", "connect", "config", "commands", "power", "fallback", "gnss"):
            try:
                await use(name)
            except MemoryError:  # then it interns its names when it is first needed: never a reason to stop
                log("app", "no room to load %s at start" % name)
            drop(name)
        gc.collect()
        sched.on_error = self._failed
        board = self.board
        self._tasks = [
            ["atchan", self.modem.chan.run],
            ["worker", self._work],
            ["button", lambda: button.watch(board, self.settings, self._on_button, self._idle)],
            ["phone", self._phone],
        ] + board.tasks()
        for entry in self._tasks:
            entry += [None, 500, 0]  # task, pause before a restart, when it started or failed
        while True:  # the supervisor: start what is not running, once its pause is over
            for entry in self._tasks:
                if entry[2] is None and ticks_diff(ticks_ms(), entry[4]) >= entry[3]:
                    try:
                        entry[2] = sched.create_task(entry[1]())
                    except MemoryError as e:  # no room even to start it: counts towards a reboot
                        self._failed(entry, e)
                    entry[4] = ticks_ms()
            await sched.sleep_ms(200)

    def _failed(self, task, error):
        # A task ended with an exception (the scheduler tells): log it and let run() start it again,
        # after a pause that doubles while it keeps failing.
        name = "task"
        for entry in self._tasks:
            if entry[2] is task or entry is task:
                name = entry[0]
                entry[3] = 1000 if ticks_diff(ticks_ms(), entry[4]) > 60000 else min(entry[3] * 2, 30000)
                entry[2] = None
                entry[4] = ticks_ms()
        if type(error) is MemoryError:
            self._short(name)
        else:
            log("app", "%s failed: %r" % (name, error))

    def _short(self, name):
        # The heap was too fragmented for a task's step. Alarms wait on flash; a reboot (after the tenth
        # shortage within a minute) starts with a clean heap and resends them.
        log("app", "%s: short of memory" % name)
        oom = self._oom
        oom[0] = oom[0] + 1 if ticks_diff(ticks_ms(), oom[1]) < 60000 else 1
        oom[1] = ticks_ms()
        if oom[0] >= 10:
            log("app", "out of memory: rebooting")
            self.board.reset()

    def _idle(self):
        # Called by the button task before every poll: feed the watchdog while the worker comes round
        # (a stuck worker, or a stuck event loop, lets it reset the pendant), and say how long the
        # pendant may sleep: only when nothing is queued, open, ringing or running on the modem.
        if ticks_diff(ticks_ms(), self.alive) < _HEALTHY_MS:
            self.wdt.feed()
        chan = self.modem.chan
        call = self.modem.call[0]
        if (self.alarms._queued or self.state.open or self.off or self.locating or self.session._inbox
                or call == 1 or call == 2 or self.modem.ringing() is not None or self.modem._gnss is not None
                or chan.idle_ms() < 2000):
            return 0
        chan.sleep()  # the modem too (DTR high)
        return 1000

    async def _on_button(self, event):
        if event == button.OFF:
            log("app", "power button")
            self.off = "button"
        else:
            await self._raise()

    async def _raise(self):
        # The alarm goes on flash within milliseconds (the worker sends it), whatever the heap is like:
        # a MemoryError is retried after a collection; if it persists, the press is noted on flash (a
        # few bytes) and a reboot with a clean heap raises the alarm (boot.py).
        for _ in range(3):
            try:
                self.alarms.raise_alarm()
                self.at[5] = 0  # the GNSS on now, for the location updates
                return
            except MemoryError:
                gc.collect()
                await sched.sleep_ms(20)
        log("app", "no room to raise the alarm: rebooting to raise it")
        try:
            with open("pressed", "w"):
                pass
        except (OSError, MemoryError) as e:
            log("app", "pressed: %r" % e)
        self.board.reset()

    async def _phone(self):
        # The fallback when one is due, and incoming calls, one step at a time (fallback.py, loaded for
        # the step only); the waits between steps (ringing, talking, pauses) are here: they end early
        # when the call's state changes, a call rings, or the modem is lost. A task of its own, so that
        # the data path goes on meanwhile.
        modem = self.modem
        c = modem.call
        while True:
            await sched.sleep_ms(200)
            ring = modem.ringing()
            if not modem.ready or not (c[5] or ring is not None and ring != c[6] or self.alarms.late
                                       or self.alarms.fallback_due()):
                continue
            try:
                wait = await (await use("fallback")).step(self)
            finally:
                drop("fallback")
            state, ring, since = c[0], c[4], ticks_ms()
            while (c[0] == state and c[4] == ring and modem.ready and not self.alarms.late
                   and ticks_diff(ticks_ms(), since) < wait):
                await sched.sleep_ms(200)

    async def _work(self):
        session = self.session
        alarms = self.alarms
        tick = ticks_ms()
        count = 0
        while True:
            self.alive = ticks_ms()
            try:
                await session.keep()  # connecting here, not in a task of its own: one AT sequence at a time
                await session.dispatch()
                await alarms.send()
                await sched.sleep_ms(50)
                if ticks_diff(ticks_ms(), tick) >= 1000:
                    tick = ticks_ms()  # after a light sleep the duties run once, they do not catch up
                    self.at[0] += 1
                    count += 1
                    self.report_memory(count)
                    await self._duties(count)
            except MemoryError:
                # A heap in pieces: what this round did not do is done in the next (all that must not
                # be lost is on flash); the task goes on, and only a lasting shortage reboots.
                gc.collect()
                self._short("worker")
                await sched.sleep_ms(100)

    async def _duties(self, count):
        # Once a second: modem health, switching off, the battery (every 10 s), GNSS, location
        # updates, the locate answer, the heartbeat.
        at = self.at
        now = at[0]
        modem = self.modem
        chan = modem.chan
        settings = self.settings
        if chan.silent_ms() >= _HANG_MS:
            self.session.hung()
        elif modem.ready and chan.idle_ms() >= (5000 if chan.silent_ms() else _PROBE_MS):
            try:
                await chan.command("AT", 1000)
            except (ATError, ATTimeout) as e:
                log("app", "modem probe: %r" % e)
        elif chan.idle_ms() >= 2000 and self.modem.call[0] == 0:
            chan.sleep()  # DTR high: the modem sleeps until the next command or URC
        if self.alarms.dark and not self.state.open:
            self.off = "button"  # the silent alarm of a power-off gesture is resolved: off now
        if count % 10 == 0:  # the battery: power.py is loaded only near a threshold or to reset an alert
            batt = self.battery()
            if batt is not None and (batt <= settings["batt_low"] or self.batt[0] or self.batt[1]):
                await self._rare("power", "check")
        if self.off:
            await self._rare("power", "power_off")
        if not modem.ready:
            return
        if now >= at[5]:  # the GNSS's turn (gnss.py): every few seconds while it is on, else at the refresh
            await self._rare("gnss", "tick")
        if self.session.up and now >= at[1]:
            at[1] = now + settings["heartbeat_s"]
            await self._rare("network", "heartbeat")

    async def on_message(self, sub, payload):
        """A message from the backend (the session's on_message)."""
        if sub == "alarm/ack":
            ack = protocol.decode(payload, "alarm_id", "state")
            if ack:
                await self.alarms.on_ack(ack["alarm_id"], ack["state"])
            else:
                log("app", "malformed ack")
        elif sub == "cmd":
            await self._rare("commands", "receive", payload)
        elif sub == "config":
            # A retained config comes after every connect: load config.py for a new revision only.
            message = protocol.decode(payload)
            rev = message and message.get("rev")
            if message and rev != self.rejected and not (type(rev) is int and rev <= self.settings["rev"]):
                await self._rare("config", "receive", message, payload)

    async def _rare(self, module, function, *args):
        # Run module.function(app, *args) of a module loaded for this one job.
        try:
            await getattr(await use(module), function)(self, *args)
        finally:
            drop(module)


def main(boards, buf=None):
    """Run the pendant on a board module (pendant.boards.sim or pendant.boards.t_a7670e). buf: a list
    holding memory set aside while the firmware loaded, emptied once the long-lived objects exist."""
    if sched.run(App(boards).run(buf)) is False:
        # Not provisioned (or the flash is unusable): no reboot loop, which would keep the REPL out of
        # reach; stay idle until a Ctrl-C gives the REPL to `pendant provision`, which writes config.json
        # and resets the pendant.
        while True:
            sleep_ms(1000)
