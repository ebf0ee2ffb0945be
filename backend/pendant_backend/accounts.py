"""Device credentials, through the broker's dynamic-security API (create, rotate, revoke), and their record.

Passwords are random (192 bits from `secrets`), never derived from the IMEI, ICCID or device id, and the
database keeps only a salted hash; the rendered config.json is the one place a password exists.
Every change is an audit event.

Many devices are provisioned in batches (docs/performance.md): one control message carries a batch's
commands and one transaction records it, so that the cost per device does not include a round trip and a
commit each. Mosquitto 2.0's plugin still rewrites its whole file after every command that changes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

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
from pendant_backend.dynsec_file import open_dynsec_file
from pendant_backend.models import Device, utc_now
from pendant_backend.mqtt_link import RequestSession
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

DYNSEC_RESPONSE_TOPIC = f"{DYNSEC_TOPIC}/response"
DEVICE_KEEPALIVE_S = 60
CONFIG_FILE = "config.json"
CA_FILE = "ca.pem"  # on the pendant's flash beside config.json
_LEGACY_SCHEME = "pbkdf2_sha256"  # the hashes of devices provisioned before batches, still verified
_HASH_SCHEME = "sha256"
BATCH_SIZE = 50  # devices to a control message and to a transaction
# Offline, a batch is one save of the whole file: bigger batches, fewer saves (10,000 devices: 112 s at
# 50 to a save, 27 s at 500, docs/performance.md).
OFFLINE_BATCH_SIZE = 500
# A batch's control message waits for the broker to save its file once per command (2 per device).
BATCH_TIMEOUT_S = 300.0
_SURVEY_SIZE = 500  # devices to a look-up message


class AccountError(BackendError):
    """A device account could not be created or revoked."""


class DynsecSession(Protocol):
    """Where control messages go: the running broker (mqtt_link.RequestSession) or, with the broker
    stopped, its file (dynsec_file.DynsecFile)."""

    def call(self, payload: bytes, is_response: Callable[[bytes], bool]) -> bytes: ...


def check_device_id(device_id: str) -> str:
    """Return `device_id` if it has the form of protocol.md, else raise AccountError saying what fits."""
    if not payloads.is_valid_device_id(device_id):
        raise AccountError(
            f"{device_id!r} is not a device id: use 3 to 32 lower-case letters, digits and '-', "
            "starting with a letter or digit (e.g. pd-0001)"
        )
    return device_id


def hash_password(password: str) -> str:
    """A salted SHA-256 of a device's password, `sha256$<salt>$<digest>` (base64).

    One round is enough here: the password is 192 random bits, which no guessing gets through however
    fast each guess is. Slow hashes protect passwords people choose (pendant_backend.passwords uses
    argon2id for those); PBKDF2 at 100,000 rounds cost 38 ms a device, most of provisioning.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return f"{_HASH_SCHEME}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a hash made by `hash_password` (or by its PBKDF2 predecessor)."""
    try:
        scheme, *fields = stored.split("$")
        if scheme == _HASH_SCHEME and len(fields) == 2:
            salt, digest = (base64.b64decode(field) for field in fields)
            actual = hashlib.sha256(salt + password.encode()).digest()
        elif scheme == _LEGACY_SCHEME and len(fields) == 3:
            iterations, salt, digest = (
                int(fields[0]),
                base64.b64decode(fields[1]),
                base64.b64decode(fields[2]),
            )
            actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, digest)


