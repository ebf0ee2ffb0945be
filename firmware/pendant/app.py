"""Wires the pendant's tasks together and supervises them.

`main(board_module)` runs for ever: it reads config.json, counts the boot and starts the tasks, then
supervises them: a task that raises (the event loop's exception handler hears of it) is logged and
started again after a pause that grows while it keeps failing; the other tasks go on. Repeated
MemoryErrors reboot the pendant. The app also applies `config`, answers `cmd`, sends the `tele`
heartbeat and prints the `mem:` lines.
"""

import asyncio
import gc
import json
from time import ticks_add, ticks_diff, ticks_ms

from . import FW, button, log, protocol
from .alarm import Alarms
from .atchan import ATChannel, ATError, ATTimeout
from .modem import Clock, Modem
from .mqtt import Session
from .outbox import Outbox
from .state import State


def load_device_config(path="config.json"):
    """Read config.json (written at provisioning); ValueError saying what is wrong with it."""
    try:
        with open(path) as f:
            device = json.load(f)
        mqtt = device["mqtt"]
        if type(mqtt["port"]) is not int:
            raise TypeError("port is not a number")
        for value in (device["device_id"], mqtt["host"], mqtt.get("user", ""), mqtt.get("password", ""),
                      device.get("apn", "")):
            if '"' in value:  # these go into AT commands between quotes
                raise TypeError("a quote in a value")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError("%s missing or not a device config: %r" % (path, e)) from None
    return device


