"""Per-device credentials on the real broker: random, unique, not derivable from the device's
identifiers, stored only as hashes; rotation and revocation take effect at once, also while connected."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from pendant_backend import registry
from pendant_backend.accounts import provision_device, revoke_device, rotate_device, verify_password
from pendant_backend.db import engine_for
from pendant_backend.models import AuditEvent, Device, DeviceCreate

pytestmark = pytest.mark.broker


def test_passwords_are_unique_random_and_not_derived_from_identifiers(broker) -> None:
    engine = engine_for(broker.settings)
    passwords = {}
    for n in range(8):
        device_id, imei, iccid = f"pd-{n:04d}", f"86123456789{n:04d}", f"893108123456789{n:04d}"
        registry.register_device(engine, device=DeviceCreate(device_id=device_id, imei=imei, iccid=iccid))
        password = provision_device(broker.settings, device_id, engine=engine)["mqtt"]["password"]
        for identifier in (device_id, imei, iccid, imei[-6:], iccid[-6:]):
            assert identifier not in password
        passwords[device_id] = password
    assert len(set(passwords.values())) == len(passwords)
    assert all(len(p) >= 32 for p in passwords.values())  # 192 bits, URL-safe base64
    # The same device with the same identifiers gets a different password every time: nothing derives it.
    revoke_device(broker.settings, "pd-0000", engine=engine)
    again = provision_device(broker.settings, "pd-0000", engine=engine)["mqtt"]["password"]
    assert again != passwords["pd-0000"]
    with Session(engine) as session:
        device = session.get(Device, "pd-0000")
        assert device.loan_state == "provisioned" and verify_password(again, device.password_hash)
        kinds = [e.kind for e in session.exec(select(AuditEvent).where(AuditEvent.device_id == "pd-0000"))]
    assert kinds.count("device_provisioned") == 2 and "device_revoked" in kinds
    engine.dispose()


def test_rotation_drops_the_old_session_and_only_the_new_password_works(
    broker, provision, mqtt_client
) -> None:
    old = provision("pd-0001")
    pendant = mqtt_client(old)
    new = rotate_device(broker.settings, "pd-0001")
    assert new["mqtt"]["password"] != old["mqtt"]["password"]
    assert pendant.disconnected.wait(10), "the session made with the old password was not dropped"
    assert mqtt_client(old, connect=False).connect().is_failure
    assert not mqtt_client(new, connect=False).connect().is_failure


def test_rotating_an_unprovisioned_device_says_what_to_do(broker) -> None:
    with pytest.raises(Exception, match="provision it with"):
        rotate_device(broker.settings, "pd-0404")


def test_a_revoked_device_is_refused_while_connected(broker, provision, mqtt_client) -> None:
    config = provision("pd-0001")
    pendant = mqtt_client(config)
    listener = mqtt_client(
        username=broker.secrets.backend_username,
        password=broker.secrets.backend_password,
        client_id=broker.secrets.backend_username,
        mqtt5=True,
    )
    assert not listener.subscribe("pendant/v1/+/alarm").is_failure
    revoke_device(broker.settings, "pd-0001")
    assert pendant.disconnected.wait(5), "the revoked pendant was still connected after 5 s"
    assert mqtt_client(config, connect=False).connect().is_failure
    with pytest.raises(AssertionError):
        listener.expect("pendant/v1/pd-0001/alarm", timeout=0.5)


def test_a_decommissioned_device_cannot_be_provisioned(broker) -> None:
    engine = engine_for(broker.settings)
    registry.register_device(engine, device=DeviceCreate(device_id="pd-0009"))
    registry.set_loan_state(engine, device_id="pd-0009", state="decommissioned")
    with pytest.raises(Exception, match="decommissioned"):
        provision_device(broker.settings, "pd-0009", engine=engine)
    engine.dispose()


def test_device_a_can_neither_write_nor_read_device_bs_topics(broker, provision, mqtt_client) -> None:
    a = mqtt_client(provision("pd-000a"))
    b = mqtt_client(provision("pd-000b"))
    listener = mqtt_client(
        username=broker.secrets.backend_username,
        password=broker.secrets.backend_password,
        client_id=broker.secrets.backend_username,
        mqtt5=True,
    )
    assert not listener.subscribe("pendant/v1/+/tele").is_failure
    for leaf in ("alarm/ack", "config", "cmd", "alarm", "tele"):
        assert a.subscribe(f"pendant/v1/pd-000b/{leaf}").is_failure
    a.publish("pendant/v1/pd-000b/tele", b'{"forged":true}')
    b.publish("pendant/v1/pd-000b/tele", b"marker")
    message = listener.expect()
    assert (message.topic, message.payload) == ("pendant/v1/pd-000b/tele", b"marker")
