"""Long-press detection by polling `value()` (1 = pressed) of any pin-like object, as micropython-async's
Pushbutton does: held for press_ms raises one alarm; shorter presses and contact bounces are ignored.
"""

import asyncio
from time import ticks_diff, ticks_ms


async def watch(pin, settings, on_press, on_poll=None):
    """Poll pin every 20 ms for ever (the supervised `button` task) and `await on_press()` once per press
    held at least settings["press_ms"]; on_poll() runs at every poll (the app feeds the watchdog there:
    this loop is the one that must never stop)."""
    pressed_at = released_at = None
    while True:
        await asyncio.sleep_ms(20)
        if on_poll:
            on_poll()
        now = ticks_ms()
        if pin.value():
            released_at = None
            if pressed_at is None:
                pressed_at = now
            elif pressed_at is not True and ticks_diff(now, pressed_at) >= settings["press_ms"]:
                pressed_at = True  # fired: nothing more until the button is released
                await on_press()
        elif pressed_at is not None:
            if released_at is None:
                released_at = now
            elif ticks_diff(now, released_at) >= 60:  # a release shorter than this is a bounce
                pressed_at = released_at = None
