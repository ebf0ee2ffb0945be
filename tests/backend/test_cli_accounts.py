"""The CLI runs as an account: `--operator` names it, its roles decide, and the audit log records it.
Where a person is shows only to a dispatcher or a supervisor (`alarms show --operator`), each view an
audit event; a technician handles test alarms only; `device issue` refuses a pendant that is not ready
unless overridden, and `fleet readiness` lists them. Both databases; no broker is needed."""

from __future__ import annotations

import json

import pytest
from backend_samples import alarm, topic
from click.testing import CliRunner
from sqlmodel import Session, col, select

from pendant_backend import configs, registry, users
from pendant_backend.db import session_scope
from pendant_backend.models import AuditEvent, Device, utc_now
from pendant_tools.cli import main

from support import add_account, cli_env


@pytest.fixture
def cli(pendant_settings):
    """`pendant ...` on the test's database; returns click's result."""

    def run(*args: str):
        result = CliRunner().invoke(main, list(args), env=cli_env(pendant_settings))
        assert "Traceback" not in result.output, result.output
        return result

    return run


@pytest.fixture
def people(engine) -> None:
    add_account(engine, "ann", "dispatcher")
    add_account(engine, "sue", "supervisor")
    add_account(engine, "tech", "technician")
    add_account(engine, "pit", "police_it")


@pytest.fixture
def alarms(ingest) -> None:
    """pd-0001's panic alarm 12-3 (with a GNSS fix) and pd-0002's test alarm 7-1."""
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0002", "alarm"), alarm("7-1", test=True))


def events(engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.seq)))
        )


# -- where a person is ------------------------------------------------------------------------------


def test_show_without_an_operator_has_no_position_and_records_nothing(cli, engine, alarms) -> None:
    text = cli("alarms", "show", "pd-0001/12-3")
    assert text.exit_code == 0 and "52.37" not in text.output and "4.89" not in text.output
    assert "location:        gnss (the position needs --operator" in text.output
    data = json.loads(cli("alarms", "show", "pd-0001/12-3", "--json").output)
    assert data["location"] == "gnss" and not {"lat", "lon", "acc", "cell", "payload", "trail"} & set(data)
    assert events(engine, "location_viewed") == []


@pytest.mark.parametrize("username", ["ann", "sue"])
def test_a_dispatcher_or_supervisor_sees_the_position_and_the_view_is_audited(
    cli, engine, people, alarms, username: str
) -> None:
    shown = cli("alarms", "show", "pd-0001/12-3", "--operator", username)
    assert shown.exit_code == 0, shown.output
    assert "52.373101,4.892203 ±8 m" in shown.output and "trail:           1 point(s)" in shown.output
    assert "loc_time:        2025-11-29 07:59:50 UTC (pendant clock)" in shown.output  # not 1764403190
    data = json.loads(cli("alarms", "show", "pd-0001/12-3", "--operator", username, "--json").output)
    assert (data["lat"], data["lon"], len(data["trail"])) == (52.373101, 4.892203, 1)
    viewed = events(engine, "location_viewed")
    assert [(e.actor, e.device_id) for e in viewed] == [(username, "pd-0001")] * 2
    assert all('"via":"cli"' in e.body for e in viewed)


@pytest.mark.parametrize("username", ["tech", "pit"])
def test_a_technician_or_police_it_never_sees_it(cli, engine, people, alarms, username: str) -> None:
    refused = cli("alarms", "show", "pd-0001/12-3", "--operator", username)
    assert refused.exit_code == 1 and "52.37" not in refused.output
    assert refused.output.strip().splitlines() == [
        f"Error: the account {username!r} ({users.get_user(engine, username).roles[0]}) may not do this: "
        "it needs the role dispatcher or supervisor"
    ]
    assert events(engine, "location_viewed") == []


def test_the_operator_can_come_from_the_environment(pendant_settings, engine, people, alarms) -> None:
    result = CliRunner().invoke(
        main, ["alarms", "show", "pd-0001/12-3"], env={**cli_env(pendant_settings), "PENDANT_OPERATOR": "ann"}
    )
    assert result.exit_code == 0 and "52.373101" in result.output
    assert [e.actor for e in events(engine, "location_viewed")] == ["ann"]


# -- acting on alarms as an account ---------------------------------------------------------------


def test_acks_and_resolutions_record_the_account(cli, engine, people, alarms) -> None:
    acked = cli("alarms", "ack", "pd-0001/12-3", "--operator", "ann")
    assert acked.exit_code == 0 and "acknowledged by ann" in acked.output
    resolved = cli("alarms", "resolve", "pd-0001/12-3", "--class", "precautionary", "--operator", "sue")
    assert resolved.exit_code == 0, resolved.output
    [ack], [resolution] = events(engine, "alarm_acknowledged"), events(engine, "alarm_resolved")
    assert (ack.actor, resolution.actor) == ("ann", "sue")
    listed = json.loads(cli("alarms", "list", "--json", "--device", "pd-0001").output)
    assert (listed[0]["acknowledged_by"], listed[0]["resolved_by"]) == ("ann", "sue")


