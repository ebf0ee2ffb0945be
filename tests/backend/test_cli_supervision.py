"""`pendant device supervision`, `--supervision` at provisioning, and the SUPERV column of `pendant
fleet`: what police IT types and reads, and the one-line refusals of what does not fit."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from pendant_backend.db import engine_for
from pendant_backend.models import AuditEvent

from support import run_cli

pytestmark = pytest.mark.broker


def config_changes(settings) -> list[tuple[str | None, str]]:  # noqa: ANN001
    """(device, actor) of every `config_changed` audit event, oldest first."""
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(AuditEvent).where(AuditEvent.kind == "config_changed").order_by(AuditEvent.seq)
            )
            return [(row.device_id, row.actor) for row in rows]
    finally:
        engine.dispose()


def test_provision_with_a_profile_then_change_it(broker) -> None:
    s = broker.settings
    assert run_cli(s, "user", "add", "it", "--role", "police_it").exit_code == 0
    provisioned = run_cli(s, "device", "provision", "pd-0001", "--supervision", "sp3", "--operator", "it")
    assert provisioned.exit_code == 0, provisioned.output
    assert run_cli(s, "device", "provision", "pd-0002").exit_code == 0
    view = json.loads(run_cli(s, "device", "config", "pd-0001", "--json").output)
    assert (view["device"]["values"], view["published_rev"]) == ({"heartbeat_s": 1800}, 1)
    assert config_changes(s) == [("pd-0001", "it")]
    # Until its first heartbeat on that config the pendant runs the default, 3 minutes.
    fleet = json.loads(run_cli(s, "fleet", "--json").output)
    watch = {d["device_id"]: d["supervision"] for d in fleet["devices"]}
    assert watch["pd-0001"] == {
        "profile": "SP3",
        "heartbeat_s": 1800,
        "interval_in_force": 180,
        "late_after_s": 240,
        "offline_after_s": 600,
        "pending": True,
    }
    assert (watch["pd-0002"]["profile"], watch["pd-0002"]["pending"]) == ("SP4", False)
    table = run_cli(s, "fleet").output.splitlines()
    assert "SUPERV" in table[-3]
    assert "SP4>SP3" in table[-2] and table[-2].startswith("pd-0001")
    assert " SP4 " in table[-1] and table[-1].startswith("pd-0002")

    changed = run_cli(
        s, "device", "supervision", "pd-0002", "custom", "--heartbeat-s", "600", "--operator", "it"
    )
    assert changed.exit_code == 0, changed.output
    assert (
        "custom, a heartbeat every 600 s from its next heartbeat; until then held to 180 s" in changed.output
    )
    assert "late after 240 s, offline after 600 s of silence" in changed.output
    assert "published as rev 2" in changed.output
    assert config_changes(s)[-1] == ("pd-0002", "it")
    shown = json.loads(run_cli(s, "device", "supervision", "pd-0002", "--json").output)
    assert (shown["profile"], shown["heartbeat_s"], shown["interval_in_force"]) == ("custom", 600, 180)
    again = json.loads(
        run_cli(s, "device", "supervision", "pd-0002", "SP4", "--operator", "it", "--json").output
    )
    # The pendant may run 180 s or 600 s until a heartbeat says which: it is held to the longer.
    assert (again["profile"], again["late_after_s"], again["offline_after_s"], again["version"]) == (
        "SP4",
        660,
        1860,
        2,
    )
    device = json.loads(run_cli(s, "device", "show", "pd-0001", "--json").output)
    assert device["supervision"]["profile"] == "SP3"
    assert "supervision:" in run_cli(s, "device", "show", "pd-0001").output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["device", "supervision", "pd-0001", "custom", "--operator", "it"], "--heartbeat-s"),
        (["device", "supervision", "pd-0001", "custom", "--heartbeat-s", "30"], "60<=x<=86400"),
        (["device", "supervision", "pd-0001", "SP4", "--heartbeat-s", "600"], "use custom"),
        (["device", "supervision", "pd-0001", "SP2"], "not a supervision profile"),
        (["device", "supervision", "pd-0001", "SP3"], "--operator"),
        (["device", "supervision", "pd-0001", "--heartbeat-s", "600"], "goes with a profile"),
        (["device", "provision", "pd-0001", "--heartbeat-s", "600"], "--supervision custom"),
        (["device", "provision", "pd-0001", "--supervision", "custom"], "--heartbeat-s"),
        (["provision", "--heartbeat-s", "600"], "--supervision custom"),
        (["provision", "--supervision", "custom", "--heartbeat-s", "100000"], "60<=x<=86400"),
    ],
)
def test_a_profile_that_does_not_fit_is_refused_in_one_line(broker, args: list[str], says: str) -> None:
    s = broker.settings
    run_cli(s, "user", "add", "it", "--role", "police_it")
    refused = run_cli(s, *args)
    assert refused.exit_code == 2, refused.output
    assert says in refused.output
    assert "Traceback" not in refused.output


def test_an_unknown_device_is_one_line(broker) -> None:
    s = broker.settings
    run_cli(s, "user", "add", "it", "--role", "police_it")
    refused = run_cli(s, "device", "supervision", "pd-0404", "SP3", "--operator", "it")
    assert refused.exit_code == 1 and "there is no device pd-0404" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_help_teaches_the_profiles() -> None:
    from click.testing import CliRunner

    from pendant_tools.cli import main

    shown = CliRunner().invoke(main, ["device", "supervision", "--help"]).output
    assert "EN 50136-1" in shown and "late after 240 s" in shown and "Examples:" in shown
    assert "--supervision" in CliRunner().invoke(main, ["device", "provision", "--help"]).output
    assert "--supervision" in CliRunner().invoke(main, ["provision", "--help"]).output
