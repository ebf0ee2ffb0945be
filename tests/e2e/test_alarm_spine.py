"""The spine, end to end on real parts: the real firmware on MicroPython (128K heap) -> simulated A7670
-> Mosquitto (the project's config, per-device accounts) -> backend -> SQLite -> alarm/ack -> pendant.

These read as the victim's story: she holds the button, the alarm is stored once with where she is,
and the pendant hears back. The failure stories (backend down, pendant power cut, broker crash) prove
that no alarm is lost or counted twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pendant_backend.db import engine_for
from pendant_backend.queries import list_alarms
from pendant_backend.service import BackendService
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_host import BackgroundSimHost

from support import BrokerFixture

pytestmark = pytest.mark.e2e

DEVICE = "pd-0001"
PRESS_MS = 2500  # the firmware's default long press is 2000 ms
BOOT_S = 90  # firmware build + boot + registration + MQTT connect, on a loaded 2-core machine
ACK_S = 60
RELEASE_S = 1.0  # between two presses: the firmware treats a release shorter than 60 ms as contact bounce


@pytest.fixture
def device_config(broker: BrokerFixture) -> dict[str, Any]:
    from pendant_backend.accounts import provision_device

    return provision_device(broker.settings, DEVICE)


@pytest.fixture
def sim(broker: BrokerFixture, device_config: dict[str, Any]) -> Iterator[BackgroundSimHost]:
    """One virtual pendant running the real firmware, online on the broker."""
    with BackgroundSimHost(broker.data_dir, [device_config]) as host:
        host.wait_for_mqtt(DEVICE, timeout=BOOT_S)
        yield host


async def _fixes_served(sim: BackgroundSimHost) -> int:
    return sim.pendant(DEVICE).modem.gnss.fixes_served


def wait_for_first_fix(sim: BackgroundSimHost, timeout: float = BOOT_S) -> None:
    """Wait until the firmware has read a position from the modem (it has been worn for a while)."""
    deadline = time.monotonic() + timeout
    while sim.call(_fixes_served(sim)) == 0:
        assert time.monotonic() < deadline, f"the firmware asked for no GNSS fix within {timeout} s"
        time.sleep(0.2)


def stored_alarms(broker: BrokerFixture) -> list[Any]:
    return list(reversed(list_alarms(engine_for(broker.settings), device_id=DEVICE, limit=100)))


def outbox_files(broker: BrokerFixture) -> list[str]:
    outbox = broker.data_dir / "sim" / DEVICE / "flash" / "outbox"
    return sorted(path.name for path in outbox.iterdir()) if outbox.exists() else []


def test_press_is_stored_once_with_location_and_the_ack_reaches_the_pendant(
    broker: BrokerFixture, backend: BackendService, sim: BackgroundSimHost
) -> None:
    wait_for_first_fix(sim)
    sim.press(DEVICE, PRESS_MS)
    acked = sim.wait_for_event(DEVICE, "alarm_acked", timeout=ACK_S)

    alarms = stored_alarms(broker)
    assert [alarm.alarm_id for alarm in alarms] == [acked.alarm_id]
    first = alarms[0]
    assert first.device_id == DEVICE
    assert first.kind == "panic"
    assert not first.test
    # The simulator's default GNSS position (modem_sim settings), as the firmware parsed it.
    default_position = ModemSettings()
    assert first.lat == pytest.approx(default_position.latitude, abs=1e-5)
    assert first.lon == pytest.approx(default_position.longitude, abs=1e-5)
    # The ack reached the firmware: it dropped the alarm from its outbox, and the pendant vibrated.
    assert outbox_files(broker) == []
    sim.wait_for_vibration(DEVICE, "received", timeout=ACK_S)

    # A second press is a second, distinct alarm.
    seen = len(sim.pendant(DEVICE).events)
    time.sleep(RELEASE_S)
    sim.press(DEVICE, PRESS_MS)
    second = sim.wait_for_event(DEVICE, "alarm_acked", after=seen, timeout=ACK_S)
    assert second.alarm_id != acked.alarm_id
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id, second.alarm_id]
    assert outbox_files(broker) == []


def test_short_press_raises_no_alarm(
    broker: BrokerFixture, backend: BackendService, sim: BackgroundSimHost
) -> None:
    sim.press(DEVICE, 300)
    time.sleep(RELEASE_S)
    sim.press(DEVICE, PRESS_MS)  # a real alarm after it, so there is something to wait for
    acked = sim.wait_for_event(DEVICE, "alarm_acked", timeout=ACK_S)
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    raised = [event for event in sim.pendant(DEVICE).events if event.kind == "alarm_raised"]
    assert len(raised) == 1


def test_alarm_survives_backend_down_and_a_pendant_power_cut(
    broker: BrokerFixture, sim: BackgroundSimHost
) -> None:
    # The backend is not running: the broker takes the alarm, nobody acks it.
    sim.press(DEVICE, PRESS_MS)
    published = sim.wait_for_event(DEVICE, "alarm_published", timeout=ACK_S)
    assert len(outbox_files(broker)) == 1
    # The pendant loses power before any ack; it boots again with the alarm still in its outbox.
    boots = sim.pendant(DEVICE).boots
    sim.power_cut(DEVICE)
    sim.wait_for_mqtt(DEVICE, timeout=BOOT_S)
    assert sim.pendant(DEVICE).boots > boots

    with BackendService(broker.settings) as backend:
        assert backend.wait_ready(15)
        acked = sim.wait_for_event(DEVICE, "alarm_acked", published.alarm_id, timeout=ACK_S)
    # Sent at least twice (before the cut and after the boot), stored once, and gone from the outbox.
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    assert outbox_files(broker) == []


def test_alarm_pressed_while_the_broker_is_down_arrives_after_it_restarts(
    broker: BrokerFixture, backend: BackendService, sim: BackgroundSimHost
) -> None:
    broker.broker.kill()  # kill -9: as in a crash
    sim.press(DEVICE, PRESS_MS)
    raised = sim.wait_for_event(DEVICE, "alarm_raised", timeout=ACK_S)
    assert len(outbox_files(broker)) == 1

    broker.broker.start()
    acked = sim.wait_for_event(DEVICE, "alarm_acked", raised.alarm_id, timeout=BOOT_S)
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    assert outbox_files(broker) == []


def test_firmware_runs_as_compiled_mpy(broker: BrokerFixture, sim: BackgroundSimHost) -> None:
    flash = Path(broker.data_dir) / "sim" / DEVICE / "flash"
    assert (flash / "main.py").is_file()
    modules = sorted(path.name for path in (flash / "pendant").glob("*"))
    assert modules and all(name.endswith(".mpy") or not Path(name).suffix for name in modules), modules