def device_config(
    settings: Settings, device_id: str, password: str, *, apn: str = "internet", ca_pem: str | None = None
) -> dict[str, Any]:
    """What provisioning puts on the pendant's flash: its config.json
    (docs/protocol-examples/device-config.json: over TLS to the broker's public name and TLS port), and
    under "files" the files that go beside it, the CA its server must prove to come from as `ca.pem`.
    Whatever writes a pendant's flash writes "files" as files of their own (`pendant_files`): the
    firmware reads config.json on every connect, and a PEM in it would be 1-2 KB of heap in one piece.
    `ca_pem` is the CA's PEM when the caller has read it already (a batch reads it once: checking the
    project CA loads its key, about 0.1 s)."""
    if ca_pem is None:
        ca_pem = pki.ca_pem(settings).decode("ascii")
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
        "files": {CA_FILE: ca_pem},
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
    settings: Settings,
    *,
    broker_secrets: BrokerSecrets | None = None,
    timeout: float = 10.0,
    offline: bool = False,
) -> Iterator[DynsecSession]:
    """One admin connection to the dynamic-security API, for many calls (e.g. provisioning a batch);
    with `offline`, the plugin's file itself while the broker is stopped (pendant_backend.dynsec_file)."""
    if offline:
        with open_dynsec_file(settings) as document:
            yield document
        return
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
    session: DynsecSession | None = None,
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


@dataclass(frozen=True)
class Provisioned:
    """One device of a batch: its config.json (the one copy of its password), or None when `resume`
    skipped it because an earlier run provisioned it completely."""

    device_id: str
    config: dict[str, Any] | None


class BatchError(AccountError):
    """A batch stopped part-way. `done` were provisioned completely (their configs were handed out),
    `undone` were left as they were; the same call with `resume=True` provisions the rest."""

    def __init__(self, message: str, *, done: list[str], undone: list[str]) -> None:
        super().__init__(message)
        self.done, self.undone = done, undone


class _Orphaned(AccountError):
    """The database refused a batch and its broker accounts could not be removed again either."""

    def __init__(self, message: str, device_ids: list[str]) -> None:
        super().__init__(message)
        self.device_ids = device_ids


@dataclass(frozen=True)
class _Found:
    """What the database and the broker hold of one device before it is provisioned."""

    device_id: str
    decommissioned: bool
    recorded: bool  # the database holds a live credential: a hash, not revoked
    has_client: bool
    has_role: bool

    @property
    def complete(self) -> bool:
        return self.has_client and self.recorded

    def refusal(self, resume: bool) -> str | None:
        """Why this device may not be provisioned now, or None."""
        d = self.device_id
        if self.decommissioned:
            return f"{d} is decommissioned: it cannot be provisioned again"
        if self.complete and not resume:
            return f"{d} is already provisioned: revoke it first with `pendant device revoke {d}`"
        if self.has_client and not self.recorded and not resume:
            # Its password exists nowhere: an interrupted run made the account and never recorded it.
            return (
                f"{d} has a broker account but no record in the database (an interrupted provisioning): "
                f"provision it again with --resume to replace it, or revoke it with "
                f"`pendant device revoke {d}`"
            )
        return None


def _span(device_ids: list[str]) -> str:
    if len(device_ids) == 1:
        return device_ids[0]
    return f"{device_ids[0]} to {device_ids[-1]}"


def _survey(
    settings: Settings, session: DynsecSession, engine: Engine, device_ids: list[str]
) -> list[_Found]:
    """Look up the devices in the database and on the broker (read-only commands, which the broker
    never saves), `_SURVEY_SIZE` devices to a control message."""
    found: list[_Found] = []
    for start in range(0, len(device_ids), _SURVEY_SIZE):
        part = device_ids[start : start + _SURVEY_SIZE]
        with Session(engine) as db:
            rows = {
                row.device_id: row for row in db.exec(select(Device).where(col(Device.device_id).in_(part)))
            }
        commands: list[dict[str, Any]] = []
        for device_id in part:
            commands.append({"command": "getClient", "username": device_id})
            commands.append({"command": "getRole", "rolename": device_role_name(device_id)})
        responses = dynsec_call(settings, commands, session=session)
        for i, device_id in enumerate(part):
            row = rows.get(device_id)
            found.append(
                _Found(
                    device_id=device_id,
                    decommissioned=row is not None and row.loan_state == "decommissioned",
                    recorded=row is not None and row.password_hash is not None and row.revoked_at is None,
                    has_client="error" not in responses[2 * i],
                    has_role="error" not in responses[2 * i + 1],
                )
            )
    return found


