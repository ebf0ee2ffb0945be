"""Runs the pendant: starts it (boot.py), supervises its tasks, and does the work no other module owns.

`main(board_module)` runs for ever on asyncio (or idles, without a usable config.json, until
provisioning). A task that raises is logged and started again after a pause that grows while it keeps
failing; the other tasks go on. The tasks:
- `atchan`: the modem's reader;
- `worker`: every 50 ms the MQTT session, received messages and the alarm queue; once a second the
  duties: memory sample, modem health (probe a quiet modem, power-cycle a hung one), switching off,
  battery alerts, GNSS on only when needed, location updates, `locate` answers, the heartbeat. One task
  for all of it, so that one AT sequence runs at a time;
- `button`: both buttons; it feeds the watchdog while the worker comes round and lets the pendant
  sleep when nothing goes on;
- `phone`: the SMS and call fallback when due, call-backs (fallback.py);
- whatever the board needs (the sim board's pins).
"""

import asyncio
import gc
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from micropython import const

from . import boot, button, commands, config, fallback, gnss, log, network, power, protocol
from .atchan import ATError, ATTimeout
from .modem import ACTIVE, DIALLING, IDLE

_HEALTHY_MS = const(300000)  # the worker must come round within 5 minutes, or the watchdog resets us
_HANG_MS = const(20000)  # a modem silent this long while commands go unanswered is power-cycled
_PROBE_MS = const(60000)  # a quiet modem is asked `AT` this often


class Supervised:
    """A task the app keeps running: started by `factory()` (a coroutine), again after it ended."""

    def __init__(self, name, factory):
        self.name = name
        self.factory = factory
        self.task = None  # the asyncio task while it runs
        self.pause = 500  # ms before a restart; doubles while the task keeps failing
        self.since = ticks_add(ticks_ms(), -500)  # when it last started or ended (due at once)

    def due(self):
        """Not running, and its pause is over."""
        return self.task is None and ticks_diff(ticks_ms(), self.since) >= self.pause

    def start(self, coro):
        """Run coro (the factory's coroutine, wrapped by the supervisor) as its task."""
        self.since = ticks_ms()
        self.task = asyncio.create_task(coro)

    def ended(self, failed):
        """The task ended; after a failure within a minute of its start the next pause is doubled."""
        if failed:
            self.pause = 1000 if ticks_diff(ticks_ms(), self.since) > 60000 else min(self.pause * 2, 30000)
        self.since = ticks_ms()
        self.task = None


