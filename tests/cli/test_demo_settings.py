"""`pendant demo` on what a newcomer meets (issue 13, item 7): a PENDANT_* setting it cannot read or a
damaged database stops it with one clear line before anything starts; a broken saved config is kept
aside and a revoked pendant is said so, and both are provisioned again. Never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_backend.accounts import revoke_device
from pendant_tools.cli import main
from pendant_tools.cmd_demo import demo_device_config


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PENDANT_MQTT_PORT", "abc", "PENDANT_MQTT_PORT must be a port number, not 'abc'"),
        ("PENDANT_DB_URL", "mysql://u:secret@db/p", "names a database this project does not run on"),
        ("PENDANT_MQTT_PLAIN", "maybe", "PENDANT_MQTT_PLAIN must be on or off"),
    ],
)
def test_a_bad_setting_stops_the_demo_with_one_clear_line(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["demo"], env={"PENDANT_DATA_DIR": str(data), name: value})
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not the setting's error
    assert "secret" not in result.output
    assert not data.exists()  # nothing was made before the settings were read


@pytest.mark.broker
def test_a_broken_saved_config_is_kept_aside_and_the_demo_pendant_provisioned_again(broker) -> None:
    settings = broker.settings
    path = settings.devices_dir / "pd-0001" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"device_id": "pd-0001", broken')
    config = demo_device_config(settings, "pd-0001")
    assert config["device_id"] == "pd-0001" and config["mqtt"]["password"]
    [kept] = path.parent.glob("config.json.broken-*")
    assert kept.read_text() == '{"device_id": "pd-0001", broken'  # nothing lost
    # The new config is saved, and the next run reads it back as it is.
    assert demo_device_config(settings, "pd-0001")["mqtt"]["password"] == config["mqtt"]["password"]


def test_a_damaged_database_stops_the_demo_with_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pendant.db").write_bytes(b"\x00garbage, not SQLite\x00" * 300)
    result = CliRunner().invoke(main, ["demo"], env={"PENDANT_DATA_DIR": str(data)})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "file is not a database" in result.output and "pendant db restore" in result.output
    assert str(data / "pendant.db") in result.output
    assert (data / "pendant.db").read_bytes().startswith(b"\x00garbage")  # left as it was
    assert not (data / "broker").exists()  # stopped before the broker was set up


@pytest.mark.broker
def test_a_revoked_demo_pendant_is_said_so_and_provisioned_again(
    broker, mqtt_client, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = broker.settings
    old = demo_device_config(settings, "pd-0001")
    revoke_device(settings, "pd-0001")
    new = demo_device_config(settings, "pd-0001")
    assert "pd-0001 was revoked at " in capsys.readouterr().err
    assert new["mqtt"]["password"] != old["mqtt"]["password"]
    assert mqtt_client(old, connect=False).connect().is_failure
    assert not mqtt_client(new, connect=False).connect().is_failure  # the pendant can connect at once
    assert demo_device_config(settings, "pd-0001") == new  # the next run reads it back
