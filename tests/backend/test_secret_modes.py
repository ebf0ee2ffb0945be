"""Every secret file is 0600 and every secret folder 0700, after a realistic run on real parts: the
broker started (its accounts, its TLS files), pendants provisioned, accounts and an API token created,
the backend run with a webhook, a case export made and the export key published, the broker stopped
(it saves its database). The whole data folder is walked; whatever holds a secret is checked."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import leak_check
import pytest
from backend_samples import alarm, topic

from pendant_backend import pki
from pendant_backend.broker import Broker
from pendant_backend.db import engine_for
from pendant_backend.ingest import Ingest
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings, secret_key
from pendant_hardware.flash import write_device_config

from support import BrokerFixture, free_port, run_cli

pytestmark = pytest.mark.broker

# Folders under the data folder whose every file is private, whatever it holds.
PRIVATE_FOLDERS = ("secrets", "tls", "broker/dynsec", "broker/db", "broker/tls", "devices")
# Files that hold no credential but are private all the same (positions, client addresses); their
# folders are the data folder and broker/, which the broker's user passes through (0711).
PRIVATE_FILES = ("pendant.db", "pendant.db-wal", "pendant.db-shm", "broker/mosquitto.log")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def holds_a_secret(path: Path, data_dir: Path) -> bool:
    """True for a file that holds a credential or key, or lies where only private files belong."""
    relative = path.relative_to(data_dir).as_posix()
    if any(relative.startswith(f"{folder}/") for folder in PRIVATE_FOLDERS):
        return True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if "PRIVATE KEY-----" in text:
        return True
    if path.suffix == ".json":
        try:
            return bool(leak_check.json_secrets(json.loads(text), relative))
        except ValueError:
            return False
    return False


def wrong_modes(data_dir: Path) -> list[str]:
    """Every secret or private file not 0600 and every folder holding a secret not 0700, as
    `path: mode (should be)`."""
    found = []
    folders = set()
    for path in sorted(data_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        secret = holds_a_secret(path, data_dir)
        if not secret and path.relative_to(data_dir).as_posix() not in PRIVATE_FILES:
            continue
        if _mode(path) != 0o600:
            found.append(f"{path.relative_to(data_dir)}: {_mode(path):04o} (should be 0600)")
        if secret:
            folders.add(path.parent)
    for folder in sorted(folders):
        if _mode(folder) != 0o700:
            found.append(f"{folder.relative_to(data_dir)}/: {_mode(folder):04o} (should be 0700)")
    return found


@pytest.fixture
def site(pendant_data_dir: Path) -> Iterator[BrokerFixture]:
    """A broker on a fresh data folder whose database is the default one in it (so its mode is the
    product's, not a test fixture's)."""
    settings = Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())
    instance = Broker(settings)
    accounts = instance.start()
    try:
        yield BrokerFixture(settings, accounts, instance)
    finally:
        instance.kill()


def test_after_a_realistic_run_every_secret_file_is_0600_and_its_folder_0700(
    site: BrokerFixture, tmp_path: Path
) -> None:
    broker = site
    s = broker.settings
    for device_id in ("pd-0001", "pd-0002"):
        assert run_cli(s, "device", "provision", device_id).exit_code == 0
    assert run_cli(s, "user", "add", "sue", "--role", "supervisor").exit_code == 0
    assert run_cli(s, "backend", "token", "create", "sue").exit_code == 0
    with BackendService(dataclasses.replace(s, webhook_url="http://127.0.0.1:9/hook")) as service:
        assert service.wait_ready(15), "the backend did not subscribe within 15 s"
    Ingest(engine_for(s)).handle(topic("pd-0001", "alarm"), alarm())
    out = tmp_path / "case.json"
    exported = run_cli(s, "alarms", "export", "pd-0001/12-3", "--out", str(out), "--operator", "sue")
    assert exported.exit_code == 0, exported.output
    assert run_cli(s, "alarms", "public-key", "--out", str(tmp_path / "key.pem")).exit_code == 0
    secret_key(s.signing_key_path)  # the key of the bench reports, as `pendant bench` creates it
    pki.ensure_web(s)  # the console's certificate, as `pendant backend web` makes it
    broker.broker.stop()
    data_dir = s.data_dir
    # The run made what it should: otherwise the walk below would check nothing.
    made = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()}
    for expected in (
        "secrets/broker.json",
        "secrets/webhook.key",
        "secrets/signing.key",
        "secrets/export-ed25519.key",
        "secrets/export-ed25519.pub",
        "devices/pd-0001/config.json",
        "broker/dynsec/dynamic-security.json",
        "broker/mosquitto.log",
        "pendant.db",
    ):
        assert expected in made, f"the run made no {expected}: {sorted(made)}"
    keys = [p for p in (data_dir / "tls").rglob("*") if p.is_file() and "PRIVATE KEY-----" in p.read_text()]
    assert len(keys) >= 3, f"the CA's, the broker's and the web server's keys: {keys}"
    assert wrong_modes(data_dir) == []
    assert _mode(out) == 0o600


def test_a_virtual_pendants_flash_keeps_its_password_private(site: BrokerFixture) -> None:
    # What `pendant sim run` and the demo do: the provisioned config on the simulated flash.
    assert run_cli(site.settings, "device", "provision", "pd-0001").exit_code == 0
    config = json.loads((site.settings.devices_dir / "pd-0001" / "config.json").read_text())
    write_device_config(site.settings.data_dir / "sim" / "pd-0001" / "flash", config)
    assert wrong_modes(site.settings.data_dir) == []


def test_the_walk_finds_a_loose_secret(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    (tmp_path / "secrets" / "broker.json").write_text('{"admin": {"password": "0123456789abcdef"}}')
    os.chmod(tmp_path / "secrets" / "broker.json", 0o644)
    (tmp_path / "sim" / "pd-0001" / "flash").mkdir(parents=True)
    (tmp_path / "sim" / "pd-0001" / "flash" / "config.json").write_text(
        '{"mqtt": {"password": "0123456789"}}'
    )
    (tmp_path / "sim" / "pd-0001" / "console.log").write_text("boot\n")
    assert wrong_modes(tmp_path) == [
        "secrets/broker.json: 0644 (should be 0600)",
        "sim/pd-0001/flash/config.json: 0644 (should be 0600)",
        "secrets/: 0755 (should be 0700)",
        "sim/pd-0001/flash/: 0755 (should be 0700)",
    ]