class App:
    """The running pendant; attributes are public for the modules that do its jobs, and the tests.
    off: why it is switching off ("button" or "battery"); locating: the gnss.Locate of a `locate`
    waiting for a fresh fix; rejected: the config revision refused last."""

    def __init__(self, boards):
        self.boards = boards  # the board module: pendant.boards.sim or pendant.boards.t_a7670e
        # built by boot.py: the Board, Modem, Session, Alarms, State, Outbox, the watchdog, the device id
        self.board = self.modem = self.session = self.alarms = self.state = self.outbox = None
        self.wdt = self.device_id = None
        self.settings = {}  # the configuration in force (config.py), the defaults until one is applied
        self.peak = 0
        self.off = self.locating = None
        self.rejected = -1
        self.battery_alerts = power.Alerts()
        self.alive = ticks_ms()  # when the worker last came round
        self.uptime = 0  # seconds, as the worker counts them
        self.next_heartbeat = 0  # uptime of the next heartbeat
        self.gnss_at = gnss.Schedule()
        self.tasks = []  # the Supervised tasks

    def report_memory(self, count=0):
        """Collect and track the peak of live heap; print `mem: peak <bytes> free <bytes>` when count is
        0 (the alarm flow), or 1, 11, 21... (the worker passes its seconds: a line after the first
        second, then every 10 s)."""
        gc.collect()
        self.peak = max(self.peak, gc.mem_alloc())
        if count == 0 or count % 10 == 1:
            log("mem", "peak %d free %d" % (self.peak, gc.mem_free()))

    def battery(self):
        """Battery percent now, or None when the board cannot tell."""
        return button.percent(self.board.battery_mv())

    async def run(self):
        """Start everything and supervise it for ever."""
        parts = boot.start(self)
        if not parts:
            return False
        (self.device_id, self.outbox, self.state, self.board, self.modem, self.session, self.alarms,
         self.wdt) = parts
        board = self.board
        self.tasks = [
            Supervised("atchan", self.modem.chan.run),
            Supervised("worker", self._work),
            Supervised("button", lambda: button.watch(board, self.settings, self._on_button, self._idle)),
            Supervised("phone", self._phone),
        ] + [Supervised(name, factory) for name, factory in board.tasks()]
        while True:  # start what is not running, once its pause is over
            for entry in self.tasks:
                if entry.due():
                    entry.start(self._supervise(entry))
            await asyncio.sleep_ms(200)

    async def _supervise(self, entry):
        # Run one task to its end; a failure is logged, and the pause before run() starts it again
        # doubles while it keeps failing within a minute of its start.
        try:
            await entry.factory()
        except Exception as e:
            log("app", "%s failed: %r" % (entry.name, e))
            entry.ended(True)
            return
        entry.ended(False)

    def _idle(self):
        # Called by the button task before every poll: feed the watchdog while the worker comes round
        # (a stuck worker, or a stuck event loop, lets it reset the pendant), and say how long the
        # pendant may sleep: only when nothing is queued, open, ringing or running on the modem.
        if ticks_diff(ticks_ms(), self.alive) < _HEALTHY_MS:
            self.wdt.feed()
        modem = self.modem
        chan = modem.chan
        call = modem.call.state
        if (self.alarms.queued or self.state.open or self.off or self.locating or self.session.inbox
                or call == DIALLING or call == ACTIVE or modem.ringing() is not None
                or modem.gnss is not None or chan.idle_ms() < 2000):
            return 0
        chan.sleep()  # the modem too (DTR high)
        return 1000

    async def _on_button(self, event):
        if event == button.OFF:
            log("app", "power button")
            self.off = "button"
        else:
            self._raise()

    def _raise(self):
        # The alarm goes on flash within milliseconds (the worker sends it). Should that fail (the flash,
        # the heap), the press is noted on flash (a few bytes) and a reboot raises the alarm (boot.py).
        try:
            self.alarms.raise_alarm()
            return
        except (OSError, MemoryError) as e:
            log("app", "cannot raise the alarm (%r): rebooting to raise it" % e)
        try:
            with open("pressed", "w"):
                pass
        except OSError as e:
            log("app", "pressed: %r" % e)
        self.board.reset()

    async def _phone(self):
        # The fallback when one is due, and incoming calls, one step at a time (fallback.py); the waits
        # between steps (ringing, talking, pauses) are here: they end early when the call's state
        # changes, a call rings, or the modem is lost. A task of its own, so that the data path goes on
        # meanwhile.
        modem = self.modem
        call = modem.call
        alarms = self.alarms
        while True:
            await asyncio.sleep_ms(200)
            ring = modem.ringing()
            if not modem.ready or not (call.owner or ring is not None and ring != call.refused or alarms.late
                                       or alarms.fallback_due()):
                continue
            wait = await fallback.step(self)
            state, rang, since = call.state, call.rang, ticks_ms()
            while (call.state == state and call.rang == rang and modem.ready and not alarms.late
                   and ticks_diff(ticks_ms(), since) < wait):
                await asyncio.sleep_ms(200)

    async def _work(self):
        session = self.session
        alarms = self.alarms
        tick = ticks_ms()
        count = 0
        while True:
            self.alive = ticks_ms()
            await session.keep()  # connecting here, not in a task of its own: one AT sequence at a time
            await session.dispatch()
            await alarms.send()
            await asyncio.sleep_ms(50)
            if ticks_diff(ticks_ms(), tick) >= 1000:
                tick = ticks_ms()  # after a light sleep the duties run once, they do not catch up
                self.uptime += 1
                count += 1
                self.report_memory(count)
                await self._duties(count)

    async def _duties(self, count):
        # Once a second: modem health, the battery (every 10 s), switching off, GNSS and location
        # updates and the locate answer (gnss.py), the heartbeat.
        modem = self.modem
        chan = modem.chan
        if chan.silent_ms() >= _HANG_MS:
            self.session.hung()
        elif modem.ready and chan.idle_ms() >= (5000 if chan.silent_ms() else _PROBE_MS):
            try:
                await chan.command("AT", 1000)
            except (ATError, ATTimeout) as e:
                log("app", "modem probe: %r" % e)
        elif chan.idle_ms() >= 2000 and modem.call.state == IDLE:
            chan.sleep()  # DTR high: the modem sleeps until the next command or URC
        if self.alarms.dark and not self.state.open:
            self.off = "button"  # the silent alarm of a power-off gesture is resolved: off now
        if count % 10 == 0:
            await power.check(self)
        if self.off:
            await power.power_off(self)
        if not modem.ready:
            return
        await gnss.tick(self)
        if self.session.up and self.uptime >= self.next_heartbeat:
            self.next_heartbeat = self.uptime + self.settings["heartbeat_s"]
            await network.heartbeat(self)

    async def on_message(self, sub, payload):
        """A message from the backend (the session's on_message)."""
        if sub == "alarm/ack":
            ack = protocol.decode(payload, "alarm_id", "state")
            if ack:
                await self.alarms.on_ack(ack["alarm_id"], ack["state"])
            else:
                log("app", "malformed ack")
        elif sub == "cmd":
            await commands.receive(self, payload)
        elif sub == "config":
            # A retained config comes after every connect: only a new revision is applied.
            message = protocol.decode(payload)
            rev = message and message.get("rev")
            if message and rev != self.rejected and not (type(rev) is int and rev <= self.settings["rev"]):
                await config.receive(self, message, payload)


def main(boards):
    """Run the pendant on a board module (pendant.boards.sim or pendant.boards.t_a7670e)."""
    if asyncio.run(App(boards).run()) is False:
        # Not provisioned (or the flash is unusable): no reboot loop, which would keep the REPL out of
        # reach; stay idle until a Ctrl-C gives the REPL to `pendant provision`, which writes config.json
        # and resets the pendant.
        while True:
            sleep_ms(1000)
