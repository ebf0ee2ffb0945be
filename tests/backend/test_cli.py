"""`pendant broker|backend|device|alarms`: what the technician types and reads."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_tools.cli import main

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(pendant_settings):
    """Settings on a fresh data folder and free port; the broker is not started."""
    return pendant_settings


def env_for(settings) -> dict[str, str]:
    return {
        "PENDANT_DATA_DIR": str(settings.data_dir),
        "PENDANT_MQTT_PORT": str(settings.mqtt_port),
        "PENDANT_DB_URL": settings.db_url,
    }


def run(settings, *args: str):
    return CliRunner().invoke(main, list(args), env=env_for(settings), catch_exceptions=False)


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
    ],
)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"pendant {' '.join(command)}" in result.output


def test_provision_writes_a_private_config_and_says_where(broker) -> None:
    result = run(broker.settings, "device", "provision", "pd-0001")
    assert result.exit_code == 0, result.output
    path = broker.settings.devices_dir / "pd-0001" / "config.json"
    assert str(path) in result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    config = json.loads(path.read_text())
    assert config["device_id"] == "pd-0001" and config["mqtt"]["port"] == broker.settings.mqtt_port
    assert config["mqtt"]["password"] not in result.output


def test_provision_to_a_chosen_file_with_json_output(broker, tmp_path: Path) -> None:
    out = tmp_path / "usb" / "config.json"
    result = run(broker.settings, "device", "provision", "pd-0002", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["config_path"] == str(out)
    assert json.loads(out.read_text())["mqtt"]["user"] == "pd-0002"


def test_provision_without_the_broker_is_one_clear_line(broker) -> None:
    broker.broker.stop()
    result = CliRunner().invoke(main, ["device", "provision", "pd-0001"], env=env_for(broker.settings))
    assert result.exit_code == 1
    port = broker.settings.mqtt_port
    assert result.output.strip().splitlines() == [
        f"Error: the broker is not running on 127.0.0.1:{port}: start it with `pendant broker run`"
    ]


def test_commands_before_the_first_broker_run_say_what_to_do(settings) -> None:
    result = CliRunner().invoke(main, ["device", "provision", "pd-0001"], env=env_for(settings))
    assert result.exit_code == 1
    assert "run `pendant broker run` once" in result.output


def test_bad_device_id_is_one_clear_line(broker) -> None:
    result = run(broker.settings, "device", "provision", "PD 1")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "is not a device id" in result.output


def test_listing_before_anything_exists_says_what_to_do(settings) -> None:
    result = run(settings, "alarms", "list")
    assert result.exit_code == 1
    assert "pendant backend run" in result.output


def test_device_list_and_revoke(broker) -> None:
    run(broker.settings, "device", "provision", "pd-0001")
    listed = json.loads(run(broker.settings, "device", "list", "--json").output)
    assert [(d["device_id"], d["provisioned"], d["revoked"]) for d in listed] == [("pd-0001", True, False)]
    assert "password_hash" not in listed[0]
    assert run(broker.settings, "device", "revoke", "pd-0001").exit_code == 0
    table = run(broker.settings, "device", "list").output
    assert "pd-0001" in table and "revoked" in table


def test_alarms_list_and_show(broker, backend, provision, mqtt_client) -> None:
    pendant = mqtt_client(provision("pd-0001"))
    pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
    examples = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
    pendant.publish("pendant/v1/pd-0001/alarm", (examples / "alarm.json").read_bytes())
    pendant.expect("pendant/v1/pd-0001/alarm/ack")

    table = run(broker.settings, "alarms", "list").output
    assert "pd-0001/12-3" in table and "52.373101,4.892203" in table
    listed = json.loads(run(broker.settings, "alarms", "list", "--json", "--device", "pd-0001").output)
    assert [a["ref"] for a in listed] == ["pd-0001/12-3"]
    assert json.loads(run(broker.settings, "alarms", "list", "--json", "--device", "pd-0404").output) == []
    shown = json.loads(run(broker.settings, "alarms", "show", "pd-0001/12-3", "--json").output)
    assert shown["kind"] == "panic" and shown["batt"] == 87 and shown["state"] == "received"
    assert "panic" in run(broker.settings, "alarms", "show", str(shown["id"])).output
    missing = run(broker.settings, "alarms", "show", "pd-0001/99-9")
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
        env={**os.environ, **env_for(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    broker_pid = None
    try:
        first_line = process.stdout.readline()
        assert f"broker running on 127.0.0.1:{settings.mqtt_port}" in first_line, first_line
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