class App:
    """The running pendant; attributes are public for the tests."""

    def __init__(self, boards):
        self.boards = boards  # the board module: pendant.boards.sim or pendant.boards.t_a7670e
        self.settings = {}  # the configuration in force (see protocol.CONFIG_INTS), defaults until a config
        protocol.check_config({}, self.settings)
        self.peak = 0
        self.uptime = Clock(0)
        self._tasks = []  # [name, factory, task, pause ms, when started or failed] of the supervised tasks
        self._oom = [0, 0]  # MemoryErrors in a row, when the last one was
        self._rejected = -1

    def report_memory(self, count=0):
        """Collect and track the peak of live heap; print `mem: peak <bytes> free <bytes>` when count is
        a multiple of 10 (the worker passes its seconds; the alarm flow nothing)."""
        gc.collect()
        self.peak = max(self.peak, gc.mem_alloc())
        if count % 10 == 0:
            log("mem", "peak %d free %d" % (self.peak, gc.mem_free()))

    def battery(self):
        """Battery percent now (LiPo: 3300 mV empty, 4200 mV full), or None when the board cannot tell."""
        mv = self.board.battery_mv()
        return None if mv is None else max(0, min(100, (mv - 3300) // 9))

    async def run(self, buf=None):
        """Start everything and supervise it for ever."""
        try:
            self.device = device = load_device_config()
            self.outbox = Outbox()
            self.state = State()
            self.board = board = self.boards.Board(device)  # sim.json, on the sim board
        except (OSError, ValueError, KeyError) as e:
            log("app", "cannot start: %s" % e)
            return
        self.modem = modem = Modem(ATChannel(board.open_modem), board.modem_power_on)
        self.session = session = Session(modem, device, self.state)
        self.alarms = alarms = Alarms(
            session, self.outbox, self.state, modem, board, self.settings, self.battery, self.report_memory)
        self.state.begin_boot(alarms.highest_boot())
        session.on_message = self._on_message
        session.on_connect = alarms.on_connect
        wdt = board.watchdog(30000)
        log("app", "started on " + board.NAME)
        if buf:
            buf.clear()  # the tasks start now: give them the room kept in one piece
            gc.collect()
        asyncio.get_event_loop().set_exception_handler(self._failed)
        self._tasks = [
            ["atchan", modem.chan.run],
            ["worker", self._worker],
            ["button", lambda: button.watch(board.button, self.settings, alarms.raise_alarm, wdt.feed)],
        ] + board.tasks()
        for entry in self._tasks:
            entry += [None, 500, 0]  # task, pause before a restart, when it started or failed
        while True:  # the supervisor: start what is not running, once its pause is over
            for entry in self._tasks:
                if entry[2] is None and ticks_diff(ticks_ms(), entry[4]) >= entry[3]:
                    try:
                        entry[2] = asyncio.create_task(entry[1]())
                    except MemoryError as e:  # no room even to start it: counts towards a reboot
                        self._failed(None, {"exception": e, "future": entry})
                    entry[4] = ticks_ms()
            await asyncio.sleep_ms(200)

    def _failed(self, loop, context):
        # The loop calls this for a task that ended with an exception nobody awaited: log it and let
        # run() start it again, after a pause that doubles while it keeps failing.
        task = context.get("future")
        name = "task"
        for entry in self._tasks:
            if entry[2] is task:
                name = entry[0]
                entry[3] = 1000 if ticks_diff(ticks_ms(), entry[4]) > 60000 else min(entry[3] * 2, 30000)
                entry[2] = None
                entry[4] = ticks_ms()
        error = context.get("exception")
        log("app", "%s failed: %r" % (name, error))
        if type(error) is MemoryError:
            # The heap is too fragmented for the task to go on. Alarms wait on flash; a reboot (after
            # the third such failure within five minutes) starts with a clean heap and resends them.
            oom = self._oom
            oom[0] = oom[0] + 1 if ticks_diff(ticks_ms(), oom[1]) < 300000 else 1
            oom[1] = ticks_ms()
            if oom[0] >= 3:
                log("app", "out of memory: rebooting")
                self.board.reset()

    async def _worker(self):
        # One task (each costs heap, and so does each concurrent AT sequence) for, in turn: the MQTT
        # session, received messages, the alarm queue (so an ack is always handled after the publish
        # of its alarm returned) and, every second, the status: heap sample (the mem: line every 10 s),
        # GNSS on once the modem is up, a fix every loc_s (every 10 s while there is none) and, while
        # connected, the tele heartbeat every heartbeat_s.
        modem, session, settings = self.modem, self.session, self.settings
        tick = ticks_ms()
        seconds = fix_at = self._beat = 0
        while True:
            await session.keep()  # connecting here, not in a task of its own: one AT sequence at a time
            await session.dispatch()
            await self.alarms.send()
            await asyncio.sleep_ms(50)
            if ticks_diff(ticks_ms(), tick) < 1000:
                continue
            tick = ticks_add(tick, 1000)
            seconds += 1
            self.report_memory(seconds)
            if not modem.ready:
                continue
            if seconds >= fix_at:
                fix_at = seconds + 10
                try:
                    if await modem.gnss_query():
                        fix_at = seconds + settings["loc_s"]
                except (ATError, ATTimeout) as e:
                    log("app", "GNSS query failed: %s" % e)
            if session.up and seconds >= self._beat:
                self._beat = seconds + settings["heartbeat_s"]
                try:
                    await modem.refresh()
                except (ATError, ATTimeout) as e:
                    log("app", "modem status not read: %s" % e)
                board = self.board
                await session.publish("tele", protocol.tele(
                    modem.clock.now(), self.state.boot, self.uptime.now(), self.battery(), board.battery_mv(),
                    board.charging(), modem.rssi, modem.reg, modem.rat, modem.fix, FW, settings["rev"],
                    len(self.outbox.names()), gc.mem_free()))

    async def _on_message(self, sub, payload):
        # Split in three so that no coroutine frame is large: the heap is fragmented.
        if sub == "alarm/ack":
            ack = protocol.decode(payload, "alarm_id", "state")
            if ack:
                await self.alarms.on_ack(ack[0], ack[1])
        elif sub == "config":
            await self._config(payload)
        else:
            await self._command(sub, payload)

    async def _config(self, payload):
        message = protocol.decode(payload)
        rev = message and message.get("rev")
        if not message or rev == self._rejected or type(rev) is int and rev <= self.settings["rev"]:
            return  # malformed, or in force or refused already (a retained config comes after every subscribe)
        problem = protocol.check_config(message, self.settings)
        if problem:
            self._rejected = rev
            event = ("config_rejected", self.modem.clock.now(), "rev", rev, "field", problem[0], "err", problem[1])
        else:
            event = ("config_applied", self.modem.clock.now(), "rev", rev)
        log("app", "%s %s" % (event[0], rev))
        await self.session.publish("evt", protocol.evt(*event))

    async def _command(self, sub, payload):
        command = protocol.decode(payload, "id", "cmd")
        if sub != "cmd" or not command:
            log("app", "ignored a message on " + sub)
            return
        name = command[1]
        err = None
        try:
            if name == "test_alarm":
                await self.alarms.raise_alarm("test", True)
            elif name == "locate":  # a fix now, then a tele with it
                await self.modem.gnss_query()
                self._beat = 0
            elif name == "vibrate":
                await self.board.vibrate("sent")
            elif name == "reboot":
                await self.session.publish("cmd/res", protocol.cmd_res(command[0]))
                self.board.reset()
            else:
                err = "not supported"
        except (ATError, ATTimeout) as e:
            err = "modem error: %s" % e
        await self.session.publish("cmd/res", protocol.cmd_res(command[0], err))


def main(boards, buf=None):
    """Run the pendant on a board module (pendant.boards.sim or pendant.boards.t_a7670e). buf: a list
    holding memory set aside while the firmware loaded, emptied once the long-lived objects exist."""
    asyncio.run(App(boards).run(buf))