def test_a_technician_handles_test_alarms_only(cli, engine, people, alarms) -> None:
    refused = cli("alarms", "ack", "pd-0001/12-3", "--operator", "tech")
    assert refused.exit_code == 1
    assert "'tech' (technician) may not do this: it needs the role dispatcher or supervisor" in refused.output
    assert cli("alarms", "ack", "pd-0002/7-1", "--operator", "tech").exit_code == 0
    assert cli("alarms", "resolve", "pd-0002/7-1", "--class", "test", "--operator", "tech").exit_code == 0
    assert [e.actor for e in events(engine, "alarm_acknowledged")] == ["tech"]
    police = cli("alarms", "ack", "pd-0001/12-3", "--operator", "pit")
    assert police.exit_code == 1 and "needs the role dispatcher or supervisor" in police.output


def test_an_unknown_or_disabled_operator_is_one_line_saying_what_to_do(cli, engine, people, alarms) -> None:
    unknown = cli("alarms", "ack", "pd-0001/12-3", "--operator", "Ann")
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == [
        "Error: there is no account 'Ann': --operator names your account "
        "(an administrator adds it with `pendant user add`)"
    ]
    users.set_disabled(engine, username="ann", disabled=True)
    disabled = cli("alarms", "ack", "pd-0001/12-3", "--operator", "ann")
    assert disabled.exit_code == 1
    assert disabled.output.strip().splitlines() == [
        "Error: the account 'ann' is disabled: an administrator can enable it again with "
        "`pendant user enable ann`"
    ]
    assert events(engine, "alarm_acknowledged") == []


def test_device_changes_run_as_police_it_or_a_technician(cli, engine, people) -> None:
    refused = cli("device", "register", "pd-0042", "--operator", "ann")
    assert refused.exit_code == 1 and "needs the role police it or technician" in refused.output
    assert cli("device", "register", "pd-0042", "--operator", "tech").exit_code == 0
    assert cli("device", "recall", "pd-0042", "--operator", "pit").exit_code == 0
    assert [e.actor for e in events(engine, "device_registered")] == ["tech"]
    assert [e.actor for e in events(engine, "device_recall")] == ["pit"]
    erase = cli("device", "erase", "pd-0042", "--reason", "r-1", "--yes", "--operator", "tech")
    assert erase.exit_code == 1 and "needs the role police it or administrator" in erase.output


# -- ready to issue -----------------------------------------------------------------------------------


@pytest.fixture
def provisioned(engine) -> None:
    with session_scope(engine) as session:
        session.add(Device(device_id="pd-0009", loan_state="provisioned", provisioned_at=utc_now()))


def test_issue_refuses_a_pendant_that_is_not_ready_with_what_to_do(cli, engine, people, provisioned) -> None:
    refused = cli("device", "issue", "pd-0009", "--case", "2026-000123", "--operator", "pit")
    assert refused.exit_code == 1
    [line] = refused.output.strip().splitlines()
    assert line.startswith("Error: pd-0009 is not ready to issue: no SMS number in its config (set one: ")
    assert "no number to call" in line and "no passing bench test" in line and "--override REASON" in line
    with Session(engine) as session:
        assert session.get(Device, "pd-0009").loan_state == "provisioned"


def test_an_override_issues_it_audited_and_the_fleet_lists_it(
    cli, pendant_settings, engine, people, provisioned
) -> None:
    configs.set_config(engine, scope=configs.FLEET, changes={"sms": ["+31612345678"]})
    assert json.loads(cli("fleet", "readiness", "--json").output) == {"pd-0009": ["call", "bench"]}
    issued = cli(
        "device",
        "issue",
        "pd-0009",
        "--case",
        "2026-000123",
        "--operator",
        "pit",
        "--override",
        "urgent case",
    )
    assert issued.exit_code == 0, issued.output
    assert "issued pd-0009 for case 2026-000123 WITHOUT: no number to call in its config" in issued.output
    [override] = events(engine, "issue_override")
    assert override.actor == "pit" and '"reason":"urgent case"' in override.body
    shown = json.loads(cli("device", "show", "pd-0009", "--json").output)
    assert shown["issued_without"] == ["call", "bench"] and shown["not_ready"] == ["call", "bench"]
    table = cli("fleet", "readiness").output
    assert "pd-0009" in table and "issued" in table and "call,bench" in table

    configs.set_config(engine, scope=configs.FLEET, changes={"call": ["112"]})
    registry.store_bench_report(
        pendant_settings, engine, device_id="pd-0009", report={"passed": True}, passed=True, actor="tech"
    )
    assert json.loads(cli("fleet", "readiness", "--json").output) == {}
    assert "every provisioned and issued pendant is ready" in cli("fleet", "readiness").output
    # Still marked on the fleet view until it is returned.
    assert json.loads(cli("device", "show", "pd-0009", "--json").output)["issued_without"] == [
        "call",
        "bench",
    ]
    assert cli("device", "loan", "pd-0009", "returned", "--operator", "pit").exit_code == 0
    assert json.loads(cli("device", "show", "pd-0009", "--json").output)["issued_without"] is None
