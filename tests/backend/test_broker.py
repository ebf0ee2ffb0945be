"""The broker as configured by the project: config, accounts, refusals, start and stop."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from pendant_backend.broker import MARK_TOPIC, Broker, BrokerError, load_secrets
from pendant_backend.settings import Settings

from support import free_port

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(pendant_settings):
    """Settings on a fresh data folder and free port; the broker is not started."""
    return pendant_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_config_has_the_options_that_keep_alarms(broker) -> None:
    text = broker.broker.config_path.read_text()
    lines = set(text.splitlines())
    for expected in (
        f"listener {broker.settings.mqtt_port} 127.0.0.1",
        "allow_anonymous false",
        "persistence true",
        # A periodic save: what a crash loses comes back (pendant_backend.recovery, test_broker_recovery).
        "autosave_interval 30",
        "autosave_on_changes false",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
    ):
        assert expected in lines
    assert f"auth_opt_config_file {broker.broker.dynsec_path}" in lines


def test_secrets_are_private_and_random(broker, settings: Settings) -> None:
    assert mode(settings.secrets_dir) == 0o700
    assert mode(settings.broker_secrets_path) == 0o600
    assert mode(broker.broker.dynsec_path) == 0o600
    secrets = load_secrets(settings)
    assert secrets == broker.secrets
    assert secrets.admin_password != secrets.backend_password
    assert len(secrets.admin_password) >= 32
    # Only hashes in the broker's file.
    assert secrets.admin_password not in broker.broker.dynsec_path.read_text()


def test_dynsec_defaults_refuse_everything(broker) -> None:
    document = json.loads(broker.broker.dynsec_path.read_text())
    assert set(document["defaultACLAccess"].values()) == {False}
    admin_role = next(r for r in document["roles"] if r["rolename"] == "pendant_admin")
    # The dynamic-security API, and the backend's mark (pendant_backend.recovery reads it as the admin).
    assert all(
        acl["topic"].startswith("$CONTROL/dynamic-security/") or acl["topic"] == MARK_TOPIC
        for acl in admin_role["acls"]
    )


def test_broker_folders_belong_to_the_broker_user(broker) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a broker started as root changes user")
    import pwd

    uid = pwd.getpwnam("mosquitto").pw_uid
    assert os.stat(broker.broker.persistence_dir).st_uid == uid
    assert os.stat(broker.broker.dynsec_path).st_uid == uid


def test_anonymous_is_refused(mqtt_client) -> None:
    client = mqtt_client(connect=False)
    assert client.connect().is_failure


def test_anonymous_is_refused_over_mqtt5(mqtt_client) -> None:
    client = mqtt_client(connect=False, mqtt5=True)
    assert client.connect().is_failure


def test_wrong_password_is_refused(broker, provision, mqtt_client) -> None:
    config = provision("pd-0001")
    password = config["mqtt"]["password"]
    # Change the last character (a random password may already end in the replacement).
    config["mqtt"]["password"] = password[:-1] + ("y" if password.endswith("x") else "x")
    assert mqtt_client(config, connect=False).connect().is_failure


def test_backend_account_with_wrong_password_is_refused(broker, mqtt_client) -> None:
    client = mqtt_client(
        connect=False, username="pendant_backend", password="guess", client_id="pendant_backend"
    )
    assert client.connect().is_failure


def test_device_account_is_bound_to_its_client_id(broker, provision, mqtt_client) -> None:
    config = provision("pd-0001")
    assert mqtt_client(config, connect=False, client_id="someone-else").connect().is_failure
    assert not mqtt_client(config, connect=False).connect().is_failure


def test_restart_keeps_accounts(broker, provision, mqtt_client) -> None:
    config = provision("pd-0001")
    broker.broker.stop()
    assert broker.broker.start() == broker.secrets
    assert not mqtt_client(config, connect=False).connect().is_failure


def test_port_in_use_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as blocker:
        blocker.bind((settings.mqtt_host, settings.mqtt_port))
        blocker.listen()
        broker = Broker(settings)
        with pytest.raises(BrokerError, match="already listens on"):
            broker.start(timeout=5)
    assert not broker.is_running()


def test_a_second_broker_on_the_same_data_folder_is_refused(broker, settings: Settings) -> None:
    # Another demo on other ports: it would share (and rewrite) the running broker's persistence file.
    other = dataclasses.replace(settings, mqtt_port=free_port(), mqtt_tls_port=free_port())
    config = broker.broker.config_path
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    second = Broker(other)
    with pytest.raises(
        BrokerError, match=rf"a broker already runs on the data folder .* \(pid {broker.broker.pid}"
    ):
        second.start(timeout=5)
    assert not second.is_running()
    assert broker.broker.is_running()
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before  # nothing of the first rewritten


def test_broker_that_dies_at_start_shows_its_log(settings: Settings) -> None:
    # An address that is not this machine's: mosquitto cannot bind and exits.
    broker = Broker(dataclasses.replace(settings, mqtt_tls_bind="192.0.2.1"))
    with pytest.raises(BrokerError) as caught:
        broker.start(timeout=5)
    assert "exited with code" in str(caught.value)
    assert "mosquitto version" in str(caught.value)  # the tail of its log
    assert not broker.is_running()


def test_folder_the_broker_user_cannot_enter_keeps_root_and_still_saves(tmp_path: Path) -> None:
    # A checkout under /root (0700): dropping to `mosquitto` would save nothing, so the broker stays root.
    if os.geteuid() != 0:
        pytest.skip("only a broker started as root changes user")
    os.chmod(tmp_path, 0o700)
    broker = Broker(Settings.for_data_dir(tmp_path / "data", mqtt_port=free_port()))
    try:
        broker.start()
        assert "user root" in broker.config_path.read_text().splitlines()
        broker.stop()  # SIGTERM: mosquitto writes its database on the way out
        assert (broker.persistence_dir / "mosquitto.db").is_file()
    finally:
        broker.kill()


def test_half_present_accounts_are_refused(broker, settings: Settings) -> None:
    broker.broker.stop()
    settings.broker_secrets_path.unlink()
    with pytest.raises(BrokerError, match="does not"):
        Broker(settings).start()


def test_stop_and_kill_end_the_process(settings: Settings) -> None:
    broker = Broker(settings)
    try:
        broker.start()
        pid = broker.pid
        broker.stop()
        assert not broker.is_running()
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text()
        broker.start()
        broker.kill()
        assert not broker.is_running()
    finally:
        broker.kill()
