"""Provisioning and revoking pendants through the broker's dynamic-security API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import text
from sqlmodel import Session, select

from pendant_backend import audit, pki
from pendant_backend.accounts import (
    AccountError,
    BatchError,
    dynsec_call,
    hash_password,
    pendant_files,
    provision_device,
    provision_many,
    revoke_device,
    verify_password,
    write_device_config,
)
from pendant_backend.broker import BrokerError, device_role_acls, device_role_name, new_password
from pendant_backend.db import engine_for, session_scope
from pendant_backend.dynsec_file import DynsecFile, DynsecFileError, open_dynsec_file
from pendant_backend.models import AuditEvent, Device
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
    with session_scope(engine_for(broker.settings)) as session:
        session.get(Device, "pd-0001").online = True  # as the backend recorded its birth
    revoke_device(broker.settings, "pd-0001")
    assert pendant.disconnected.wait(10), "the connected pendant was not disconnected"
    assert mqtt_client(config, connect=False).connect().is_failure
    with Session(engine_for(broker.settings)) as session:
        device = session.get(Device, "pd-0001")
    assert device.revoked_at is not None and device.password_hash is None
    assert device.online is False  # not listed as online any more


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


# ---- many devices in batches -------------------------------------------------------------------------

FLEET = [f"pd-{n:04d}" for n in range(50)]
ALARM = b'{"alarm_id":"1-1","kind":"panic","tst":null,"loc":null,"cell":null,"batt":50,"test":false}'


def provisioned(settings: Settings, device_ids: list[str], **options) -> list:
    """Everything `provision_many` yields, in order (batches flattened)."""
    return [result for batch in provision_many(settings, device_ids, **options) for result in batch]


def broker_has(settings: Settings, device_id: str) -> bool:
    (response,) = dynsec_call(settings, [{"command": "getClient", "username": device_id}])
    return "error" not in response


def recorded(settings: Settings) -> set[str]:
    """The devices the database records as provisioned."""
    with Session(engine_for(settings)) as session:
        rows = session.exec(select(Device).where(Device.password_hash.is_not(None)))  # type: ignore[union-attr]
        return {row.device_id for row in rows}


def provisioned_events(settings: Settings) -> list[str]:
    with Session(engine_for(settings)) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.kind == "device_provisioned"))
        return [event.device_id for event in events]


def test_a_batch_gives_every_device_a_working_account_of_its_own(broker, mqtt_client) -> None:
    settings = broker.settings
    results = provisioned(settings, FLEET, batch_size=20)  # three control messages
    assert [r.device_id for r in results] == FLEET
    configs = [r.config for r in results]
    assert len({c["mqtt"]["password"] for c in configs}) == len(FLEET)
    with Session(engine_for(settings)) as session:
        for config in configs:
            row = session.get(Device, config["device_id"])
            assert verify_password(config["mqtt"]["password"], row.password_hash)
            assert config["mqtt"]["password"] not in row.password_hash
    pendants = [mqtt_client(config, mqtt5=True, clean=True) for config in configs]  # each connects
    for number, pendant in enumerate(pendants):
        own, other = FLEET[number], FLEET[(number + 1) % len(FLEET)]
        assert pendant.publish(f"pendant/v1/{other}/alarm", ALARM).value == 135  # not authorised
        assert not pendant.publish(f"pendant/v1/{own}/alarm", ALARM).is_failure
    # Each device has its event, in one intact chain.
    assert sorted(provisioned_events(settings)) == FLEET
    assert audit.verify_database(engine_for(settings)) == []


def test_a_batch_with_a_provisioned_device_changes_nothing(broker) -> None:
    settings = broker.settings
    provision_device(settings, "pd-0030")
    with pytest.raises(AccountError) as caught:
        provisioned(settings, FLEET, batch_size=10)
    assert str(caught.value) == (
        "pd-0030 is already provisioned: revoke it first with `pendant device revoke pd-0030`; "
        "none of the 50 devices was changed"
    )
    assert recorded(settings) == {"pd-0030"}
    assert not any(broker_has(settings, d) for d in ("pd-0000", "pd-0029", "pd-0049"))


def refuse_in_the_database(settings: Settings, device_id: str) -> None:
    """A real refusal by the database in the middle of a batch: a trigger on the devices table."""
    engine = engine_for(settings)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON devices "
                    f"WHEN NEW.device_id = '{device_id}' BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.device_id = '{device_id}' THEN RAISE EXCEPTION 'the disk is full'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text("CREATE TRIGGER refuse BEFORE INSERT ON devices FOR EACH ROW EXECUTE FUNCTION refuse()")
            )


def stop_refusing(settings: Settings) -> None:
    engine = engine_for(settings)
    with engine.begin() as connection:
        connection.execute(
            text("DROP TRIGGER refuse" + ("" if engine.dialect.name == "sqlite" else " ON devices"))
        )


def test_a_batch_that_fails_half_way_leaves_no_device_half_done_and_resume_finishes(broker) -> None:
    settings = broker.settings
    refuse_in_the_database(settings, "pd-0034")
    handed_out = []
    with pytest.raises(BatchError) as caught:
        for batch in provision_many(settings, FLEET, batch_size=10):
            handed_out += [r.config for r in batch]
    stopped = caught.value
    assert stopped.done == FLEET[:30] and stopped.undone == FLEET[30:]
    assert str(stopped).startswith("provisioning stopped: the database refused the batch (")
    assert "the disk is full" in str(stopped)
    assert str(stopped).endswith(
        "Provisioned 30 of the 50 devices (pd-0000 to pd-0029); 20 (pd-0030 to pd-0049) were not changed: "
        "once the cause is fixed, run the same provisioning again with --resume to finish"
    )
    assert [c["device_id"] for c in handed_out] == FLEET[:30]
    # The failed batch was undone on the broker too: no account without a record, nor the reverse.
    assert recorded(settings) == set(FLEET[:30])
    assert [d for d in FLEET if broker_has(settings, d)] == FLEET[:30]
    assert sorted(provisioned_events(settings)) == FLEET[:30]

    stop_refusing(settings)
    results = provisioned(settings, FLEET, batch_size=10, resume=True)
    assert [r.device_id for r in results if r.config is None] == FLEET[:30]  # left as they were
    assert [r.device_id for r in results if r.config is not None] == FLEET[30:]
    handed_out += [r.config for r in results if r.config is not None]
    assert recorded(settings) == set(FLEET)
    assert sorted(provisioned_events(settings)) == FLEET  # one event each, none twice
    assert audit.verify_database(engine_for(settings)) == []
    with Session(engine_for(settings)) as session:
        for config in handed_out:  # the first run's passwords are still the valid ones
            row = session.get(Device, config["device_id"])
            assert verify_password(config["mqtt"]["password"], row.password_hash)


def test_a_device_provisioned_meanwhile_stops_the_batch_and_resume_leaves_it_alone(
    broker, mqtt_client
) -> None:
    settings = broker.settings
    batches = provision_many(settings, FLEET, batch_size=10)
    first = next(batches)
    # Another technician provisions pd-0025 while this run is on its first batches.
    theirs = provision_device(settings, "pd-0025")
    handed_out = [r.config for r in first]
    with pytest.raises(BatchError, match="pd-0025 is already provisioned") as caught:
        for batch in batches:
            handed_out += [r.config for r in batch]
    assert caught.value.done == FLEET[:20]
    results = provisioned(settings, FLEET, batch_size=10, resume=True)
    assert {r.device_id for r in results if r.config is None} == {*FLEET[:20], "pd-0025"}
    handed_out += [r.config for r in results if r.config is not None]
    assert len(handed_out) == 49
    mqtt_client(theirs)  # its account was not replaced
    for config in handed_out[::7]:
        mqtt_client(config)


def test_resume_replaces_an_account_left_without_a_record(broker, mqtt_client) -> None:
    settings = broker.settings
    # As a run killed between the broker and the database leaves it: an account nobody has the password of.
    role = device_role_name("pd-0007")
    dynsec_call(
        settings,
        [
            {"command": "createRole", "rolename": role, "acls": device_role_acls("pd-0007")},
            {
                "command": "createClient",
                "username": "pd-0007",
                "password": new_password(),
                "roles": [{"rolename": role}],
            },
        ],
    )
    with pytest.raises(AccountError, match="pd-0007 has a broker account but no record in the database"):
        provisioned(settings, FLEET[:10])
    assert recorded(settings) == set()
    results = provisioned(settings, FLEET[:10], resume=True)
    assert all(r.config is not None for r in results)
    mqtt_client(results[7].config)


def test_device_ids_given_twice_are_refused(broker) -> None:
    with pytest.raises(AccountError, match="pd-0001 given more than once"):
        provisioned(broker.settings, ["pd-0001", "pd-0002", "pd-0001"])


def test_hashes_of_the_earlier_scheme_still_verify() -> None:
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"secret-of-before", salt, 1000)
    legacy = f"pbkdf2_sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert verify_password("secret-of-before", legacy)
    assert not verify_password("another", legacy)
    assert verify_password("now", hash_password("now")) and not verify_password("no", hash_password("now"))
    assert not verify_password("now", "sha256$not-base64!$x")


# ---- with the broker stopped: its file (pendant_backend.dynsec_file) ---------------------------------


def _commands() -> list[dict]:
    """A control message with every command provisioning and revoking send, succeeding and failing."""
    role, other = device_role_name("pd-0900"), device_role_name("pd-0901")
    return [
        {"command": "createRole", "rolename": role, "acls": device_role_acls("pd-0900")},
        {
            "command": "createClient",
            "username": "pd-0900",
            "password": "pw-0900",
            "clientid": "pd-0900",
            "textname": "pendant pd-0900",
            "roles": [{"rolename": role}],
        },
        {"command": "createClient", "username": "pd-0900", "password": "again"},
        {"command": "createRole", "rolename": role},
        {"command": "createClient", "username": "pd-0902", "password": "x", "roles": [{"rolename": "nope"}]},
        {"command": "getClient", "username": "pd-0900"},
        {"command": "getClient", "username": "pd-0999"},
        {"command": "getRole", "rolename": "device:pd-0999"},
        {"command": "deleteClient", "username": "pd-0999"},
        {"command": "deleteRole", "rolename": "device:pd-0999"},
        {"command": "createRole", "rolename": other, "acls": device_role_acls("pd-0901")},
        {
            "command": "createClient",
            "username": "pd-0901",
            "password": "pw-0901",
            "roles": [{"rolename": other}],
        },
        # Revoking's order: the account, then its role (Mosquitto 2.0.11 leaves a client that held a
        # deleted role with a dangling entry, so nothing here deletes a role that is still held).
        {"command": "deleteClient", "username": "pd-0901"},
        {"command": "deleteRole", "rolename": other},
        {"command": "getRole", "rolename": other},
        {"command": "deleteClient", "username": "pd-0900"},
        {"command": "getClient", "username": "pd-0900"},
    ]


def _shown(responses: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "correlationData"} for r in responses]


def _accounts(path: Path) -> tuple[dict, dict]:
    """The file's clients (without the salted hash, which differs by design) and roles (ACLs sorted, in
    the order the plugin keeps them in its memory, not the order it writes)."""
    document = json.loads(path.read_text())
    clients = {
        c["username"]: {k: v for k, v in c.items() if k not in ("password", "salt")}
        for c in document["clients"]
    }
    roles = {
        # The plugin writes the default priority out; the project's first file leaves it implied.
        r["rolename"]: sorted(json.dumps({"priority": 0, **acl}, sort_keys=True) for acl in r.get("acls", []))
        for r in document["roles"]
    }
    return clients, roles


def test_the_file_answers_and_saves_as_the_running_plugin_does(broker) -> None:
    settings, path = broker.settings, broker.broker.dynsec_path
    broker.broker.stop()
    before = path.read_bytes()
    broker.broker.start()
    by_broker = dynsec_call(settings, _commands())
    broker.broker.stop()  # the plugin saved after each change
    saved_by_broker = _accounts(path)
    path.write_bytes(before)
    by_file = dynsec_call(settings, _commands(), session=DynsecFile(path))
    assert _shown(by_file) == _shown(by_broker)
    assert _accounts(path) == saved_by_broker
    assert "error" in by_broker[2] and "error" not in by_broker[0]  # the message does fail and succeed


def test_devices_provisioned_offline_connect_with_accounts_of_their_own(broker, mqtt_client) -> None:
    settings = broker.settings
    broker.broker.stop()
    results = provisioned(settings, FLEET[:12], batch_size=5, offline=True)
    assert [r.device_id for r in results] == FLEET[:12]
    assert recorded(settings) == set(FLEET[:12])
    broker.broker.start()  # it reads the accounts the file now holds
    for number, result in enumerate(results):
        pendant = mqtt_client(result.config, mqtt5=True, clean=True)
        own, other = FLEET[number], FLEET[(number + 1) % 12]
        assert pendant.publish(f"pendant/v1/{other}/alarm", ALARM).value == 135  # not authorised
        assert not pendant.publish(f"pendant/v1/{own}/alarm", ALARM).is_failure
    # Revoking goes through the running broker as usual, and the account is gone.
    revoke_device(settings, FLEET[0])
    assert not broker_has(settings, FLEET[0])
    assert audit.verify_database(engine_for(settings)) == []


def test_offline_provisioning_is_refused_while_the_broker_runs(broker) -> None:
    with pytest.raises(DynsecFileError, match=r"is running \(pid \d+\): stop it"):
        provisioned(broker.settings, ["pd-0001"], offline=True)
    assert not broker_has(broker.settings, "pd-0001") and recorded(broker.settings) == set()


def test_the_broker_does_not_start_while_its_file_is_edited(broker) -> None:
    broker.broker.stop()
    with open_dynsec_file(broker.settings), pytest.raises(BrokerError, match="are in use"):
        broker.broker.start()
    broker.broker.start()  # free again once the editing ends
    (answer,) = dynsec_call(broker.settings, [{"command": "getClient", "username": "pd-0999"}])
    assert answer["error"] == "Client not found"  # the running plugin answers
