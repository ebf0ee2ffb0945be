"""button on MicroPython: held for press_ms raises one alarm; short presses and bounces do not.

The pin plays a script of levels, one per poll, so the outcome does not hang on the machine's speed."""

import asyncio

from mptest import eq, run, test, until
from pendant.button import watch


class Pin:
    def __init__(self, script):
        self.script = list(script)  # levels, one per value() call; the last one stays
        self.level = 0

    def value(self):
        if self.script:
            self.level = self.script.pop(0)
        return self.level


async def play(script, press_ms):
    """Watch a scripted pin until the script is played; return the alarms raised and the polls made."""
    pin = Pin(script)
    fired = []
    polls = []

    async def on_press():
        fired.append(1)

    task = asyncio.create_task(watch(pin, {"press_ms": press_ms}, on_press, lambda: polls.append(1)))
    await until(lambda: not pin.script, 20000, "script played")
    await asyncio.sleep_ms(100)
    task.cancel()
    return len(fired), len(polls)


@test
async def a_long_press_raises_one_alarm():
    fired, polls = await play([1] * 30 + [0] * 5, 200)  # 30 polls of 20 ms and more: held over 200 ms
    eq(fired, 1)
    eq(polls >= 35, True)  # on_poll (the watchdog) runs at every poll


@test
async def short_presses_raise_none():
    eq((await play([1] * 5 + [0] * 5 + [1] * 5 + [0] * 5, 5000))[0], 0)


@test
async def a_one_poll_bounce_does_not_end_a_press():
    # a press of 2 x 15 polls with a one-poll gap: only as one press is it long enough
    eq((await play([1] * 15 + [0] + [1] * 15 + [0] * 5, 450))[0], 1)


@test
async def holding_on_raises_no_second_alarm():
    eq((await play([1] * 60 + [0] * 5, 200))[0], 1)


@test
async def two_long_presses_raise_two_alarms():
    eq((await play([1] * 30 + [0] * 5 + [1] * 30 + [0] * 5, 200))[0], 2)


run()
