"""The operator console in a real browser (Debian's Chromium) on real parts: Mosquitto, the backend
service, the web server, and a virtual pendant running the real firmware on MicroPython.

These read as the dispatcher's shift: a console is open, a woman presses her pendant, the alarm
appears with its alert and her position; the dispatcher acknowledges it (her pendant vibrates), and
resolves it. A technician sees no positions. When the console's connection or the backend goes down,
the screen says so at once and catches up when it is back.

One world (broker, backend, web server, pendant) serves the tests of this module in order, because
booting the firmware is the slow part; each test leaves the world running as it found it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import leak_check
import pytest
from console_support import chromium, log_in, screenshot, wait_live
from sqlmodel import Session, select

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.db import engine_for
from pendant_backend.models import Alarm, AuditEvent
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings
from pendant_backend.web import BackgroundWebServer
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_host import BackgroundSimHost

from support import add_account, free_port

pytestmark = pytest.mark.e2e

DEVICE = "pd-0001"
BOOT_S = 90
ALARM_S = 60  # press -> stored, on a loaded machine (the firmware waits for its fix and its session)
SEEN_MS = 10_000  # stored -> on screen: the requirement is 1 s; this only bounds a test that fails
ACCOUNTS = {"dispatch": ("dispatcher",), "super": ("supervisor",), "tech": ("technician",)}


@dataclass
class World:
    settings: Settings
    broker: Broker
    backend: BackendService
    web: BackgroundWebServer
    sim: BackgroundSimHost
    browser: Any
    # Kept out of the repr: a failure report prints the fixture, and no report may hold a password.
    passwords: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return self.web.url

    def engine(self):  # noqa: ANN201 - an SQLAlchemy Engine
        return engine_for(self.settings)

    def alarms(self) -> list[Alarm]:
        with Session(self.engine()) as session:
            return list(session.exec(select(Alarm).where(Alarm.device_id == DEVICE).order_by(Alarm.id)))

    def restart_web(self) -> None:
        self.web = BackgroundWebServer(self.engine(), self.settings, port=self.web.port, plain=True)
        self.web.start()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    data_dir = Path(tempfile.mkdtemp(prefix="pendant-console-"))
    os.chmod(data_dir, 0o711)
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port())
    broker = Broker(settings)
    broker.start()
    try:
        config = provision_device(settings, DEVICE)
        backend = BackendService(settings)
        backend.start()
        assert backend.wait_ready(15), "the backend did not subscribe within 15 s"
        engine = engine_for(settings)
        passwords = {name: add_account(engine, name, *roles) for name, roles in ACCOUNTS.items()}
        web = BackgroundWebServer(engine, settings, port=free_port(), plain=True)
        web.start()
        with BackgroundSimHost(data_dir, [config]) as sim, chromium() as browser:
            sim.wait_for_mqtt(DEVICE, timeout=BOOT_S)
            _wait_for_first_fix(sim)
            world = World(settings, broker, backend, web, sim, browser, passwords)
            yield world
            world.web.stop()
            world.backend.stop()
    finally:
        broker.kill()
        # Its secrets and logs go to the secret check now; the folder holds a device password: removed.
        leak_check.REGISTRY.harvest(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


async def _fixes_served(sim: BackgroundSimHost) -> int:
    return sim.pendant(DEVICE).modem.gnss.fixes_served


def _wait_for_first_fix(sim: BackgroundSimHost) -> None:
    """The pendant has been worn for a while: its firmware has read a position from the modem."""
    deadline = time.monotonic() + BOOT_S
    while sim.call(_fixes_served(sim)) == 0:
        assert time.monotonic() < deadline, f"the firmware asked for no GNSS fix within {BOOT_S} s"
        time.sleep(0.2)


def _page(world: World, username: str, path: str = "/") -> Any:
    page = log_in(world.browser, world.url, username, world.passwords[username], path=path)
    return page


def _press_and_wait_stored(world: World) -> Alarm:
    before = {alarm.id for alarm in world.alarms()}
    seen = len(world.sim.pendant(DEVICE).events)
    world.sim.press(DEVICE, 2500)
    world.sim.wait_for_event(DEVICE, "alarm_acked", after=seen, timeout=ALARM_S)
    new = [alarm for alarm in world.alarms() if alarm.id not in before]
    assert len(new) == 1, f"one press, {len(new)} new alarms"
    return new[0]


def _alarm_view(page: Any) -> Any:
    return page.get_by_role("region", name="Alarm view")


def _audit(world: World, alarm_pk: int, kind: str) -> list[AuditEvent]:
    with Session(world.engine()) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.alarm_pk == alarm_pk, AuditEvent.kind == kind))
        )


def test_a_press_appears_on_every_open_console_with_alert_sound_and_position(world: World) -> None:
    dispatcher = _page(world, "dispatch")
    supervisor = _page(world, "super")
    for page in (dispatcher, supervisor):
        wait_live(page)
        assert page.url.endswith("/console")
        page.evaluate("window.loadedBeforePress = true")  # gone if the page reloads
        assert page.locator("#alarm-alert").is_hidden()

    alarm = _press_and_wait_stored(world)

    for page in (dispatcher, supervisor):
        item = page.get_by_role("link", name=f"Alarm {alarm.device_id}/{alarm.alarm_id}, received")
        item.wait_for(timeout=SEEN_MS)
        assert page.evaluate("window.loadedBeforePress") is True, "the console reloaded the page"
        alert = page.locator("#alarm-alert")
        assert alert.is_visible()
        assert "NEW ALARM" in alert.inner_text()
        assert page.locator("body").get_attribute("data-alert") == "on"
        assert page.locator("body").get_attribute("data-sound") == "playing"
    # The first unacknowledged alarm opens by itself, with the position on its map.
    expected = ModemSettings()
    text = dispatcher.locator("#position-text")
    dispatcher.wait_for_function(
        "n => document.getElementById('map').dataset.alarm === String(n)", arg=alarm.id, timeout=SEEN_MS
    )
    assert f"{expected.latitude:.6f}, {expected.longitude:.6f}" in text.inner_text()
    assert dispatcher.get_by_text("NOT ACKNOWLEDGED", exact=True).is_visible()
    # Every view of the position is recorded with who looked, and how.
    viewed = _audit(world, alarm.id, "location_viewed")
    assert ("dispatch", "console") in {
        (event.actor, json.loads(event.body)["data"]["via"]) for event in viewed
    }
    screenshot(dispatcher, "alarm-view")
    supervisor.context.close()
    world.dispatcher = dispatcher  # the next test acknowledges on this console
    world.alarm = alarm
    assert dispatcher.problems.errors == []


def test_b_acknowledge_in_the_browser_vibrates_the_pendant_then_resolve(world: World) -> None:
    page, alarm = world.dispatcher, world.alarm
    seen = len(world.sim.pendant(DEVICE).board.events)
    page.get_by_role("button", name="Acknowledge").click()
    _alarm_view(page).get_by_text("ACKNOWLEDGED", exact=True).wait_for(timeout=SEEN_MS)
    world.sim.wait_for_vibration(DEVICE, "acknowledged", after=seen, timeout=ALARM_S)
    stored = next(a for a in world.alarms() if a.id == alarm.id)
    assert stored.state == "acknowledged"
    assert stored.acknowledged_by == "dispatch"
    page.wait_for_function("document.body.dataset.alert === 'off'", timeout=SEEN_MS)
    assert page.locator("#alarm-alert").is_hidden()
    assert page.locator("body").get_attribute("data-sound") == "off"

    page.get_by_label("Class").select_option("false")
    page.get_by_label("Note").fill("pressed by accident, called back")
    # A live refresh of the view (a location update sends one) keeps what she chose and typed.
    page.evaluate("document.querySelector('#alarm-details .alarm-detail').dataset.old = 'yes'")
    page.evaluate(
        "pk => htmx.ajax('GET', `/console/alarms/${pk}/details`, "
        "{target: '#alarm-details', swap: 'innerHTML'})",
        alarm.id,
    )
    page.wait_for_function(
        "() => { const d = document.querySelector('#alarm-details .alarm-detail'); "
        "return d && !d.dataset.old; }",
        timeout=SEEN_MS,
    )
    assert page.get_by_label("Class").input_value() == "false"
    assert page.get_by_label("Note").input_value() == "pressed by accident, called back"
    page.get_by_role("button", name="Resolve").click()
    _alarm_view(page).get_by_text("RESOLVED", exact=True).wait_for(timeout=SEEN_MS)
    stored = next(a for a in world.alarms() if a.id == alarm.id)
    assert (stored.state, stored.resolution, stored.resolved_by) == ("resolved", "false", "dispatch")
    assert stored.note == "pressed by accident, called back"
    screenshot(page, "queue")
    assert page.problems.errors == []


def test_c_a_technician_cannot_load_a_location_and_is_offered_none(world: World) -> None:
    page = _page(world, "tech")
    assert page.url.endswith("/fleet")  # a technician's start page: no alarms
    assert page.get_by_role("link", name="Alarms").count() == 0
    assert page.locator("a[href*='/console/alarms']").count() == 0
    answer = page.request.get(f"/console/alarms/{world.alarm.id}/location.json")
    assert answer.status == 403
    assert "dispatcher" in answer.json()["detail"]
    answer = page.request.get(f"/console/alarms/{world.alarm.id}")
    assert answer.status == 403
    # Nothing about the refusal counts as a view.
    assert [e.actor for e in _audit(world, world.alarm.id, "location_viewed")].count("tech") == 0
    page.get_by_role("link", name=DEVICE).wait_for()
    screenshot(page, "fleet")
    page.context.close()


def test_d_console_says_not_live_within_5_s_and_catches_up_after_the_web_server_returns(world: World) -> None:
    page = world.dispatcher
    wait_live(page)
    page.evaluate("window.loadedBeforeOutage = true")
    world.web.stop()
    # The dispatcher sees it in full view: banner, badge, greyed content.
    page.locator("#disconnected").wait_for(state="visible", timeout=5_000)
    assert page.locator("#connection").inner_text() == "NOT LIVE"
    assert "not-live" in (page.locator("body").get_attribute("class") or "")

    alarm = _press_and_wait_stored(world)  # an alarm while this console is cut off
    world.restart_web()
    wait_live(page, timeout_ms=30_000)
    page.get_by_role("link", name=f"Alarm {alarm.device_id}/{alarm.alarm_id}, received").wait_for(
        timeout=SEEN_MS
    )
    assert page.locator("#disconnected").is_hidden()
    assert page.evaluate("window.loadedBeforeOutage") is True, "it caught up by reloading the page"
    world.alarm = alarm


def test_e_a_stopped_backend_shows_alarms_not_arriving_until_it_runs_again(world: World) -> None:
    page = world.dispatcher
    wait_live(page)
    assert page.locator("#ingest-down").is_hidden()
    world.backend.stop()
    banner = page.locator("#ingest-down")
    banner.wait_for(state="visible", timeout=5_000)
    assert "ALARMS NOT ARRIVING" in banner.inner_text()
    world.backend = BackendService(world.settings)
    world.backend.start()
    assert world.backend.wait_ready(15)
    banner.wait_for(state="hidden", timeout=15_000)
    # The alarm that came during the outage is still there to be handled.
    alarm = world.alarm
    page.get_by_role("link", name=f"Alarm {alarm.device_id}/{alarm.alarm_id}, received").click()
    _alarm_view(page).get_by_role("button", name="Acknowledge").click()
    _alarm_view(page).get_by_text("ACKNOWLEDGED", exact=True).wait_for(timeout=SEEN_MS)
    assert page.problems.errors == []
