"""button on MicroPython: the gesture detector fed levels at given times (pure, so nothing hangs on the
machine's speed), the watch task over a scripted board, and the battery estimate."""

import asyncio

from mptest import eq, run, test, until
from pendant.button import GESTURE, LONG, OFF, Presses, percent, watch


def feed(levels, hold_ms=2000, presses=0, step=20):
    """Feed (level, for ms) pairs sampled every step ms; return the events in order."""
    p = Presses()
    now = 0
    events = []
    for level, ms in levels:
        for _ in range(ms // step):
            event = p.feed(level, now, hold_ms, presses)
            if event:
                events.append(event)
            now += step
    return events


@test
def a_long_press_raises_once_however_long_it_is_held():
    eq(feed([(0, 100), (1, 2100), (0, 200)]), [LONG])
    eq(feed([(0, 100), (1, 9000), (0, 200)]), [LONG])


@test
def short_presses_and_bounces_raise_nothing():
    eq(feed([(1, 1500), (0, 200), (1, 40), (0, 40), (1, 20), (0, 500)]), [])


@test
def a_bounce_inside_a_press_does_not_end_it():
    # 1200 ms + a 20 ms gap + 1200 ms: only as one press is it long enough
    eq(feed([(1, 1200), (0, 20), (1, 1200), (0, 200)]), [LONG])


@test
def two_long_presses_raise_two_alarms():
    eq(feed([(1, 2100), (0, 300), (1, 2100), (0, 300)]), [LONG, LONG])


@test
def the_multi_press_gesture():
    quick = [(1, 200), (0, 300)] * 3
    eq(feed(quick, presses=3), [GESTURE])
    eq(feed(quick, presses=0), [])  # off by default
    eq(feed([(1, 200), (0, 1500)] * 3, presses=3), [])  # too slow
    eq(feed([(1, 200), (0, 300)] * 2, presses=3), [])  # too few


class Board:
    def __init__(self, script):
        self.script = script  # (panic, power) levels, one per poll; the last one stays
        self.sleeps = 0

    def buttons(self):
        if len(self.script) > 1:
            return self.script.pop(0)
        return self.script[0]

    def sleep(self, ms):
        self.sleeps += 1


@test
async def watch_reports_both_buttons_and_sleeps_only_when_idle():
    board = Board([(1, 0)] * 15 + [(0, 0)] * 5 + [(0, 1)] * 15 + [(0, 0)])
    events = []
    idle = [0]  # what the app says: 0, stay awake

    async def on_event(event):
        events.append(event)

    task = asyncio.create_task(
        watch(board, {"press_ms": 200, "presses": 0, "off_ms": 200}, on_event, lambda: idle[0])
    )
    await until(lambda: len(board.script) == 1, 20000, "script played")
    eq(events, [LONG, OFF])
    eq(board.sleeps, 0)
    idle[0] = 1000
    await until(lambda: board.sleeps, 5000, "a light sleep")
    task.cancel()


@test
def battery_percent_from_millivolts():
    for mv, expected in ((None, None), (4250, 100), (4200, 100), (3750, 50), (3300, 0), (3000, 0)):
        eq(percent(mv), expected, "%s mV" % mv)


run()
