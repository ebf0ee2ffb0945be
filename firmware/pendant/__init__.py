"""Pendant firmware: the `pendant` package. Shared by every module: the firmware version and the log line.

Every module is imported at start and stays loaded (docs/architecture.md, "Memory budget"); the tasks run
on MicroPython's asyncio.
"""

from time import ticks_ms

FW = "0.2.0"


def log(module, message):
    """Print one console line `<ticks_ms> <module>: <message>` (the form the bench and the tests read)."""
    print("%d %s: %s" % (ticks_ms(), module, message))
