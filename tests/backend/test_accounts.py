"""Provisioning and revoking pendants through the broker's dynamic-security API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from sqlmodel import Session

from pendant_backend import pki
from pendant_backend.accounts import (
    AccountError,
    pendant_files,
    provision_device,
    revoke_device,
    verify_password,
    write_device_config,
)
from pendant_backend.db import engine_for
from pendant_backend.models import Device
from pendant_backend.mqtt_link import BrokerUnavailable
from pendant_backend.settings import Settings

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(pendant_settings):
    """Settings on a fresh data folder and free port; the broker is not started."""
    return pendant_settings


EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "docs/protocol-examples/device-config.json").read_text()
)


def shape(value: object) -> object:
    """The keys and value types of a JSON document, without the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def test_config_has_the_documented_form(broker, provision) -> None:
    config = provision("pd-0001")
    files = pendant_files(config)
    assert set(files) == {"config.json", "ca.pem"}  # the CA beside config.json, not in it
    on_flash = json.loads(files["config.json"])
    assert shape(on_flash) == shape(EXAMPLE)
    assert on_flash["device_id"] == on_flash["mqtt"]["user"] == "pd-0001"
    settings = broker.settings
    mqtt = on_flash["mqtt"]
    assert (mqtt["host"], mqtt["port"]) == (settings.mqtt_public_host, settings.mqtt_tls_port)
    assert (mqtt["tls"], mqtt["ca"]) == (True, "ca.pem")
    assert files["ca.pem"] == pki.ca_pem(settings)
    assert (
        x509.load_pem_x509_certificate(files["ca.pem"])
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.ca
    )


def test_the_written_config_is_what_the_pendant_gets(broker, provision, tmp_path: Path) -> None:
    config = provision("pd-0001")
    write_device_config(tmp_path / "usb" / "config.json", config)
    assert json.loads((tmp_path / "usb" / "config.json").read_text()) == {
        key: value for key, value in config.items() if key != "files"
    }
    assert (tmp_path / "usb" / "ca.pem").read_bytes() == pki.ca_pem(broker.settings)
    assert (tmp_path / "usb" / "config.json").stat().st_mode & 0o777 == 0o600


def test_password_is_random_and_only_its_hash_is_stored(broker, provision) -> None:
    one, two = provision("pd-0001"), provision("pd-0002")
    password = one["mqtt"]["password"]
    assert password != two["mqtt"]["password"]
    assert len(password) * 6 >= 128  # URL-safe base64: 6 bits a character
    with Session(engine_for(broker.settings)) as session:
        device = session.get(Device, "pd-0001")
    assert device.provisioned_at is not None and device.revoked_at is None
    assert password not in device.password_hash
    assert verify_password(password, device.password_hash)
    assert not verify_password(two["mqtt"]["password"], device.password_hash)
    if broker.settings.db_url.startswith("sqlite:///"):
        db_bytes = Path(broker.settings.db_url.removeprefix("sqlite:///")).read_bytes()
        assert password.encode() not in db_bytes


def test_provisioning_twice_is_refused(broker, provision) -> None:
    provision("pd-0001")
    with pytest.raises(AccountError, match="already provisioned"):
        provision("pd-0001")


@pytest.mark.parametrize("device_id", ["PD-1", "pd_0001", "pd/0001", "pd+", "#", "x", "pendant_admin"])
def test_bad_device_ids_are_refused(broker, provision, device_id: str) -> None:
    with pytest.raises(AccountError, match="is not a device id"):
        provision(device_id)


def test_revoked_device_is_refused_and_disconnected(broker, provision, mqtt_client) -> None:
    config = provision("pd-0001")
    pendant = mqtt_client(config)
    revoke_device(broker.settings, "pd-0001")
    assert pendant.disconnected.wait(10), "the connected pendant was not disconnected"
    assert mqtt_client(config, connect=False).connect().is_failure
    with Session(engine_for(broker.settings)) as session:
        device = session.get(Device, "pd-0001")
    assert device.revoked_at is not None and device.password_hash is None


def test_revoked_device_can_be_provisioned_again(broker, provision, mqtt_client) -> None:
    old = provision("pd-0001")
    revoke_device(broker.settings, "pd-0001")
    new = provision("pd-0001")
    assert mqtt_client(old, connect=False).connect().is_failure
    assert not mqtt_client(new, connect=False).connect().is_failure


def test_revoking_an_unknown_device_is_an_error(broker) -> None:
    with pytest.raises(AccountError, match="there is no device pd-0404"):
        revoke_device(broker.settings, "pd-0404")


def test_provisioning_without_a_broker_says_how_to_start_it(broker, settings: Settings) -> None:
    broker.broker.stop()
    with pytest.raises(BrokerUnavailable) as caught:
        provision_device(settings, "pd-0001")
    assert str(caught.value) == (
        f"the broker is not running on 127.0.0.1:{settings.mqtt_port}: start it with `pendant broker run`"
    )
