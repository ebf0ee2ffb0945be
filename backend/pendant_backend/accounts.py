"""Device credentials, through the broker's dynamic-security API (create, rotate, revoke), and their record.

Passwords are random (192 bits from `secrets`), never derived from the IMEI, ICCID or device id, and the
database keeps only a PBKDF2 hash; the rendered config.json is the one place a password exists.
Every change is an audit event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from pendant_backend import BackendError, audit, configs, payloads, pki
from pendant_backend.broker import (
    DYNSEC_TOPIC,
    BrokerSecrets,
    device_role_acls,
    device_role_name,
    load_secrets,
    new_password,
)
from pendant_backend.broker_endpoint import backend_endpoint
from pendant_backend.db import engine_for, session_scope
from pendant_backend.models import Device, utc_now
from pendant_backend.mqtt_link import RequestSession
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

DYNSEC_RESPONSE_TOPIC = f"{DYNSEC_TOPIC}/response"
DEVICE_KEEPALIVE_S = 60
CONFIG_FILE = "config.json"
CA_FILE = "ca.pem"  # on the pendant's flash beside config.json
_HASH_ITERATIONS = 100_000


class AccountError(BackendError):
    """A device account could not be created or revoked."""


def check_device_id(device_id: str) -> str:
    """Return `device_id` if it has the form of protocol.md, else raise AccountError saying what fits."""
    if not payloads.is_valid_device_id(device_id):
        raise AccountError(
            f"{device_id!r} is not a device id: use 3 to 32 lower-case letters, digits and '-', "
            "starting with a letter or digit (e.g. pd-0001)"
        )
    return device_id


def hash_password(password: str) -> str:
    """A salted PBKDF2-SHA256 hash, `pbkdf2_sha256$<iterations>$<salt>$<hash>` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _HASH_ITERATIONS)
    encoded_salt, encoded_digest = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"pbkdf2_sha256${_HASH_ITERATIONS}${encoded_salt}${encoded_digest}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a hash made by `hash_password`."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


def device_config(
    settings: Settings, device_id: str, password: str, *, apn: str = "internet"
) -> dict[str, Any]:
    """What provisioning puts on the pendant's flash: its config.json
    (docs/protocol-examples/device-config.json: over TLS to the broker's public name and TLS port), and
    under "files" the files that go beside it, the CA its server must prove to come from as `ca.pem`.
    Whatever writes a pendant's flash writes "files" as files of their own (`pendant_files`): the
    firmware reads config.json on every connect, and a PEM in it would be 1-2 KB of heap in one piece."""
    return {
        "device_id": device_id,
        "mqtt": {
            "host": settings.mqtt_public_host,
            "port": settings.mqtt_tls_port,
            "user": device_id,
            "password": password,
            "tls": True,
            "ca": CA_FILE,
            "keepalive": DEVICE_KEEPALIVE_S,
        },
        "apn": apn,
        "files": {CA_FILE: pki.ca_pem(settings).decode("ascii")},
    }


def pendant_files(config: dict[str, Any]) -> dict[str, bytes]:
    """The files of a rendered device config as the pendant's flash holds them: config.json (without
    "files") and each of its files (ca.pem)."""
    own = {key: value for key, value in config.items() if key != "files"}
    files = {CONFIG_FILE: (json.dumps(own, separators=(",", ":")) + "\n").encode()}
    for name, text in config.get("files", {}).items():
        files[name] = text.encode("ascii")
    return files


@contextmanager
def dynsec_session(
    settings: Settings, *, broker_secrets: BrokerSecrets | None = None, timeout: float = 10.0
) -> Iterator[RequestSession]:
    """One admin connection to the dynamic-security API, for many calls (e.g. provisioning a batch)."""
    broker_secrets = broker_secrets or load_secrets(settings)
    with RequestSession(
        **backend_endpoint(settings).client_options(),
        username=broker_secrets.admin_username,
        password=broker_secrets.admin_password,
        topic=DYNSEC_TOPIC,
        response_topic=DYNSEC_RESPONSE_TOPIC,
        timeout=timeout,
    ) as session:
        yield session


