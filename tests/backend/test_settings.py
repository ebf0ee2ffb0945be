"""Settings from the environment, and private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pendant_backend import BackendError
from pendant_backend.settings import Settings, read_private_json, write_private_json


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.data_dir == tmp_path / "data"
    assert settings.db_url == f"sqlite:///{tmp_path / 'data' / 'pendant.db'}"
    assert (settings.mqtt_host, settings.mqtt_port) == ("127.0.0.1", 18830)
    assert settings.secrets_dir == tmp_path / "data" / "secrets"
    assert settings.broker_secrets_path == tmp_path / "data" / "secrets" / "broker.json"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PENDANT_DATA_DIR": str(tmp_path / "d"),
            "PENDANT_DB_URL": "postgresql://db/pendant",
            "PENDANT_MQTT_HOST": "10.0.0.5",
            "PENDANT_MQTT_PORT": "1883",
        }
    )
    assert settings.data_dir == tmp_path / "d"
    assert settings.db_url == "postgresql://db/pendant"
    assert settings.mqtt_address == "10.0.0.5:1883"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.mqtt_port = 1  # type: ignore[misc]


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_bad_port_is_a_clear_error(port: str) -> None:
    with pytest.raises(BackendError, match="PENDANT_MQTT_PORT"):
        Settings.from_env({"PENDANT_MQTT_PORT": port})


def test_private_files_are_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "x.json"
    path.parent.mkdir(mode=0o755)
    path.write_text("{}")
    os.chmod(path, 0o644)
    write_private_json(path, {"password": "p"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert read_private_json(path) == {"password": "p"}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left


def test_missing_private_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        read_private_json(tmp_path / "nope.json")