def _refused(refusals: list[str], total: int) -> AccountError:
    if total == 1:
        return AccountError(refusals[0])
    shown = "; ".join(refusals[:3]) + (f" (and {len(refusals) - 3} more)" if len(refusals) > 3 else "")
    return AccountError(f"{shown}; none of the {total} devices was changed")


def _remove_accounts(
    settings: Settings, session: DynsecSession, *, clients: list[str], roles: list[str]
) -> None:
    """Delete these broker clients and device roles in one control message (an undo)."""
    commands = [{"command": "deleteClient", "username": d} for d in clients]
    commands += [{"command": "deleteRole", "rolename": device_role_name(d)} for d in roles]
    if commands:
        dynsec_call(settings, commands, session=session)


def _create_accounts(settings: Settings, session: DynsecSession, batch: list[_Found]) -> dict[str, str]:
    """Create the broker accounts of `batch` in one control message and return their passwords. If the
    broker refuses any command, what this message created is deleted again and AccountError says why."""
    passwords = {found.device_id: new_password() for found in batch}
    commands: list[dict[str, Any]] = []
    purposes: list[tuple[str, str]] = []
    for found in batch:
        device_id, role = found.device_id, device_role_name(found.device_id)
        if found.has_client:  # with `resume`: an account that no record and no config knows the password of
            commands.append({"command": "deleteClient", "username": device_id})
            purposes.append((device_id, "delete"))
        if found.has_role:  # left by an interrupted attempt: replaced, so that its ACLs are current
            commands.append({"command": "deleteRole", "rolename": role})
            purposes.append((device_id, "delete"))
        commands.append({"command": "createRole", "rolename": role, "acls": device_role_acls(device_id)})
        purposes.append((device_id, "role"))
        commands.append(
            {
                "command": "createClient",
                "username": device_id,
                # In plain text: the plugin keeps only its own salted hash of it.
                "password": passwords[device_id],
                "clientid": device_id,
                "textname": f"pendant {device_id}",
                "roles": [{"rolename": role}],
            }
        )
        purposes.append((device_id, "account"))
    responses = dynsec_call(settings, commands, session=session)
    made: dict[str, list[str]] = {"role": [], "account": []}
    refused: tuple[str, str, str] | None = None
    for (device_id, purpose), response in zip(purposes, responses, strict=True):
        if purpose == "delete":
            continue
        if "error" not in response:
            made[purpose].append(device_id)
        elif refused is None:
            refused = (device_id, purpose, str(response["error"]))
    if refused is not None:
        _remove_accounts(settings, session, clients=made["account"], roles=made["role"])
        device_id, purpose, error = refused
        raise AccountError(f"the broker refused to create the {purpose} of {device_id}: {error}")
    return passwords


def _provision_batch(
    settings: Settings,
    session: DynsecSession,
    engine: Engine,
    batch: list[_Found],
    *,
    apn: str,
    actor: str,
    config: Mapping[str, Any] | None = None,
) -> list[Provisioned]:
    """One batch: its broker accounts in one control message, its records in one transaction; on a
    failure neither is left (or `_Orphaned` names the accounts that could not be removed)."""
    passwords = _create_accounts(settings, session, batch)
    device_ids = list(passwords)
    try:
        _record_provisioned(engine, {d: hash_password(p) for d, p in passwords.items()}, actor, config)
    except Exception:
        log.error("could not record %s in the database; removing their broker accounts", _span(device_ids))
        try:
            _remove_accounts(settings, session, clients=device_ids, roles=device_ids)
        except BackendError as undo:
            raise _Orphaned(
                f"the database refused {_span(device_ids)} and their broker accounts could not be "
                f"removed ({undo})",
                device_ids,
            ) from undo
        raise
    ca_pem = pki.ca_pem(settings).decode("ascii")
    return [
        Provisioned(d, device_config(settings, d, p, apn=apn, ca_pem=ca_pem)) for d, p in passwords.items()
    ]


