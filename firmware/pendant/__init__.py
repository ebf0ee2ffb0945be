"""Pendant firmware: the `pendant` package. Shared by every module: the firmware version and the log line."""

from time import ticks_ms

FW = "0.1.0"


def log(module, message):
    """Print one console line `<ticks_ms> <module>: <message>` (the form the bench and the tests read)."""
    print("%d %s: %s" % (ticks_ms(), module, message))

