"""Device credentials, through the broker's dynamic-security API (create, revoke), and their record."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

from sqlalchemy import Engine

from pendant_backend import BackendError, payloads
from pendant_backend.broker import (
    DYNSEC_TOPIC,
    BrokerSecrets,
    device_role_acls,
    device_role_name,
    load_secrets,
    new_password,
)
from pendant_backend.db import engine_for, session_scope
from pendant_backend.models import Device, utc_now
from pendant_backend.mqtt_link import request
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

DYNSEC_RESPONSE_TOPIC = f"{DYNSEC_TOPIC}/response"
DEVICE_KEEPALIVE_S = 60
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
    """The pendant's config.json (docs/protocol-examples/device-config.json)."""
    return {
        "device_id": device_id,
        "mqtt": {
            "host": settings.mqtt_host,
            "port": settings.mqtt_port,
            "user": device_id,
            "password": password,
            "tls": False,
            "keepalive": DEVICE_KEEPALIVE_S,
        },
        "apn": apn,
    }


def dynsec_call(
    settings: Settings,
    commands: list[dict[str, Any]],
    *,
    broker_secrets: BrokerSecrets | None = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Send `commands` to the dynamic-security plugin as the admin account; return its responses in order.

    A response with an `error` is returned as it is: the caller decides which errors matter.
    """
    broker_secrets = broker_secrets or load_secrets(settings)
    token = secrets.token_hex(8)
    tagged = [{**command, "correlationData": f"{token}-{i}"} for i, command in enumerate(commands)]

    def is_ours(payload: bytes) -> bool:
        try:
            responses = json.loads(payload)["responses"]
            return [r.get("correlationData") for r in responses] == [c["correlationData"] for c in tagged]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False

    answer = request(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=broker_secrets.admin_username,
        password=broker_secrets.admin_password,
        topic=DYNSEC_TOPIC,
        payload=json.dumps({"commands": tagged}).encode(),
        response_topic=DYNSEC_RESPONSE_TOPIC,
        is_response=is_ours,
        timeout=timeout,
    )
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
) -> dict[str, Any]:
    """Create a broker account for `device_id` and return its config.json as a dict.

    The account gets a random password (192 bits), is bound to the client id `device_id`, and has a
    role that reaches only the device's own topics. The database keeps only a hash of the password:
    the returned dict is the one place the password exists, so save it (the CLI writes it 0600).
    Raises AccountError if the device already has an account, BrokerUnavailable if the broker is down.
    """
    check_device_id(device_id)
    broker_secrets = load_secrets(settings)
    get_client = {"command": "getClient", "username": device_id}
    existing = dynsec_call(settings, [get_client], broker_secrets=broker_secrets, timeout=timeout)[0]
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
        broker_secrets=broker_secrets,
        timeout=timeout,
    )
    _raise_on_error(responses[1], f"create the role {role}")
    _raise_on_error(responses[2], f"create the account {device_id}")
    try:
        _record_provisioned(engine or engine_for(settings), device_id, hash_password(password))
    except Exception:
        log.error("could not record %s in the database; removing its broker account again", device_id)
        _delete_account(settings, device_id, broker_secrets, timeout)
        raise
    log.info("provisioned %s", device_id)
    return device_config(settings, device_id, password, apn=apn)


def _record_provisioned(engine: Engine, device_id: str, password_hash: str) -> None:
    with session_scope(engine) as session:
        device = session.get(Device, device_id) or Device(device_id=device_id)
        device.password_hash = password_hash
        device.provisioned_at = utc_now()
        device.revoked_at = None
        session.add(device)


def _delete_account(
    settings: Settings, device_id: str, broker_secrets: BrokerSecrets, timeout: float
) -> bool:
    """Delete the device's client (the broker disconnects it at once) and its role; True if it existed."""
    responses = dynsec_call(
        settings,
        [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role_name(device_id)},
        ],
        broker_secrets=broker_secrets,
        timeout=timeout,
    )
    return "error" not in responses[0]


def revoke_device(
    settings: Settings,
    device_id: str,
    *,
    engine: Engine | None = None,
    timeout: float = 10.0,
) -> None:
    """Delete the device's broker account: the broker refuses it from now on and disconnects it if it is
    connected. Its alarms and heartbeats stay in the database; the device row is marked revoked."""
    check_device_id(device_id)
    broker_secrets = load_secrets(settings)
    existed = _delete_account(settings, device_id, broker_secrets, timeout)
    engine = engine or engine_for(settings)
    with session_scope(engine) as session:
        device = session.get(Device, device_id)
        if device is None and not existed:
            raise AccountError(f"there is no device {device_id}: see `pendant device list`")
        if device is not None:
            device.revoked_at = utc_now()
            device.password_hash = None
            session.add(device)
    log.info("revoked %s", device_id)
