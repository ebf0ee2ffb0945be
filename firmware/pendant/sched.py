"""A minimal cooperative scheduler for the pendant's coroutines, in place of asyncio.

asyncio costs about 4 KB of the 64 KB heap on the unix port once imported; the pendant needs only this:
tasks that sleep for a number of milliseconds, started at any time, one of which (run's) decides when
the whole ends, and a report of tasks that raise. A coroutine awaits `sleep_ms(ms)`, which yields the
milliseconds up to `run`; every wait in the firmware is a bounded poll built on it (atchan.until).
Tasks due at the same time take turns. The firmware's coroutines run only under this scheduler (not
under asyncio, which expects its own sleep objects).
"""

from time import sleep_ms as _block
from time import ticks_add, ticks_diff, ticks_ms

_tasks = []  # [ticks when due, coroutine] of every task that has not ended
on_error = None  # fn(task, exception): a task other than run's ended with an exception


def sleep_ms(ms):
    """Await sleep_ms(ms) to let the other tasks run for (at least) ms milliseconds."""
    yield ms


def create_task(coro):
    """Start coro as a task of its own, due now; return the task (run's on_error gets it back)."""
    task = [ticks_ms(), coro]
    _tasks.append(task)
    return task


def run(main):
    """Run coroutine main and the tasks it starts, until main returns (its value) or raises (out of
    run). Tasks left from an earlier run are dropped first."""
    _tasks.clear()
    top = create_task(main)
    while True:
        task = _tasks[0]
        for other in _tasks:
            if ticks_diff(other[0], task[0]) < 0:
                task = other
        wait = ticks_diff(task[0], ticks_ms())
        if wait > 0:
            _block(wait)
        _tasks.remove(task)
        try:
            ms = task[1].send(None)
        except StopIteration as e:
            if task is top:
                return e.value
            continue
        except Exception as e:
            if task is top:
                raise
            if on_error:
                on_error(task, e)
            else:
                print("task failed: %r" % e)
            continue
        task[0] = ticks_add(ticks_ms(), ms)
        _tasks.append(task)  # behind the others due at the same time
