"""The console's people side in a real browser (Debian's Chromium): lock-out after wrong passwords, a
forged request refused, a session that ends while the page is open, an escalation that reaches the
supervisor's console, and the alarm alert on the fleet page. The web server runs over a database with an
alarm in it (stored by ingest from the protocol's example message); no pendant is needed for these
stories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import leak_check
import pytest
from console_support import chromium, log_in, wait_live
from sqlmodel import Session, select

from pendant_backend import alarms
from pendant_backend.db import make_engine, session_scope
from pendant_backend.ingest import Ingest
from pendant_backend.models import Alarm, Device, WebSession, utc_now
from pendant_backend.settings import Settings
from pendant_backend.web import BackgroundWebServer

from support import add_account

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
SHORT_MS = 10_000


@dataclass
class Site:
    engine: Any
    web: BackgroundWebServer
    browser: Any
    alarm_pk: int
    # Kept out of the repr: a failure report prints the fixture, and no report may hold a password.
    passwords: dict[str, str] = field(repr=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = Settings.for_data_dir(tmp_path_factory.mktemp("console-people"))
    leak_check.REGISTRY.watch(settings.data_dir)  # kept: read by the secret check
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        session.add(Device(device_id="pd-0001", password_hash="x", loan_state="issued", case_ref="case-1"))
    message = json.loads((EXAMPLES / "alarm.json").read_text())
    Ingest(engine).handle("pendant/v1/pd-0001/alarm", json.dumps(message).encode())
    with Session(engine) as session:
        pk = session.exec(select(Alarm.id)).one()
    passwords = {
        name: add_account(engine, name, role)
        for name, role in (
            ("dana", "dispatcher"),
            ("sam", "supervisor"),
            ("lee", "dispatcher"),
            ("pat", "police_it"),
        )
    }
    web = BackgroundWebServer(engine, settings, plain=True)
    web.start()
    with chromium() as browser:
        yield Site(engine, web, browser, pk, passwords)
    web.stop()


def _login_page(site: Site) -> Any:
    context = site.browser.new_context(base_url=site.web.url)
    page = context.new_page()
    page.goto("/login")
    return page


def _try(page: Any, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(site: Site) -> None:
    page = _login_page(site)
    for _ in range(4):
        _try(page, "lee", "this is not it at all")
        assert page.get_by_role("alert").inner_text() == "Wrong username or password."
    _try(page, "lee", "this is not it at all")
    assert "locked for 15 minutes" in page.get_by_role("alert").inner_text()
    _try(page, "lee", site.passwords["lee"])
    assert "the account is locked until" in page.get_by_role("alert").inner_text()
    assert page.url.startswith(f"{site.web.url}/login")
    page.context.close()


def test_a_forged_request_without_the_sessions_csrf_token_is_refused(site: Site) -> None:
    page = log_in(site.browser, site.web.url, "dana", site.passwords["dana"])
    wait_live(page)
    # A request from the page's own cookies but without its CSRF token, as another site would send it.
    answer = page.request.post(f"/console/alarms/{site.alarm_pk}/ack", headers={"X-CSRF-Token": "forged"})
    assert answer.status == 403
    assert "CSRF" in answer.json()["detail"]
    answer = page.request.post(f"/console/alarms/{site.alarm_pk}/ack", form={"note": "x"})
    assert answer.status == 403
    with Session(site.engine) as session:
        assert session.get(Alarm, site.alarm_pk).state == "received"
    page.context.close()


def test_a_session_that_expires_while_the_page_is_open_says_so(site: Site) -> None:
    page = log_in(site.browser, site.web.url, "dana", site.passwords["dana"])
    wait_live(page)
    with session_scope(site.engine) as session:
        for row in session.exec(select(WebSession).where(WebSession.ended_at.is_(None))):
            row.expires_at = utc_now() - timedelta(seconds=1)
            session.add(row)
    # The live stream checks the session every 10 s and the page says so in full view.
    banner = page.locator("#session-ended")
    banner.wait_for(state="visible", timeout=20_000)
    assert "Your session has ended" in banner.inner_text()
    assert page.locator("body").get_attribute("data-sound") == "off"
    page.reload()
    assert page.url.startswith(f"{site.web.url}/login")
    page.context.close()


def test_an_escalation_alerts_the_supervisor_and_repeats_until_acknowledged(site: Site) -> None:
    supervisor = log_in(site.browser, site.web.url, "sam", site.passwords["sam"])
    dispatcher = log_in(site.browser, site.web.url, "dana", site.passwords["dana"])
    for page in (supervisor, dispatcher):
        wait_live(page)
    later = utc_now() + timedelta(seconds=61)
    assert [a.id for a in alarms.escalate_due(site.engine, now=later, after_s=60, max_count=0)] == [
        site.alarm_pk
    ]
    banner = supervisor.locator("#escalation-alert")
    banner.wait_for(state="visible", timeout=SHORT_MS)
    assert "ESCALATION: 1 alarm has not been acknowledged in time" in banner.inner_text()
    supervisor.get_by_text("ESCALATED ×1").first.wait_for(timeout=SHORT_MS)
    # Only supervisors get the escalation alert; the dispatcher keeps the new-alarm alert.
    dispatcher.get_by_text("ESCALATED ×1").first.wait_for(timeout=SHORT_MS)
    assert dispatcher.locator("#escalation-alert").is_hidden()
    assert dispatcher.locator("#alarm-alert").is_visible()
    # It repeats while nobody acknowledges.
    again = later + timedelta(seconds=61)
    assert [a.id for a in alarms.escalate_due(site.engine, now=again, after_s=60, max_count=0)] == [
        site.alarm_pk
    ]
    supervisor.get_by_text("ESCALATED ×2").first.wait_for(timeout=SHORT_MS)
    supervisor.get_by_role("region", name="Alarm view").get_by_role("button", name="Acknowledge").click()
    banner.wait_for(state="hidden", timeout=SHORT_MS)
    with Session(site.engine) as session:
        assert session.get(Alarm, site.alarm_pk).acknowledged_by == "sam"
    assert alarms.escalate_due(site.engine, now=again + timedelta(seconds=61), after_s=60, max_count=0) == []
    supervisor.context.close()
    dispatcher.context.close()


def _ingest_alarm(site: Site, alarm_id: str, *, test: bool) -> None:
    message = json.loads((EXAMPLES / "alarm.json").read_text())
    message.update(alarm_id=alarm_id, test=test, tst=int(utc_now().timestamp()))
    Ingest(site.engine).handle("pendant/v1/pd-0001/alarm", json.dumps(message).encode())


def test_police_it_on_the_fleet_page_hear_a_real_alarm_not_a_test_and_the_alert_ends_with_the_ack(
    site: Site,
) -> None:
    with Session(site.engine) as session:  # whatever the tests before left unacknowledged
        waiting = session.exec(select(Alarm.device_id, Alarm.alarm_id).where(Alarm.state == "received")).all()
    for device_id, alarm_id in waiting:
        alarms.acknowledge_alarm(site.engine, ref=f"{device_id}/{alarm_id}", operator="dana")
    page = log_in(site.browser, site.web.url, "pat", site.passwords["pat"], path="/fleet")
    assert page.url.endswith("/fleet")
    wait_live(page)
    alert = page.locator("#alarm-alert")
    assert alert.is_hidden()

    _ingest_alarm(site, "40-1", test=True)
    alert.get_by_text("Test alarm waiting (1)").wait_for(timeout=SHORT_MS)
    assert page.locator("body").get_attribute("data-sound") == "off", "a test alarm does not ring"

    _ingest_alarm(site, "40-2", test=False)
    alert.get_by_text("NEW ALARM: 1 alarm not acknowledged").wait_for(timeout=SHORT_MS)
    assert page.locator("body").get_attribute("data-sound") == "playing"
    assert alert.get_by_role("link", name="Open the alarm queue.").get_attribute("href") == "/console"

    alarms.acknowledge_alarm(site.engine, ref="pd-0001/40-2", operator="dana")
    alert.get_by_text("Test alarm waiting (1)").wait_for(timeout=SHORT_MS)
    assert page.locator("body").get_attribute("data-sound") == "off"
    alarms.acknowledge_alarm(site.engine, ref="pd-0001/40-1", operator="dana")
    alert.wait_for(state="hidden", timeout=SHORT_MS)
    assert page.problems.errors == []
    page.context.close()