def dynsec_call(
    settings: Settings,
    commands: list[dict[str, Any]],
    *,
    broker_secrets: BrokerSecrets | None = None,
    timeout: float = 10.0,
    session: RequestSession | None = None,
) -> list[dict[str, Any]]:
    """Send `commands` to the dynamic-security plugin as the admin account; return its responses in order.

    Uses `session` if given, else a connection of its own. A response with an `error` is returned as it
    is: the caller decides which errors matter.
    """
    if session is None:
        with dynsec_session(settings, broker_secrets=broker_secrets, timeout=timeout) as own:
            return dynsec_call(settings, commands, session=own)
    token = secrets.token_hex(8)
    tagged = [{**command, "correlationData": f"{token}-{i}"} for i, command in enumerate(commands)]

    def is_ours(payload: bytes) -> bool:
        try:
            responses = json.loads(payload)["responses"]
            return [r.get("correlationData") for r in responses] == [c["correlationData"] for c in tagged]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False

    answer = session.call(json.dumps({"commands": tagged}).encode(), is_ours)
    return json.loads(answer)["responses"]


def _raise_on_error(response: dict[str, Any], what: str) -> None:
    if "error" in response:
        raise AccountError(f"the broker refused to {what}: {response['error']}")


def provision_device(
    settings: Settings,
    device_id: str,
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    timeout: float = 10.0,
    actor: str = audit.SYSTEM,
    session: RequestSession | None = None,
) -> dict[str, Any]:
    """Create a broker account for `device_id` and return its config.json as a dict.

    The account gets a random password (192 bits), is bound to the client id `device_id`, and has a
    role that reaches only the device's own topics. The database keeps only a hash of the password:
    the returned dict is the one place the password exists, so save it (the CLI writes it 0600).
    A device not yet in the registry is added; one in stock or returned becomes `provisioned`.
    Raises AccountError if the device already has an account or is decommissioned, BrokerUnavailable
    if the broker is down. `session` (from `dynsec_session`) reuses one admin connection for a batch.
    """
    check_device_id(device_id)
    engine = engine or engine_for(settings)
    with session_scope(engine) as db:
        device = db.get(Device, device_id)
        if device is not None and device.loan_state == "decommissioned":
            raise AccountError(f"{device_id} is decommissioned: it cannot be provisioned again")
    if session is None:
        with dynsec_session(settings, timeout=timeout) as own:
            return provision_device(settings, device_id, apn=apn, engine=engine, actor=actor, session=own)
    get_client = {"command": "getClient", "username": device_id}
    existing = dynsec_call(settings, [get_client], session=session)[0]
    if "error" not in existing:
        raise AccountError(
            f"{device_id} is already provisioned: revoke it first with `pendant device revoke {device_id}`"
        )
    password = new_password()
    role = device_role_name(device_id)
    # A role left behind by an interrupted earlier attempt is replaced, so its ACLs are always current.
    responses = dynsec_call(
        settings,
        [
            {"command": "deleteRole", "rolename": role},
            {"command": "createRole", "rolename": role, "acls": device_role_acls(device_id)},
            {
                "command": "createClient",
                "username": device_id,
                "password": password,
                "clientid": device_id,
                "textname": f"pendant {device_id}",
                "roles": [{"rolename": role}],
            },
        ],
        session=session,
    )
    _raise_on_error(responses[1], f"create the role {role}")
    _raise_on_error(responses[2], f"create the account {device_id}")
    try:
        _record_provisioned(engine, device_id, hash_password(password), actor)
    except Exception:
        log.error("could not record %s in the database; removing its broker account again", device_id)
        _delete_account(settings, device_id, session)
        raise
    log.info("provisioned %s", device_id)
    return device_config(settings, device_id, password, apn=apn)


def provision_devices(
    settings: Settings,
    device_ids: Iterable[str],
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    actor: str = audit.SYSTEM,
) -> Iterator[dict[str, Any]]:
    """Provision many devices over one admin connection; yields each config.json as it is made."""
    engine = engine or engine_for(settings)
    with dynsec_session(settings) as session:
        for device_id in device_ids:
            yield provision_device(settings, device_id, apn=apn, engine=engine, actor=actor, session=session)


