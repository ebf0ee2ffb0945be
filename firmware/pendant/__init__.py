"""Pendant firmware: the `pendant` package. Shared by every module: the firmware version, the log line,
and the one module at a time that is loaded for a rare job.

Living in 64 KB: what the pendant needs all the time stays loaded; what it needs rarely (bringing the
modem up, connecting, applying a config, a command, a fallback step, the battery check, switching off)
is a module of its own, loaded for that job and dropped again. Only one such module is in memory at a
time, so the worst case is known: what stays loaded, plus the largest of them.
"""

import gc
import sys
from time import ticks_ms

from .sched import sleep_ms

FW = "0.2.0"
_slot = [None]  # the module loaded for a job now (its name), or None


def log(module, message):
    """Print one console line `<ticks_ms> <module>: <message>` (the form the bench and the tests read)."""
    print("%d %s: %s" % (ticks_ms(), module, message))


async def use(name):
    """Load pendant.<name> for one job and return it; wait while another such module is in use. The
    caller `drop`s it when the job is done."""
    while _slot[0] and _slot[0] != name:
        await sleep_ms(20)
    _slot[0] = name
    if "pendant." + name not in sys.modules:
        gc.collect()  # the module's code needs pieces of up to a few hundred bytes
    return __import__("pendant." + name, None, None, (name,))


def drop(name):
    """Forget pendant.<name> so that its code is freed (the names it interned stay), and let the next
    one load."""
    sys.modules.pop("pendant." + name, None)
    try:
        delattr(sys.modules["pendant"], name)
    except (AttributeError, KeyError):
        pass  # never loaded, or dropped already
    if _slot[0] == name:
        _slot[0] = None
