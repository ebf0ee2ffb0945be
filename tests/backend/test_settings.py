"""Settings from the environment, and private files."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from pendant_backend import BackendError
from pendant_backend.settings import (
    Settings,
    check_tile_url,
    default_frontend_dir,
    read_private_json,
    write_private_json,
)


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
            "PENDANT_MQTT_HOST": "::1",
            "PENDANT_MQTT_PORT": "1883",
        }
    )
    assert settings.data_dir == tmp_path / "d"
    assert settings.db_url == "postgresql://db/pendant"
    assert settings.mqtt_address == "::1:1883"


def test_tls_defaults_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = Settings.from_env({})
    assert (default.mqtt_tls_bind, default.mqtt_tls_port, default.mqtt_public_host) == (
        "0.0.0.0",
        8883,
        "localhost",
    )
    assert default.mqtt_plain is True and default.web_plain is False and not default.operator_tls
    assert default.tls_dir == tmp_path / "data" / "tls"
    settings = Settings.from_env(
        {
            "PENDANT_MQTT_PLAIN": "off",
            "PENDANT_MQTT_TLS_PORT": "18883",
            "PENDANT_MQTT_TLS_BIND": "192.0.2.7",
            "PENDANT_MQTT_PUBLIC_HOST": "mqtt.police.example",
            "PENDANT_TLS_CERT": "/etc/pendant/fullchain.pem",
            "PENDANT_TLS_KEY": "/etc/pendant/key.pem",
            "PENDANT_TLS_CA": "/etc/pendant/ca.pem",
            "PENDANT_WEB_PLAIN": "1",
        }
    )
    assert settings.mqtt_plain is False and settings.web_plain is True
    assert settings.mqtt_tls_address == "192.0.2.7:18883"
    assert settings.mqtt_public_host == "mqtt.police.example"
    assert settings.operator_tls and settings.tls_ca == "/etc/pendant/ca.pem"


def test_tests_and_demos_get_a_free_tls_port_on_loopback(tmp_path: Path) -> None:
    settings = Settings.for_data_dir(tmp_path)
    assert settings.mqtt_tls_bind == "127.0.0.1"
    assert settings.mqtt_tls_port not in (8883, settings.mqtt_port)
    assert settings.web_plain is True  # the console of tests and demos: plain HTTP, on loopback only
    assert Settings.for_data_dir(tmp_path, mqtt_tls_port=12345).mqtt_tls_port == 12345


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("PENDANT_MQTT_PLAIN", "maybe", "PENDANT_MQTT_PLAIN must be on or off"),
        ("PENDANT_WEB_PLAIN", "2", "PENDANT_WEB_PLAIN must be on or off"),
        ("PENDANT_MQTT_TLS_PORT", "88830", "PENDANT_MQTT_TLS_PORT must be between 1 and 65535"),
        ("PENDANT_MQTT_PUBLIC_HOST", "mqtt.example:8883", "PENDANT_MQTT_PUBLIC_HOST must be a host name"),
        ("PENDANT_MQTT_HOST", "0.0.0.0", "the plain MQTT listener may only listen on loopback"),
    ],
)
def test_bad_transport_settings_are_one_clear_error(name: str, value: str, error: str) -> None:
    with pytest.raises(BackendError, match=error):
        Settings.from_env({name: value})


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


def test_defaults_of_the_console_and_escalation_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    # No maximum: an alarm escalates until someone acknowledges it.
    assert settings.escalate_max == 0
    assert (settings.session_hours, settings.session_idle_min) == (12, 30)
    assert (settings.tile_url, settings.tile_attribution, settings.cell_db) == ("", "", "")
    assert settings.frontend_dir == default_frontend_dir()
    assert settings.frontend_dir.parts[-2:] == ("frontend", "node_modules")


def test_console_and_escalation_settings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PENDANT_ESCALATE_MAX": "100000",
            "PENDANT_SESSION_HOURS": "24",
            "PENDANT_SESSION_IDLE_MIN": "1",
            "PENDANT_TILE_URL": "https://tiles.police.example/{z}/{x}/{y}.png",
            "PENDANT_TILE_ATTRIBUTION": "© the force's GIS team",
            "PENDANT_FRONTEND_DIR": str(tmp_path / "nm"),
            "PENDANT_CELL_DB": str(tmp_path / "cells.csv"),
        }
    )
    assert (settings.escalate_max, settings.session_hours, settings.session_idle_min) == (100000, 24, 1)
    assert settings.tile_url == "https://tiles.police.example/{z}/{x}/{y}.png"
    assert settings.tile_attribution == "© the force's GIS team"
    assert settings.frontend_dir == tmp_path / "nm"
    assert settings.cell_db == str(tmp_path / "cells.csv")
    assert Settings.from_env({"PENDANT_ESCALATE_MAX": "0"}).escalate_max == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PENDANT_ESCALATE_MAX", "-1", "PENDANT_ESCALATE_MAX must be between 0 and 100000, not -1"),
        ("PENDANT_ESCALATE_MAX", "100001", "PENDANT_ESCALATE_MAX must be between 0 and 100000"),
        ("PENDANT_ESCALATE_MAX", "five", "PENDANT_ESCALATE_MAX must be a whole number, not 'five'"),
        ("PENDANT_SESSION_HOURS", "0", "PENDANT_SESSION_HOURS must be between 1 and 24, not 0"),
        ("PENDANT_SESSION_HOURS", "25", "PENDANT_SESSION_HOURS must be between 1 and 24"),
        ("PENDANT_SESSION_IDLE_MIN", "1441", "PENDANT_SESSION_IDLE_MIN must be between 1 and 1440"),
        ("PENDANT_SESSION_IDLE_MIN", "1.5", "PENDANT_SESSION_IDLE_MIN must be a whole number"),
    ],
)
def test_a_bad_number_is_a_clear_error(name: str, value: str, message: str) -> None:
    with pytest.raises(BackendError) as caught:
        Settings.from_env({name: value})
    assert message in str(caught.value)


@pytest.mark.parametrize("url", ["http://tiles/{z}/{x}/{y}.png", "/tiles/{z}/{x}/{y}.png", ""])
def test_a_tile_server_url_needs_z_x_and_y(url: str) -> None:
    assert check_tile_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["ftp://tiles/{z}/{x}/{y}.png", "https://tiles/{z}/{x}.png", "tiles/{z}/{x}/{y}", "javascript:{z}{x}{y}"],
)
def test_a_bad_tile_server_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(
        BackendError, match=r"PENDANT_TILE_URL must be an http\(s\) URL with \{z\}, \{x\} and \{y\}"
    ):
        Settings.from_env({"PENDANT_TILE_URL": url})


def test_every_setting_is_in_the_operations_table() -> None:
    # docs/operations.md lists every PENDANT_* variable that Settings.from_env reads.
    source = (Path(__file__).resolve().parents[2] / "backend" / "pendant_backend" / "settings.py").read_text()
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    table = doc[doc.index("## Settings") : doc.index("## The data folder")]
    read = set(re.findall(r'"(PENDANT_[A-Z_]+)"', source))
    assert read and read <= set(re.findall(r"`(PENDANT_[A-Z_]+)`", table))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@db/pendant", "names a database this project does not run on (mysql)"),
        ("postgresql+psycopg2://u:secret@db/pendant", "(postgresql+psycopg2)"),
        ("not a url", "cannot be read as a database URL"),
    ],
)
def test_an_unsupported_database_url_is_a_clear_error_without_its_password(url: str, message: str) -> None:
    with pytest.raises(BackendError, match=re.escape(message)) as caught:
        Settings.from_env({"PENDANT_DB_URL": url})
    assert "secret" not in str(caught.value)
    assert "postgresql://user:password@host/dbname" in str(caught.value)  # what to give instead


@pytest.mark.parametrize(
    "url",
    ["sqlite:////var/lib/pendant/pendant.db", "postgresql://u:p@db/pendant", "postgresql+psycopg://db/p"],
)
def test_sqlite_and_postgresql_urls_are_taken(url: str) -> None:
    assert Settings.from_env({"PENDANT_DB_URL": url}).db_url == url
