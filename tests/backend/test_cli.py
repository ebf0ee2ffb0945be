"""`pendant broker|backend|device|alarms`: what the technician types and reads."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_backend import registry
from pendant_backend.accounts import dynsec_call
from pendant_backend.db import engine_for
from pendant_tools.cli import main

from support import cli_env, run_cli

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(pendant_settings):
    """Settings on a fresh data folder and free port; the broker is not started."""
    return pendant_settings


@pytest.mark.parametrize(
    "command",
    [
        ["broker", "run"],
        ["backend", "run"],
        ["device", "provision"],
        ["device", "list"],
        ["device", "revoke"],
        ["alarms", "list"],
        ["alarms", "show"],
        ["alarms", "ack"],
        ["alarms", "resolve"],
        ["alarms", "export"],
        ["alarms", "verify"],
        ["alarms", "public-key"],
        ["device", "show"],
        ["device", "rotate"],
        ["device", "register"],
        ["device", "set"],
        ["device", "issue"],
        ["device", "loan"],
        ["device", "renew"],
        ["device", "recall"],
        ["device", "config"],
        ["device", "supervision"],
        ["device", "erase"],
        ["backend", "api"],
        ["backend", "token", "create"],
        ["backend", "token", "list"],
        ["backend", "token", "revoke"],
        ["backend", "purge"],
        ["fleet"],
        ["fleet", "events"],
        ["fleet", "readiness"],
        ["user", "add"],
        ["user", "list"],
        ["user", "disable"],
        ["user", "enable"],
        ["user", "roles"],
        ["user", "reset-password"],
    ],
)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"pendant {' '.join(command)}" in result.output


def test_provision_writes_a_private_config_and_says_where(broker) -> None:
    result = run_cli(broker.settings, "device", "provision", "pd-0001")
    assert result.exit_code == 0, result.output
    path = broker.settings.devices_dir / "pd-0001" / "config.json"
    assert str(path) in result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    config = json.loads(path.read_text())
    assert config["device_id"] == "pd-0001" and config["mqtt"]["port"] == broker.settings.mqtt_tls_port
    assert config["mqtt"]["password"] not in result.output


def test_provision_many_refuses_a_provisioned_one_and_resume_finishes(broker) -> None:
    s = broker.settings
    ids = [f"pd-{n:04d}" for n in range(6)]
    assert run_cli(s, "device", "provision", "pd-0003").exit_code == 0
    refused = run_cli(s, "device", "provision", *ids)
    assert refused.exit_code == 1
    assert (
        "pd-0003 is already provisioned" in refused.output
        and "none of the 6 devices was changed" in refused.output
    )
    assert not (s.devices_dir / "pd-0000").exists()
    (s.devices_dir / "pd-0003" / "config.json").unlink()  # e.g. lost before it reached the pendant
    resumed = run_cli(s, "device", "provision", *ids, "--resume")
    assert resumed.exit_code == 0, resumed.output
    for device_id in ("pd-0000", "pd-0001", "pd-0002", "pd-0004", "pd-0005"):
        assert f"provisioned {device_id};" in resumed.output
        assert (s.devices_dir / device_id / "config.json").exists()
    assert "1 devices were provisioned before and are left as they are" in resumed.output
    assert "give each a new one with `pendant device rotate DEVICE_ID`" in resumed.output


def test_provision_to_a_chosen_file_with_json_output(broker, tmp_path: Path) -> None:
    out = tmp_path / "usb" / "config.json"
    result = run_cli(broker.settings, "device", "provision", "pd-0002", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["config_path"] == str(out)
    assert json.loads(out.read_text())["mqtt"]["user"] == "pd-0002"


def test_provision_without_the_broker_is_one_clear_line(broker) -> None:
    broker.broker.stop()
    result = CliRunner().invoke(main, ["device", "provision", "pd-0001"], env=cli_env(broker.settings))
    assert result.exit_code == 1
    port = broker.settings.mqtt_port
    assert result.output.strip().splitlines() == [
        f"Error: the broker is not running on 127.0.0.1:{port}: start it with `pendant broker run`"
    ]


def test_offline_provisioning_needs_the_broker_stopped_and_its_accounts_work_after(broker) -> None:
    s = broker.settings
    refused = run_cli(s, "device", "provision", "pd-0001", "pd-0002", "--offline")
    assert refused.exit_code == 1
    assert "is running (pid" in refused.output and "stop it to provision with --offline" in refused.output
    assert "Traceback" not in refused.output and not (s.devices_dir / "pd-0001").exists()
    broker.broker.stop()
    done = run_cli(s, "device", "provision", "pd-0001", "pd-0002", "--offline", "--json")
    assert done.exit_code == 0, done.output
    configs = [json.loads((s.devices_dir / d / "config.json").read_text()) for d in ("pd-0001", "pd-0002")]
    assert [c["mqtt"]["user"] for c in configs] == ["pd-0001", "pd-0002"]
    assert all(c["mqtt"]["password"] not in done.output for c in configs)
    broker.broker.start()
    listed = run_cli(s, "device", "list")
    assert listed.exit_code == 0 and "pd-0001" in listed.output and "pd-0002" in listed.output
    found = dynsec_call(s, [{"command": "getClient", "username": d} for d in ("pd-0001", "pd-0002")])
    assert [r.get("error") for r in found] == [None, None], found


def test_commands_before_the_first_broker_run_say_what_to_do(settings) -> None:
    result = CliRunner().invoke(main, ["device", "provision", "pd-0001"], env=cli_env(settings))
    assert result.exit_code == 1
    assert "run `pendant broker run` once" in result.output


def test_bad_device_id_is_one_clear_line(broker) -> None:
    result = run_cli(broker.settings, "device", "provision", "PD 1")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "is not a device id" in result.output


def test_listing_before_anything_exists_says_what_to_do(settings) -> None:
    fresh = dataclasses.replace(settings, db_url=f"sqlite:///{settings.data_dir / 'pendant.db'}")
    result = run_cli(fresh, "alarms", "list")
    assert result.exit_code == 1
    assert "pendant backend run" in result.output


def test_device_list_and_revoke(broker) -> None:
    run_cli(broker.settings, "device", "provision", "pd-0001")
    listed = json.loads(run_cli(broker.settings, "device", "list", "--json").output)
    assert [(d["device_id"], d["provisioned"], d["revoked"]) for d in listed] == [("pd-0001", True, False)]
    assert "password_hash" not in listed[0]
    assert run_cli(broker.settings, "device", "revoke", "pd-0001").exit_code == 0
    table = run_cli(broker.settings, "device", "list").output
    assert "pd-0001" in table and "revoked" in table


def test_alarms_list_and_show(broker, backend, provision, mqtt_client) -> None:
    pendant = mqtt_client(provision("pd-0001"))
    pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
    examples = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
    pendant.publish("pendant/v1/pd-0001/alarm", (examples / "alarm.json").read_bytes())
    pendant.expect("pendant/v1/pd-0001/alarm/ack")

    # Listings never show where the person is: only whether the alarm came with a fix.
    table = run_cli(broker.settings, "alarms", "list").output
    assert "pd-0001/12-3" in table and "gnss" in table and "52.37" not in table
    listed = json.loads(run_cli(broker.settings, "alarms", "list", "--json", "--device", "pd-0001").output)
    assert [(a["ref"], a["location"]) for a in listed] == [("pd-0001/12-3", "gnss")]
    assert not {"lat", "lon", "acc", "cell", "payload"} & set(listed[0])
    assert (
        json.loads(run_cli(broker.settings, "alarms", "list", "--json", "--device", "pd-0404").output) == []
    )
    shown = json.loads(run_cli(broker.settings, "alarms", "show", "pd-0001/12-3", "--json").output)
    assert shown["kind"] == "panic" and shown["batt"] == 87 and shown["state"] == "received"
    assert "lat" not in shown and "trail" not in shown
    text = run_cli(broker.settings, "alarms", "show", str(shown["id"])).output
    assert "panic" in text and "52.37" not in text and "needs --operator" in text
    assert "device_time:     2025-11-29 08:00:00 UTC (pendant clock)" in text  # not 1764403200
    assert "1764403200" not in text
    missing = run_cli(broker.settings, "alarms", "show", "pd-0001/99-9")
    assert missing.exit_code == 1 and "no alarm pd-0001/99-9" in missing.output


def broker_is_alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False


def test_broker_run_in_the_foreground_stops_on_sigterm(settings) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from pendant_tools.cli import main; main()", "broker", "run"],
        env={**os.environ, **cli_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    broker_pid = None
    try:
        first_line = process.stdout.readline()
        listeners = f"TLS on 127.0.0.1:{settings.mqtt_tls_port}, plain on 127.0.0.1:{settings.mqtt_port}"
        assert f"broker running: {listeners}" in first_line, first_line
        broker_pid = int(first_line.split("(pid ")[1].split(")")[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "broker stopped" in process.stdout.read()
        assert not broker_is_alive(broker_pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if broker_pid is not None and broker_is_alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)


def test_police_it_registers_issues_and_configures_a_pendant(broker) -> None:
    s = broker.settings
    assert run_cli(s, "user", "add", "it", "--role", "police_it").exit_code == 0
    assert (
        run_cli(s, "device", "register", "pd-0001", "--imei", "861234567890123", "--operator", "it").exit_code
        == 0
    )
    assert run_cli(s, "device", "provision", "pd-0001").exit_code == 0
    changed = run_cli(
        s, "device", "config", "--fleet", "--set", "sms=+31612345678", "--set", "call=112", "--operator", "it"
    )
    assert changed.exit_code == 0 and "published to 1 device" in changed.output
    issue = [
        "device",
        "issue",
        "pd-0001",
        "--case",
        "2026-000123",
        "--renewal",
        "2027-03-31",
        "--operator",
        "it",
    ]
    refused = run_cli(s, *issue)
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "not ready to issue: no passing bench test" in refused.output and "pendant bench" in refused.output
    registry.store_bench_report(
        s, engine_for(s), device_id="pd-0001", report={"passed": True}, passed=True, actor="it"
    )
    issued = run_cli(s, *issue)
    assert issued.exit_code == 0, issued.output
    shown = json.loads(run_cli(s, "device", "show", "pd-0001", "--json").output)
    assert (shown["loan_state"], shown["case_ref"], shown["imei"]) == (
        "issued",
        "2026-000123",
        "861234567890123",
    )
    assert shown["renewal_due"].startswith("2027-03-31") and "password_hash" not in shown
    assert shown["not_ready"] == [] and shown["issued_without"] is None
    changed = run_cli(s, "device", "config", "--fleet", "--set", "heartbeat_s=300", "--operator", "it")
    assert changed.exit_code == 0 and "published to 1 device" in changed.output
    view = json.loads(run_cli(s, "device", "config", "pd-0001", "--json").output)
    assert view["effective"]["heartbeat_s"] == 300 and view["effective"]["call"] == ["112"]
    bad = run_cli(s, "device", "config", "pd-0001", "--set", "heartbeat_s=5", "--operator", "it")
    assert bad.exit_code == 1 and "heartbeat_s" in bad.output and len(bad.output.strip().splitlines()) == 1
    refused = run_cli(s, "device", "loan", "pd-0001", "decommissioned", "--operator", "it")
    assert refused.exit_code == 1 and "it can become returned" in refused.output


def test_fleet_summary_and_table(broker) -> None:
    s = broker.settings
    run_cli(s, "device", "provision", "pd-0001", "pd-0002")
    summary = json.loads(run_cli(s, "fleet", "--json").output)
    assert summary["summary"]["monitored"] == 2 and summary["summary"]["connectivity"]["never_seen"] == 2
    assert [d["device_id"] for d in summary["devices"]] == ["pd-0001", "pd-0002"]
    table = run_cli(s, "fleet").output
    assert "2 monitored of 2 pendants" in table and "never_seen" in table and "pd-0002" in table
    assert "no pendants match" in run_cli(s, "fleet", "--state", "online").output
    assert run_cli(s, "fleet", "events").output.strip() == "no health events"


def test_operator_acks_resolves_exports_and_verifies(
    broker, backend, provision, mqtt_client, tmp_path: Path
) -> None:
    s = broker.settings
    for username, role in (("ann", "dispatcher"), ("bob", "dispatcher"), ("sue", "supervisor")):
        assert run_cli(s, "user", "add", username, "--role", role, "--name", username.title()).exit_code == 0
    pendant = mqtt_client(provision("pd-0001"))
    pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
    examples = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
    pendant.publish("pendant/v1/pd-0001/alarm", (examples / "alarm.json").read_bytes())
    pendant.expect("pendant/v1/pd-0001/alarm/ack")
    assert (
        run_cli(s, "alarms", "resolve", "pd-0001/12-3", "--class", "false", "--operator", "ann").exit_code
        == 1
    )
    acked = run_cli(s, "alarms", "ack", "pd-0001/12-3", "--operator", "ann")
    assert acked.exit_code == 0 and "acknowledged by Ann (ann)" in acked.output
    twice = run_cli(s, "alarms", "ack", "pd-0001/12-3", "--operator", "bob")
    assert twice.exit_code == 1 and "already acknowledged by ann" in twice.output
    resolved = run_cli(
        s,
        "alarms",
        "resolve",
        "pd-0001/12-3",
        "--class",
        "incident",
        "--note",
        "on site",
        "--operator",
        "ann",
    )
    assert resolved.exit_code == 0, resolved.output
    out = tmp_path / "case.json"
    not_allowed = run_cli(s, "alarms", "export", "pd-0001/12-3", "--out", str(out), "--operator", "ann")
    assert not_allowed.exit_code == 1 and "needs the role supervisor" in not_allowed.output
    assert (
        run_cli(s, "alarms", "export", "pd-0001/12-3", "--out", str(out), "--operator", "sue").exit_code == 0
    )
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert run_cli(s, "alarms", "verify", str(out)).exit_code == 0
    assert run_cli(s, "alarms", "verify").exit_code == 0
    document = json.loads(out.read_text())
    assert document["exported_by"] == "sue" and document["alarm"]["acknowledged_by"] == "ann"
    # The export holds the position and the trail: it is recorded as a view of them, by the supervisor.
    assert any(
        '"kind":"location_viewed"' in e["body"] and '"actor":"sue"' in e["body"] for e in document["events"]
    )
    document["alarm"]["acknowledged_by"] = "bob"
    out.write_text(json.dumps(document))
    failed = run_cli(s, "alarms", "verify", str(out), "--offline")
    assert failed.exit_code == 2 and "FAILED" in failed.output


def test_token_is_printed_once_and_listed_without_it(broker) -> None:
    s = broker.settings
    assert run_cli(s, "user", "add", "ann", "--role", "dispatcher").exit_code == 0
    created = CliRunner().invoke(
        main, ["backend", "token", "create", "ann", "--label", "desk 2"], env=cli_env(s)
    )
    token = created.stdout.strip()
    assert created.exit_code == 0 and token.startswith("pdt_")
    listed_output = run_cli(s, "backend", "token", "list", "--json").output
    assert token not in listed_output
    listed = json.loads(listed_output)
    assert [(t["name"], t["account"], t["revoked_at"]) for t in listed] == [("desk 2", "ann", "-")]
    assert run_cli(s, "backend", "token", "revoke", "desk 2").exit_code == 0
    revoked = json.loads(run_cli(s, "backend", "token", "list", "--json").output)
    assert revoked[0]["account"] == "ann" and revoked[0]["revoked_at"] != "-"
    again = run_cli(s, "backend", "token", "revoke", "desk 2")
    assert again.exit_code == 1 and "no active token named 'desk 2'" in again.output


def test_a_token_for_an_unknown_account_is_one_clear_line(broker) -> None:
    result = run_cli(broker.settings, "backend", "token", "create", "nobody")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: there is no account 'nobody': add it with `pendant user add`"
    ]


def test_a_read_only_command_prints_no_migration_chatter(settings) -> None:
    env = {**os.environ, **cli_env(settings)}
    command = [str(Path(sys.executable).parent / "pendant"), "fleet", "--summary"]
    engine_for(settings).dispose()  # the database, at the newest schema
    for _ in range(2):
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "pendants" in run.stdout, run.stdout
        assert "alembic" not in run.stderr + run.stdout, run.stderr
    verbose = subprocess.run(
        [command[0], "-v", *command[1:]], env=env, capture_output=True, text=True, timeout=120
    )
    assert "alembic" in verbose.stderr, verbose.stderr  # -v still shows it


@pytest.mark.parametrize(
    "command", [["backend", "web"], ["backend", "api"], ["backend", "token", "create", "ann"]]
)
def test_the_console_and_token_create_make_no_empty_database(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(main, command, env={"PENDANT_DATA_DIR": str(data), "PENDANT_DB_URL": ""})
    assert result.exit_code == 1, result.output
    assert f"there is no database at {data / 'pendant.db'}: start the backend with `pendant backend run`" in (
        result.output
    )
    assert not (data / "pendant.db").exists()
