"""A tiny test harness for MicroPython: register tests, run them, print a line each, exit 1 on failure.

    from mptest import test, eq, run

    @test
    def addition():
        eq(1 + 1, 2)

    run()

A test may be a coroutine function; it then runs on asyncio, in a new event loop, so the tasks it
started are dropped when it ends. A hang is caught by
the time limit of the pytest case that runs the script (and `until` gives up after its own timeout).
"""

import asyncio
import gc
import os
import sys

_tests = []


def test(fn):
    """Decorator: register fn as a test."""
    _tests.append(fn)
    return fn


def eq(actual, expected, what="value"):
    """Fail unless actual == expected."""
    if actual != expected:
        raise AssertionError("%s: got %r, expected %r" % (what, actual, expected))


def true(condition, what="condition"):
    """Fail unless condition holds."""
    if not condition:
        raise AssertionError("%s is false" % what)


def raises(exception, fn, *args):
    """Fail unless fn(*args) raises exception."""
    try:
        fn(*args)
    except exception:
        return
    raise AssertionError("%s not raised" % exception.__name__)


async def araises(exception, awaitable):
    """Fail unless awaiting awaitable raises exception."""
    try:
        await awaitable
    except exception:
        return
    raise AssertionError("%s not raised" % exception.__name__)


async def until(condition, timeout_ms=5000, what="condition"):
    """Wait (polling every 5 ms) until condition() is true; fail after timeout_ms."""
    waited = 0
    while not condition():
        if waited >= timeout_ms:
            raise AssertionError("timed out waiting for %s" % what)
        await asyncio.sleep_ms(5)
        waited += 5


def wipe(*folders):
    """A flash without what the firmware writes in the current directory: the given folders emptied,
    state.json, settings.json and their .tmp files gone."""
    for folder in folders:
        try:
            for name in os.listdir(folder):
                os.remove(folder + "/" + name)
        except OSError:
            pass  # no such folder
    for name in ("state.json", "state.json.tmp", "settings.json", "settings.json.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass  # not there


def run():
    """Run every registered test; exit with status 1 if any failed."""
    failed = 0
    for fn in _tests:
        gc.collect()  # what the test before left: each test starts with the heap the firmware would have
        try:
            result = fn()
            if type(result).__name__ == "generator":  # a coroutine on MicroPython
                asyncio.new_event_loop()  # without the tasks the test before left
                asyncio.run(result)
            print("ok", fn.__name__)
        except Exception as e:
            failed += 1
            print("FAIL", fn.__name__)
            sys.print_exception(e)
    print("%d passed, %d failed" % (len(_tests) - failed, failed))
    if failed:
        sys.exit(1)
