"""What the wearer does, and the battery: button gestures from polled levels (as micropython-async's
Pushbutton polls `value()`), and the battery percent.

`Presses` is pure (levels and times in, gestures out) and tested directly; `watch` is the supervised task
that polls the panic and power buttons every 20 ms, or lets the board sleep when nothing is going on.
- LONG: a press held settings["press_ms"] (the panic alarm), once per press;
- GESTURE: settings["presses"] short presses in a row, each starting within 1 s of the previous release
  (0 turns it off);
- a release shorter than 60 ms is contact bounce, and so is a press shorter than 60 ms.

Battery (`percent`, pure): a LiPo cell reads 4200 mV full and 3300 mV empty under the pendant's light
load; in between the estimate is linear, which is rough but monotonic (power.py raises the alerts).
"""

from asyncio import sleep_ms
from time import ticks_diff, ticks_ms

from micropython import const

LONG = const(1)
GESTURE = const(2)
OFF = const(3)  # the power button held settings["off_ms"]
_BOUNCE_MS = const(60)
_GAP_MS = const(1000)
# Presses.fired
_NOT_YET = const(0)
_COUNTED = const(1)  # counted as a short press
_FIRED = const(2)  # a gesture came of it: nothing more from this press


class Presses:
    """Gesture detector for one button."""

    def __init__(self):
        self.down = None  # ticks_ms the press began, None while released
        self.fired = _NOT_YET
        self.up = None  # ticks_ms the release began (it may still be bounce), else None
        self.count = 0  # short presses in a row
        self.last = 0  # ticks_ms the last short press ended

    def busy(self):
        """A press or a run of short presses is under way."""
        return self.down is not None or self.count

    def feed(self, down, now, hold_ms, presses=0):
        """One sample: the level (true: pressed) at ticks `now`. Returns LONG or GESTURE once when one
        is complete, else 0."""
        if down:
            self.up = None
            if self.down is None:
                self.down = now
                self.fired = _NOT_YET
                if self.count and ticks_diff(now, self.last) > _GAP_MS:
                    self.count = 0  # too slow for a gesture
            held = ticks_diff(now, self.down)
            if self.fired != _FIRED and held >= hold_ms:
                self.fired = _FIRED
                self.count = 0
                return LONG
            if self.fired == _NOT_YET and held >= _BOUNCE_MS:
                self.fired = _COUNTED
                self.count += 1
                if presses and self.count >= presses:
                    self.count = 0
                    self.fired = _FIRED  # this press may not also become a LONG
                    return GESTURE
        elif self.down is not None:
            if self.up is None:
                self.up = now
            elif ticks_diff(now, self.up) >= _BOUNCE_MS:
                if self.fired == _FIRED:
                    self.count = 0
                self.down = None
                self.last = self.up
        elif self.count and ticks_diff(now, self.last) > _GAP_MS:
            self.count = 0
        return 0


def percent(mv):
    """Battery percent 0..100 from millivolts, or None when the board cannot tell."""
    return None if mv is None else max(0, min(100, (mv - 3300) // 9))


async def watch(board, settings, on_event, idle_ms):
    """Poll both buttons for ever and `await on_event(LONG | GESTURE | OFF)`. idle_ms() runs before every
    poll (the app feeds the watchdog there, as this loop must never stop) and says how long the pendant
    may sleep; while a button is busy the loop polls every 20 ms."""
    panic = Presses()
    power = Presses()
    while True:
        ms = idle_ms()
        if ms > 20 and not (panic.busy() or power.busy()):
            board.sleep(ms)  # light sleep; a button or the modem wakes it early
            await sleep_ms(0)
        else:
            await sleep_ms(20)
        now = ticks_ms()
        levels = board.buttons()
        event = panic.feed(levels[0], now, settings["press_ms"], settings["presses"])
        if event:
            await on_event(event)
        if power.feed(levels[1], now, settings["off_ms"]) == LONG:
            await on_event(OFF)
