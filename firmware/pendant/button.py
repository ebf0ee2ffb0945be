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

from time import ticks_diff, ticks_ms

from micropython import const

from .sched import sleep_ms

LONG = const(1)
GESTURE = const(2)
OFF = const(3)  # the power button held settings["off_ms"]
_BOUNCE_MS = const(60)
_GAP_MS = const(1000)


class Presses:
    """Gesture detector for one button."""

    def __init__(self):
        # [pressed since (ticks) or None, counted/fired (0, 1 counted, 2 fired), released since or None,
        #  short presses in a row, when the last one ended]
        self.st = [None, 0, None, 0, 0]

    def feed(self, down, now, hold_ms, presses=0):
        """One sample: the level (true: pressed) at ticks `now`. Returns LONG or GESTURE once when one
        is complete, else 0."""
        st = self.st
        if down:
            st[2] = None
            if st[0] is None:
                st[0] = now
                st[1] = 0
                if st[3] and ticks_diff(now, st[4]) > _GAP_MS:
                    st[3] = 0  # too slow for a gesture
            held = ticks_diff(now, st[0])
            if st[1] < 2 and held >= hold_ms:
                st[1] = 2
                st[3] = 0
                return LONG
            if st[1] == 0 and held >= _BOUNCE_MS:
                st[1] = 1
                st[3] += 1
                if presses and st[3] >= presses:
                    st[3] = 0
                    st[1] = 2  # this press may not also become a LONG
                    return GESTURE
        elif st[0] is not None:
            if st[2] is None:
                st[2] = now
            elif ticks_diff(now, st[2]) >= _BOUNCE_MS:
                if st[1] == 2:
                    st[3] = 0
                st[0] = None
                st[4] = st[2]
        elif st[3] and ticks_diff(now, st[4]) > _GAP_MS:
            st[3] = 0
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
        busy = panic.st[0] is not None or panic.st[3] or power.st[0] is not None  # a press under way
        if ms > 20 and not busy:
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
