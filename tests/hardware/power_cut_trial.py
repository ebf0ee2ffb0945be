"""One power-cut trial on a virtual pendant running the real firmware: press, cut the power at a chosen
moment while the alarm is open, and time how long after the cut the alarm reaches the broker again.

Shared by tests/hardware/test_power_cut_resend.py (a few trials in CI) and
benchmarks/power_cut_resend.py (20 trials, each one's time printed). The cut is made on the bench's loop,
so "20 ms after the raise" is 20 ms after the bench read the firmware's `alarm: raised` line, not 20 ms
plus a thread hop.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from dataclasses import dataclass

from pendant_backend.payloads import topic_for
from pendant_hardware.virtual_pendant import VirtualPendant

from hw_helpers import Subscriber

PRESS_MS = 2500  # the firmware's long press is 2000 ms
# Nothing of the boot after a cut reaches the broker within this: the firmware restarts after the
# bench's restart delay and the modem answers only boot_delay_s (3 s) after power-on. A message that
# arrives sooner was sent before the cut (it was in flight) and is not the resend.
NOT_YET_S = 1.0


@dataclass(frozen=True)
class Cut:
    """What a trial did: the alarm that was open, when the power went (time.time()) and whether the
    modem's DTR line was high (the modem allowed to sleep) at that moment."""

    alarm_id: str
    at: float
    dtr_high: bool


class AlarmWatch:
    """The broker side: every alarm message of every device, with the time it arrived."""

    def __init__(self, port: int, login: tuple[str, str]) -> None:
        self._subscriber = Subscriber(port, topic_for("+", "alarm"), login=login)
        self._seen: list[tuple[float, str]] = []

    def close(self) -> None:
        """Disconnect from the broker."""
        self._subscriber.close()

    def resend_after(self, cut: Cut, timeout: float) -> float | None:
        """Seconds from the cut to the first arrival of its alarm from the boot after it; None if it did
        not arrive within `timeout` seconds of the cut."""
        deadline = cut.at + timeout
        while True:
            for arrived, alarm_id in self._seen:
                if alarm_id == cut.alarm_id and arrived >= cut.at + NOT_YET_S:
                    return arrived - cut.at
            left = deadline - time.time()
            if left <= 0:
                return None
            try:
                message = self._subscriber.next(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            self._seen.append((time.time(), json.loads(message.payload)["alarm_id"]))


async def cut_after_raise(pendant: VirtualPendant, delay_s: float) -> Cut:
    """Hold the panic button; `delay_s` after the firmware logs `alarm: raised`, cut the power."""
    seen = len(pendant.events)
    press = asyncio.create_task(pendant.press(PRESS_MS))
    try:
        raised = await pendant.wait_for_event("alarm_raised", after=seen, timeout=30)
        await asyncio.sleep(delay_s)
        cut = Cut(str(raised.alarm_id), time.time(), pendant.modem.dtr)
        await pendant.power_cut()
    finally:
        await press
    return cut


async def cut_while_asleep(pendant: VirtualPendant, timeout: float = 60.0) -> Cut:
    """Raise an alarm, let it be published (no backend acks it: it stays open), wait until the firmware
    lets the modem sleep (DTR high) and cut the power at that moment."""
    seen = len(pendant.events)
    await pendant.press(PRESS_MS)
    published = await pendant.wait_for_event("alarm_published", after=seen, timeout=30)
    async with asyncio.timeout(timeout):
        while not pendant.modem.dtr:
            await asyncio.sleep(0.005)
    cut = Cut(str(published.alarm_id), time.time(), True)
    await pendant.power_cut()
    return cut