def _record_provisioned(engine: Engine, device_id: str, password_hash: str, actor: str) -> None:
    now = utc_now()
    with session_scope(engine) as session:
        device = session.get(Device, device_id) or Device(device_id=device_id)
        device.password_hash = password_hash
        device.provisioned_at = now
        device.revoked_at = None
        if device.loan_state in ("in_stock", "returned"):
            device.loan_state = "provisioned"
        session.add(device)
        session.flush()
        audit.append(session, kind="device_provisioned", at=now, actor=actor, device_id=device_id)
        # Its config, retained on the broker, is there when it first connects.
        configs.publish_device(session, device, now=now)


def _delete_account(settings: Settings, device_id: str, session: RequestSession | None) -> bool:
    """Delete the device's client (the broker disconnects it at once) and its role; True if it existed."""
    responses = dynsec_call(
        settings,
        [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role_name(device_id)},
        ],
        session=session,
    )
    return "error" not in responses[0]


def revoke_device(
    settings: Settings,
    device_id: str,
    *,
    engine: Engine | None = None,
    timeout: float = 10.0,
    actor: str = audit.SYSTEM,
) -> None:
    """Delete the device's broker account: the broker refuses it from now on and disconnects it if it is
    connected. Its alarms and heartbeats stay in the database; the device row is marked revoked."""
    check_device_id(device_id)
    with dynsec_session(settings, timeout=timeout) as session:
        existed = _delete_account(settings, device_id, session)
    engine = engine or engine_for(settings)
    now = utc_now()
    with session_scope(engine) as db:
        device = db.get(Device, device_id)
        if device is None and not existed:
            raise AccountError(f"there is no device {device_id}: see `pendant device list`")
        if device is not None:
            device.revoked_at = now
            device.password_hash = None
            db.add(device)
            db.flush()
            audit.append(
                db,
                kind="device_revoked",
                at=now,
                actor=actor,
                device_id=device_id,
                data={"broker_account_existed": existed},
            )
    log.info("revoked %s", device_id)


def rotate_device(
    settings: Settings,
    device_id: str,
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    timeout: float = 10.0,
    actor: str = audit.SYSTEM,
) -> dict[str, Any]:
    """Give the device a new random password and return its new config.json. The broker drops a
    connection made with the old password; the pendant gets back in with the new config only."""
    check_device_id(device_id)
    password = new_password()
    with dynsec_session(settings, timeout=timeout) as session:
        responses = dynsec_call(
            settings,
            [
                {"command": "setClientPassword", "username": device_id, "password": password},
                # Disabling drops a session made with the old password; the account stays.
                {"command": "disableClient", "username": device_id},
                {"command": "enableClient", "username": device_id},
            ],
            session=session,
        )
    if "error" in responses[0]:
        raise AccountError(
            f"{device_id} has no broker account to rotate: "
            f"provision it with `pendant device provision {device_id}`"
        )
    _raise_on_error(responses[1], f"disconnect {device_id}")
    _raise_on_error(responses[2], f"enable {device_id} again")
    engine = engine or engine_for(settings)
    now = utc_now()
    with session_scope(engine) as db:
        device = db.get(Device, device_id) or Device(device_id=device_id, loan_state="provisioned")
        device.password_hash = hash_password(password)
        device.rotated_at = now
        db.add(device)
        db.flush()
        audit.append(db, kind="device_rotated", at=now, actor=actor, device_id=device_id)
    log.info("rotated the credentials of %s", device_id)
    return device_config(settings, device_id, password, apn=apn)


def write_device_config(path: Any, config: dict[str, Any]) -> None:
    """Write a rendered config as the pendant gets it: config.json at `path` (mode 0600: it holds the
    password) and its files beside it (ca.pem), ready to be copied to the pendant's flash as they are."""
    from pathlib import Path

    from pendant_backend.settings import write_private_file

    path = Path(path)
    for name, data in pendant_files(config).items():
        write_private_file(path if name == CONFIG_FILE else path.with_name(name), data)