def _reason(exc: Exception) -> str:
    """One line for what stopped a batch."""
    if isinstance(exc, SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"the database refused the batch ({type(exc).__name__}: {detail})"
    return str(exc)


def _provision_all(
    settings: Settings,
    session: DynsecSession,
    engine: Engine,
    device_ids: list[str],
    *,
    apn: str,
    actor: str,
    resume: bool,
    batch_size: int,
    config: Mapping[str, Any] | None = None,
) -> Iterator[list[Provisioned]]:
    found = _survey(settings, session, engine, device_ids)
    refusals = [reason for item in found if (reason := item.refusal(resume)) is not None]
    if refusals:
        raise _refused(refusals, len(device_ids))
    todo = [item.device_id for item in found if not item.complete]
    if len(todo) < len(found):  # `resume`: these were done by an earlier run
        yield [Provisioned(item.device_id, None) for item in found if item.complete]
    done: list[str] = []
    for start in range(0, len(todo), batch_size):
        batch_ids = todo[start : start + batch_size]
        try:
            # Looked at again just before the change: another technician may have provisioned one since.
            fresh = _survey(settings, session, engine, batch_ids)
            refusals = [reason for item in fresh if (reason := item.refusal(resume)) is not None]
            if refusals:
                raise _refused(refusals, 1)
            skipped = [item.device_id for item in fresh if item.complete]
            results = _provision_batch(
                settings,
                session,
                engine,
                [i for i in fresh if not i.complete],
                apn=apn,
                actor=actor,
                config=config,
            )
        except (BackendError, SQLAlchemyError, OSError) as exc:
            orphaned = exc.device_ids if isinstance(exc, _Orphaned) else []
            if len(device_ids) == 1 and not orphaned:
                raise
            undone = todo[start:]
            message = (
                f"provisioning stopped: {_reason(exc)}. Provisioned {len(done)} of the {len(todo)} devices"
                + (f" ({_span(done)})" if done else "")
                + f"; {len(undone)} ({_span(undone)}) were not"
                + (
                    f", and {_span(orphaned)} were left with broker accounts but no database record"
                    if orphaned
                    else " changed"
                )
                + ": once the cause is fixed, run the same provisioning again with --resume to finish"
            )
            raise BatchError(message, done=done, undone=undone) from exc
        done.extend(result.device_id for result in results)
        yield [Provisioned(device_id, None) for device_id in skipped] + results


def provision_many(
    settings: Settings,
    device_ids: Iterable[str],
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    actor: str = audit.SYSTEM,
    resume: bool = False,
    batch_size: int | None = None,
    timeout: float = BATCH_TIMEOUT_S,
    session: DynsecSession | None = None,
    offline: bool = False,
    config: Mapping[str, Any] | None = None,
) -> Iterator[list[Provisioned]]:
    """Provision many devices; yields each batch once it is complete (broker accounts and records), so
    that the caller saves its configs before the next batch begins.

    Each batch of `batch_size` devices (default BATCH_SIZE) is one control message to the broker (a
    role and an account per device) and one database transaction (the rows, a `device_provisioned`
    audit event each, the first configs queued). A batch either completes or is undone. Before any
    change every device is looked up: one that is decommissioned or already provisioned (or, without
    `resume`, has a broker account that the database does not record) refuses the whole call with
    AccountError and nothing changes. A failure later raises BatchError naming the devices done and
    those not; `resume=True` skips the devices an earlier run completed (yielded with config None)
    and replaces accounts that an interrupted run left without a record, so the same call again
    finishes the job.

    With `offline` the broker must be stopped: the accounts go straight into its dynamic-security file,
    written once per batch (pendant_backend.dynsec_file), which the running plugin cannot do (it
    rewrites the whole file per command: quadratic in the fleet); batches default to
    OFFLINE_BATCH_SIZE. Everything else is the same.

    `config` (e.g. `{"heartbeat_s": 1800}`, a supervision profile) becomes each device's own config
    overrides, checked first, so that its first published config carries them.
    """
    batch_size = batch_size or (OFFLINE_BATCH_SIZE if offline else BATCH_SIZE)
    ids = [check_device_id(d) for d in device_ids]
    if config:
        configs.check_values(config)
    repeated = sorted(d for d, n in Counter(ids).items() if n > 1)
    if repeated:
        raise AccountError(f"{', '.join(repeated[:5])} given more than once: give each device once")
    if not ids:
        return
    engine = engine or engine_for(settings)
    if session is None:
        opened = dynsec_session(settings, timeout=timeout, offline=offline)
    else:
        opened = nullcontext(session)  # the caller's, left open
    with opened as active:
        yield from _provision_all(
            settings,
            active,
            engine,
            ids,
            apn=apn,
            actor=actor,
            resume=resume,
            batch_size=batch_size,
            config=config,
        )


def provision_devices(
    settings: Settings,
    device_ids: Iterable[str],
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    actor: str = audit.SYSTEM,
    resume: bool = False,
) -> Iterator[dict[str, Any]]:
    """`provision_many` for scripts: yields the config.json of each device it provisioned (with
    `resume`, those an earlier run completed are left out)."""
    for batch in provision_many(settings, device_ids, apn=apn, engine=engine, actor=actor, resume=resume):
        yield from (result.config for result in batch if result.config is not None)


def provision_device(
    settings: Settings,
    device_id: str,
    *,
    apn: str = "internet",
    engine: Engine | None = None,
    timeout: float = 10.0,
    actor: str = audit.SYSTEM,
    session: DynsecSession | None = None,
) -> dict[str, Any]:
    """Create a broker account for `device_id` and return its config.json as a dict.

    The account gets a random password (192 bits), is bound to the client id `device_id`, and has a
    role that reaches only the device's own topics. The database keeps only a hash of the password:
    the returned dict is the one place the password exists, so save it (the CLI writes it 0600).
    A device not yet in the registry is added; one in stock or returned becomes `provisioned`.
    Raises AccountError if the device already has an account or is decommissioned, BrokerUnavailable
    if the broker is down. `session` (from `dynsec_session`) reuses one admin connection.
    """
    ((result,),) = provision_many(
        settings, [device_id], apn=apn, engine=engine, actor=actor, timeout=timeout, session=session
    )
    assert result.config is not None  # without `resume` a provisioned device is refused, never skipped
    log.info("provisioned %s", device_id)
    return result.config


def _record_provisioned(
    engine: Engine, password_hashes: dict[str, str], actor: str, config: Mapping[str, Any] | None = None
) -> None:
    """Record a batch in one transaction: each device's row, its `device_provisioned` event in the audit
    chain, `config` as a revision of its own overrides, and its first config (retained on the broker,
    there when the pendant first connects)."""
    now = utc_now()
    device_ids = list(password_hashes)
    with session_scope(engine) as db, audit.deferred(db):
        rows = {
            row.device_id: row for row in db.exec(select(Device).where(col(Device.device_id).in_(device_ids)))
        }
        for device_id, password_hash in password_hashes.items():
            device = rows.get(device_id) or Device(device_id=device_id)
            device.password_hash = password_hash
            device.provisioned_at = now
            device.revoked_at = None
            if device.loan_state in ("in_stock", "returned"):
                device.loan_state = "provisioned"
            db.add(device)
            db.flush()
            audit.append(db, kind="device_provisioned", at=now, actor=actor, device_id=device_id)
            if config:
                configs.add_revision(db, scope=device_id, changes=config, author=actor, now=now)
            configs.publish_device(db, device, now=now)


def _delete_account(settings: Settings, device_id: str, session: DynsecSession | None) -> bool:
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
            # The broker has just disconnected it and refuses it from now on: not online any more.
            if device.online:
                device.online = False
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
