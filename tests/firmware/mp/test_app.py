"""app and boot on MicroPython: config.json checks, a pendant fresh from the factory waits for
provisioning, the watchdog fed only while the worker comes round, and a task that fails does not stop
the others."""

import asyncio
import os
from time import ticks_add, ticks_ms

from mptest import eq, raises, run, test, until
from pendant import app, boot

EXAMPLES = os.getenv("PENDANT_EXAMPLES") or "../../../docs/protocol-examples"


@test
def the_example_device_config_loads():
    device = boot.load_device_config(EXAMPLES + "/device-config.json")
    eq((device["device_id"], device["mqtt"]["port"], device["mqtt"]["tls"]), ("pd-0001", 8883, True))


@test
def a_missing_or_unusable_device_config_says_so():
    raises(ValueError, boot.load_device_config, "no-such-file.json")
    for text in (
        '{"device_id":"pd-1"}',
        '{"device_id":"pd-1","mqtt":{"host":"h","port":"x"}}',
        '{"device_id":"pd-1","mqtt":{"host":"h","port":1,"password":"a\\"b"}}',
        "[1]",
        "{",
    ):
        with open("config.json", "w") as f:
            f.write(text)
        raises(ValueError, boot.load_device_config)


@test
def without_config_the_pendant_waits_for_provisioning():
    try:
        os.remove("config.json")
    except OSError:
        pass  # not there
    eq(boot.start(app.App(None)), False)  # app.main then idles, the REPL a Ctrl-C away


class Watchdog:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


class Quiet:  # an idle pendant's parts, as App._idle reads them
    def __init__(self):
        self.queued = {}
        self.open = None
        self.inbox = []
        self.call = self
        self.state = 0  # the call's: idle
        self.gnss = None
        self.chan = self

    def ringing(self):
        return None

    def idle_ms(self):
        return 0


@test
def the_watchdog_is_fed_only_while_the_worker_comes_round():
    a = app.App(None)
    a.wdt = Watchdog()
    a.alarms = a.state = a.session = a.modem = Quiet()
    a._idle()
    eq(a.wdt.fed, 1)
    a.alive = ticks_add(ticks_ms(), -400000)  # the worker is stuck: the watchdog will reset the pendant
    a._idle()
    eq(a.wdt.fed, 1)


@test
async def a_task_that_fails_does_not_stop_the_others_and_waits_longer_before_each_restart():
    a = app.App(None)
    count = [0]

    async def bad():
        await asyncio.sleep_ms(10)
        raise ValueError("boom")

    async def good():
        while True:
            count[0] += 1
            await asyncio.sleep_ms(5)

    failing = app.Supervised("bad", bad)
    failing.task = asyncio.create_task(a._supervise(failing))
    asyncio.create_task(a._supervise(app.Supervised("good", good)))
    await until(lambda: failing.task is None, 2000, "the failure handled")
    eq(failing.pause, 1000)  # doubled: the supervisor starts it again a second later
    seen = count[0]
    await until(lambda: count[0] > seen + 3, 2000, "the other task going on")


run()
