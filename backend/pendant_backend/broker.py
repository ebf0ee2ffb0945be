"""Writes the Mosquitto config and the initial dynamic-security file, and runs the broker as a subprocess.

The broker listens with TLS (1.2 or later) for the pendants, with the certificate of pendant_backend.pki,
and, unless switched off, in plain MQTT on loopback for the backend and the bench. Mosquitto reads its
certificates after it has dropped root, so it serves copies in <data>/broker/tls that its own user owns;
the CA key is never among them. SIGHUP makes a running broker read them again
(`reload_certificates`).
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pendant_backend import BackendError, pki
from pendant_backend.payloads import BACKEND_TOPICS, DEVICE_TOPICS, topic_for
from pendant_backend.pki import TlsFiles
from pendant_backend.settings import (
    Settings,
    check_plain_listener,
    read_private_json,
    write_private_file,
    write_private_json,
)

log = logging.getLogger(__name__)

ADMIN_USERNAME = "pendant_admin"
BACKEND_USERNAME = "pendant_backend"
# The ingest workers' account: it may only read the non-alarm device topics, through the shared
# subscription group of the same name (several workers share the load, each message reaches one).
INGEST_USERNAME = "pendant_ingest"
INGEST_SHARE_GROUP = "pendant_ingest"
# Underscores cannot occur in a device id, so no device can ever be provisioned under these names.
_ADMIN_ROLE = "pendant_admin"
_BACKEND_ROLE = "pendant_backend"
_INGEST_ROLE = "pendant_ingest"

DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
# The backend's retained record of what the broker holds (pendant_backend.recovery): the backend account
# writes it, the admin account reads it back. No device id contains an underscore, so no device has it.
MARK_TOPIC = "pendant/v1/_backend/mark"
# Seconds between two saves of the broker's state. Losing the last of them in a crash is safe: a pendant
# resends each alarm until its `alarm/ack`, and the backend queues again what the broker lost
# (pendant_backend.recovery). Saving after every change cost time in proportion to the whole state.
AUTOSAVE_INTERVAL_S = 30

# Mosquitto's own defaults for the dynamic-security file (see mosquitto_ctrl dynsec init).
_DYNSEC_SALT_BYTES = 12
_DYNSEC_ITERATIONS = 101

# The line Mosquitto logs once every listener is open (and its certificates are loaded).
_RUNNING_LINE = re.compile(rb"mosquitto version \S+ running")


class BrokerError(BackendError):
    """The broker could not be configured, started or stopped."""


@dataclass(frozen=True)
class BrokerSecrets:
    """The service accounts of the broker, as saved in <data>/secrets/broker.json."""

    admin_username: str
    admin_password: str
    backend_username: str
    backend_password: str
    # Added by issue 11: empty in a file written before it, until the next `pendant broker run`.
    ingest_username: str = ""
    ingest_password: str = ""

    def to_json(self) -> dict[str, dict[str, str]]:
        accounts = {
            "admin": {"username": self.admin_username, "password": self.admin_password},
            "backend": {"username": self.backend_username, "password": self.backend_password},
        }
        if self.ingest_username:
            accounts["ingest"] = {"username": self.ingest_username, "password": self.ingest_password}
        return accounts


def load_secrets(settings: Settings) -> BrokerSecrets:
    """Read the broker's service accounts; raise BrokerError saying how to create them if absent."""
    path = settings.broker_secrets_path
    if not path.exists():
        raise BrokerError(f"no broker accounts in {path}: run `pendant broker run` once to create them")
    data = read_private_json(path)
    try:
        ingest = data.get("ingest") or {"username": "", "password": ""}
        return BrokerSecrets(
            admin_username=data["admin"]["username"],
            admin_password=data["admin"]["password"],
            backend_username=data["backend"]["username"],
            backend_password=data["backend"]["password"],
            ingest_username=ingest["username"],
            ingest_password=ingest["password"],
        )
    except (KeyError, TypeError, AttributeError):
        raise BrokerError(f"{path} is damaged: it lacks the admin or backend account") from None


def new_password() -> str:
    """A random password with 192 bits of entropy, URL-safe."""
    return secrets.token_urlsafe(24)


def dynsec_password_fields(password: str) -> dict[str, str | int]:
    """The password, salt and iterations fields of a dynamic-security client, as the plugin hashes them."""
    salt = secrets.token_bytes(_DYNSEC_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _DYNSEC_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _DYNSEC_ITERATIONS,
    }


def _acl(acltype: str, topic: str) -> dict[str, object]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_role_name(device_id: str) -> str:
    """The dynamic-security role that holds one device's ACLs (the colon keeps it apart from any username)."""
    return f"device:{device_id}"


def device_role_acls(device_id: str) -> list[dict[str, object]]:
    """One device's ACLs: publish on its own data topics, subscribe to and receive its own commands.

    Mosquitto 2.0.11's dynamic-security plugin does not substitute %u or %c in ACL topics (it matches
    them literally), so each device gets a role naming its own topics instead of one shared role.
    """
    acls = [_acl("publishClientSend", topic_for(device_id, leaf)) for leaf in DEVICE_TOPICS]
    for leaf in BACKEND_TOPICS:
        acls.append(_acl("subscribeLiteral", topic_for(device_id, leaf)))
        acls.append(_acl("publishClientReceive", topic_for(device_id, leaf)))
    return acls


def ingest_subscriptions() -> tuple[str, ...]:
    """The shared subscriptions of the ingest workers: every device topic but `alarm` (which has a session
    of its own, pendant_backend.service)."""
    return tuple(
        f"$share/{INGEST_SHARE_GROUP}/{topic_for('+', leaf)}" for leaf in DEVICE_TOPICS if leaf != "alarm"
    )


def ingest_role_acls() -> list[dict[str, object]]:
    """Read-only, and only through the shared group: no alarm, no publishing, no plain subscription."""
    acls = [_acl("subscribeLiteral", topic) for topic in ingest_subscriptions()]
    acls += [_acl("publishClientReceive", topic_for("+", leaf)) for leaf in DEVICE_TOPICS if leaf != "alarm"]
    return acls


def _ingest_client(broker_secrets: BrokerSecrets) -> dict[str, object]:
    # Not bound to one client id: every worker has its own session (pendant_backend.service names them).
    return {
        "username": broker_secrets.ingest_username,
        "textname": "pendant backend ingest workers (heartbeats, status, events, command results)",
        **dynsec_password_fields(broker_secrets.ingest_password),
        "roles": [{"rolename": _INGEST_ROLE}],
    }


def service_role_acls() -> dict[str, list[dict[str, object]]]:
    """The ACLs of the admin and the backend role, by role name."""
    admin_acls = [
        _acl("publishClientSend", DYNSEC_TOPIC),
        _acl("subscribeLiteral", f"{DYNSEC_TOPIC}/response"),
        _acl("publishClientReceive", f"{DYNSEC_TOPIC}/response"),
        # The backend reads the mark back on a connection of its own (its account is bound to one
        # client id, which its persistent session holds): subscribe, and send the probe that ends the read.
        _acl("publishClientSend", MARK_TOPIC),
        _acl("subscribeLiteral", MARK_TOPIC),
        _acl("publishClientReceive", MARK_TOPIC),
    ]
    backend_acls = []
    for leaf in DEVICE_TOPICS:
        backend_acls.append(_acl("subscribeLiteral", topic_for("+", leaf)))
        backend_acls.append(_acl("publishClientReceive", topic_for("+", leaf)))
    backend_acls += [_acl("publishClientSend", topic_for("+", leaf)) for leaf in BACKEND_TOPICS]
    backend_acls.append(_acl("publishClientSend", MARK_TOPIC))
    return {_ADMIN_ROLE: admin_acls, _BACKEND_ROLE: backend_acls}


def add_missing_service_acls(document: dict[str, Any]) -> bool:
    """Give the service roles of a dynamic-security document the ACLs a newer version grants them
    (a data folder made before the mark existed); True if it changed anything."""
    wanted = service_role_acls()
    changed = False
    for role in document.get("roles", []):
        acls = wanted.get(role.get("rolename"))
        if acls is None:
            continue
        have = {(acl.get("acltype"), acl.get("topic")) for acl in role.setdefault("acls", [])}
        for acl in acls:
            if (acl["acltype"], acl["topic"]) not in have:
                role["acls"].append(acl)
                changed = True
    return changed


def dynsec_document(broker_secrets: BrokerSecrets) -> dict[str, object]:
    """The initial dynamic-security file: the admin and the backend account with their roles.

    Everything not granted here is refused (every default access is false).
    """
    acls = service_role_acls()
    return {
        "clients": [
            {
                "username": broker_secrets.admin_username,
                "textname": "pendant provisioning (dynamic-security API only)",
                **dynsec_password_fields(broker_secrets.admin_password),
                "roles": [{"rolename": _ADMIN_ROLE}],
            },
            {
                "username": broker_secrets.backend_username,
                "textname": "pendant backend ingest",
                # Bound so that only one backend holds the persistent session at a time.
                "clientid": broker_secrets.backend_username,
                **dynsec_password_fields(broker_secrets.backend_password),
                "roles": [{"rolename": _BACKEND_ROLE}],
            },
            _ingest_client(broker_secrets),
        ],
        "groups": [],
        "roles": [
            {"rolename": _ADMIN_ROLE, "acls": acls[_ADMIN_ROLE]},
            {"rolename": _BACKEND_ROLE, "acls": acls[_BACKEND_ROLE]},
            {"rolename": _INGEST_ROLE, "acls": ingest_role_acls()},
        ],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
    }


class Broker:
    """One Mosquitto process for the data folder in `settings`.

    `start()` writes the config (and, on first run, the accounts and the CA), starts mosquitto and waits
    until it accepts connections; `stop()` ends it cleanly so it saves its queues; `kill()` is SIGKILL,
    for tests. `tls` serves those files instead of pki.ensure(settings) without checking them (tests
    serve expired or wrong certificates with it on purpose).
    """

    def __init__(self, settings: Settings, *, tls: TlsFiles | None = None) -> None:
        self.settings = settings
        self._tls = tls
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._stay_root = False

    @property
    def config_path(self) -> Path:
        return self.settings.broker_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.settings.broker_dir / "mosquitto.log"

    @property
    def dynsec_path(self) -> Path:
        return self.settings.broker_dir / "dynsec" / "dynamic-security.json"

    @property
    def persistence_dir(self) -> Path:
        return self.settings.broker_dir / "db"

    @property
    def tls_dir(self) -> Path:
        """The broker's own copies of the CA, its certificate and its key (mode 0700, its user's)."""
        return broker_tls_dir(self.settings)

    @property
    def pid_path(self) -> Path:
        return broker_pid_path(self.settings)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        """True while the mosquitto process started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def prepare(self) -> BrokerSecrets:
        """Create the folders, the accounts (first run only) and the config; return the accounts."""
        settings = self.settings
        check_plain_listener(settings)
        for path in (settings.data_dir, settings.broker_dir):
            if any(c.isspace() for c in str(path)):
                raise BrokerError(
                    f"the data folder {path} contains white space, which mosquitto.conf cannot hold"
                )
        if not settings.dynsec_plugin or not Path(settings.dynsec_plugin).is_file():
            raise BrokerError(
                "the Mosquitto dynamic-security plugin was not found: install mosquitto (2.0 or later) "
                "or set PENDANT_DYNSEC_PLUGIN to mosquitto_dynamic_security.so"
            )
        # The broker's user must pass through these folders but not list them.
        for folder in (settings.data_dir, settings.broker_dir):
            folder.mkdir(mode=0o711, parents=True, exist_ok=True)
        broker_user = _broker_user()
        if broker_user is not None and not _can_enter(settings.broker_dir, broker_user):
            # A checkout under /root (0700) is the usual case. Failing here would break the quick start on
            # a fresh machine, so the broker keeps root instead; production puts the data folder where the
            # `mosquitto` user can reach it (docs/operations.md).
            log.warning(
                "the broker keeps running as root: user %s cannot enter %s (allow it, or choose a "
                "PENDANT_DATA_DIR it can reach, to let the broker drop its privileges)",
                broker_user.pw_name,
                settings.broker_dir,
            )
            broker_user = None
            self._stay_root = True
        for private_dir in (self.dynsec_path.parent, self.persistence_dir):
            private_dir.mkdir(mode=0o700, exist_ok=True)
            _give_to(private_dir, broker_user)
        broker_secrets = self._ensure_accounts(broker_user)
        install_certificates(self.tls_dir, self._tls or pki.ensure(settings), broker_user)
        # The log names clients and their addresses: for the broker and root only.
        os.close(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        _give_to(self.log_path, broker_user)
        self.config_path.write_text(self.render_config(broker_user))
        return broker_secrets

    def _ensure_accounts(self, broker_user: pwd.struct_passwd | None) -> BrokerSecrets:
        secrets_path = self.settings.broker_secrets_path
        have_secrets, have_dynsec = secrets_path.exists(), self.dynsec_path.exists()
        if have_secrets and have_dynsec:
            self._ensure_service_acls(broker_user)
            return self._ensure_ingest_account(load_secrets(self.settings), broker_user)
        if have_secrets != have_dynsec:
            present, missing = (
                (secrets_path, self.dynsec_path) if have_secrets else (self.dynsec_path, secrets_path)
            )
            raise BrokerError(
                f"{present} exists but {missing} does not: restore it from a backup, or delete both "
                "to start over with new accounts (every device must then be provisioned again)"
            )
        broker_secrets = BrokerSecrets(
            ADMIN_USERNAME, new_password(), BACKEND_USERNAME, new_password(), INGEST_USERNAME, new_password()
        )
        write_private_json(secrets_path, broker_secrets.to_json())
        write_private_json(self.dynsec_path, dynsec_document(broker_secrets))
        _give_to(self.dynsec_path, broker_user)
        log.info("created the broker accounts in %s", secrets_path)
        return broker_secrets

    def _ensure_service_acls(self, broker_user: pwd.struct_passwd | None) -> None:
        """Give the admin and backend roles of an older data folder the ACLs of the mark (the broker is
        not running yet: it reads the file as we leave it)."""
        document = read_private_json(self.dynsec_path)
        if add_missing_service_acls(document):
            write_private_json(self.dynsec_path, document)
            _give_to(self.dynsec_path, broker_user)
            log.info("gave the service roles in %s the ACLs of the broker's mark", self.dynsec_path)

    def _ensure_ingest_account(
        self, broker_secrets: BrokerSecrets, broker_user: pwd.struct_passwd | None
    ) -> BrokerSecrets:
        """Add the ingest account to accounts made before it existed (the broker is not running yet, so
        its dynamic-security file may be edited in place)."""
        if broker_secrets.ingest_username:
            return broker_secrets
        upgraded = dataclasses.replace(
            broker_secrets, ingest_username=INGEST_USERNAME, ingest_password=new_password()
        )
        document = read_private_json(self.dynsec_path)
        document["clients"] = [
            c for c in document.get("clients", []) if c.get("username") != INGEST_USERNAME
        ] + [_ingest_client(upgraded)]
        document["roles"] = [r for r in document.get("roles", []) if r.get("rolename") != _INGEST_ROLE] + [
            {"rolename": _INGEST_ROLE, "acls": ingest_role_acls()}
        ]
        write_private_json(self.dynsec_path, document)
        _give_to(self.dynsec_path, broker_user)
        write_private_json(self.settings.broker_secrets_path, upgraded.to_json())
        log.info("added the ingest workers' account %s to the broker", INGEST_USERNAME)
        return upgraded

    def render_config(self, broker_user: pwd.struct_passwd | None) -> str:
        """The text of mosquitto.conf for these settings."""
        s = self.settings
        lines = [
            "# Written by pendant_backend.broker on every start: edit the settings, not this file.",
            "per_listener_settings false",
        ]
        if s.mqtt_plain:
            # For the backend and the bench on this machine only (check_plain_listener).
            lines.append(f"listener {s.mqtt_port} {s.mqtt_host}")
        bind = "" if s.mqtt_tls_bind in ("", "0.0.0.0") else f" {s.mqtt_tls_bind}"
        lines += [
            f"listener {s.mqtt_tls_port}{bind}",
            f"cafile {self.tls_dir / 'ca.crt'}",
            f"certfile {self.tls_dir / 'server.crt'}",
            f"keyfile {self.tls_dir / 'server.key'}",
            # The minimum: TLS 1.0 and 1.1 clients are refused in the handshake.
            "tls_version tlsv1.2",
            "allow_anonymous false",
            f"auth_plugin {s.dynsec_plugin}",
            f"auth_opt_config_file {self.dynsec_path}",
            # Saved every AUTOSAVE_INTERVAL_S and on a clean stop; what a crash loses in between comes back
            # (docs/architecture.md, "When the broker crashes").
            "persistence true",
            f"persistence_location {self.persistence_dir}",
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            "autosave_on_changes false",
            # The backend may be down for hours; nothing queued for it may be dropped.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            # Small request/response messages (acks, the dynamic-security API) must not wait for Nagle's
            # algorithm and the peer's delayed ACK (about 40 ms each on Linux).
            "set_tcp_nodelay true",
            # Pendants use MQTT 3.1.1 persistent sessions; keep those of a pendant left in a drawer.
            "persistent_client_expiration 90d",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if broker_user is not None:
            lines.append(f"user {broker_user.pw_name}")
        elif self._stay_root:
            # Without this line a broker started as root drops to `mosquitto`, which could not save.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> BrokerSecrets:
        """Prepare and start mosquitto; return once it accepts connections.

        Raises BrokerError with the tail of its log if it exits (a port in use, a bad plugin path) or
        does not listen within `timeout` seconds.
        """
        if self.is_running():
            raise BrokerError(f"this broker is already running (pid {self.pid})")
        other = running_broker_pid(self.settings)
        if other is not None:
            # Two brokers on one persistence file overwrite each other's saved sessions and queues.
            raise BrokerError(
                f"a broker already runs on the data folder {self.settings.data_dir.resolve()} (pid {other}, "
                "another `pendant demo` or `pendant broker run`?): stop it, or give this one another "
                "PENDANT_DATA_DIR"
            )
        # Until it has read its accounts file, nobody else may write it (pendant_backend.dynsec_file).
        with accounts_lock(self.settings, holder="the broker's start"):
            return self._start(timeout)

    def _start(self, timeout: float) -> BrokerSecrets:
        broker_secrets = self.prepare()
        s = self.settings
        if s.mqtt_plain and _accepts_connections(s.mqtt_host, s.mqtt_port):
            raise BrokerError(
                f"something already listens on {s.mqtt_address} (another broker?): "
                "stop it, or choose another port with PENDANT_MQTT_PORT"
            )
        if _accepts_connections(_probe_host(s.mqtt_tls_bind), s.mqtt_tls_port):
            raise BrokerError(
                f"something already listens on {s.mqtt_tls_address} (another broker?): "
                "stop it, or choose another port with PENDANT_MQTT_TLS_PORT"
            )
        log_start = self.log_path.stat().st_size
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop() or kill()
        try:
            self._process = subprocess.Popen(
                [self.settings.mosquitto_bin, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                # It logs to its file; this catches what it prints before it has read its config.
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches us, and we stop it cleanly.
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot run {self.settings.mosquitto_bin}: {exc.strerror}") from None
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                self._close_log()
                raise BrokerError(
                    f"mosquitto exited with code {code} at start; the end of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if self._listening(log_start):
                self.pid_path.write_text(f"{self._process.pid}\n")
                log.info("broker listening on %s (pid %d)", self.listeners(), self._process.pid)
                return broker_secrets
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(
                    f"mosquitto did not listen on {self.listeners()} within {timeout:.0f} s; "
                    f"the end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def listeners(self) -> str:
        """Where it listens, for messages: `TLS on 0.0.0.0:8883, plain on 127.0.0.1:18830`."""
        s = self.settings
        text = f"TLS on {s.mqtt_tls_address}"
        return text + (f", plain on {s.mqtt_address}" if s.mqtt_plain else " (no plain listener)")

    def _listening(self, log_start: int) -> bool:
        # Probing the TLS port with a bare TCP connection would log a failed handshake at every start,
        # so the broker's own "running" line says when every listener is open.
        with open(self.log_path, "rb") as log_file:
            log_file.seek(log_start)
            if not _RUNNING_LINE.search(log_file.read()):
                return False
        s = self.settings
        return not s.mqtt_plain or _accepts_connections(s.mqtt_host, s.mqtt_port)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker exits and return its exit code; None if it still runs after `timeout`."""
        if self._process is None:
            raise BrokerError("the broker is not running")
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its database on the way out); SIGKILL after `timeout` seconds."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto did not stop within %.0f s; killing it", timeout)
                self._process.kill()
                self._process.wait()
        self._process = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving, as in a crash. For tests."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._close_log()

    def reload_certificates(self, tls: TlsFiles | None = None) -> None:
        """Serve `tls` (default: the files given at construction, else pki.ensure): new copies, then
        SIGHUP to this broker."""
        if not self.is_running():
            raise BrokerError("this broker is not running")
        assert self._process is not None
        _reinstall(self.settings, tls or self._tls, self._process.pid)

    def refresh_certificates(self) -> bool:
        """For a broker that runs for months: if pki.ensure now gives another certificate than the one
        served (the project's, issued again near its end; the operator's, renewed in place), serve it.
        True if it did. A fault in the files is logged and the broker keeps its current certificate.
        Files given at construction are served as they are."""
        if self._tls is not None or not self.is_running():
            return False
        try:
            files = pki.ensure(self.settings)
            if files.server_cert.read_bytes() == (self.tls_dir / "server.crt").read_bytes():
                return False
            self.reload_certificates(files)
        except (BackendError, OSError) as exc:
            log.error("the broker keeps its current certificate: %s", exc)
            return False
        log.info(
            "the broker serves its new certificate %s",
            pki.describe(pki.load_certs(files.server_cert, "")[0]).sha256,
        )
        return True

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the broker's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def broker_tls_dir(settings: Settings) -> Path:
    """Where the broker's copies of its TLS files live."""
    return settings.broker_dir / "tls"


def broker_pid_path(settings: Settings) -> Path:
    """The pid of the broker `pendant broker run` started (removed when it stops)."""
    return settings.broker_dir / "mosquitto.pid"


def install_certificates(folder: Path, tls: TlsFiles, broker_user: pwd.struct_passwd | None) -> None:
    """Copy the CA, the certificate and the key into `folder` (0700, files 0600) for the broker's user."""
    folder.mkdir(mode=0o700, exist_ok=True)
    _give_to(folder, broker_user)
    for source, name in (
        (tls.ca_cert, "ca.crt"),
        (tls.server_cert, "server.crt"),
        (tls.server_key, "server.key"),
    ):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BrokerError(f"cannot read {source} for the broker: {exc.strerror}") from None
        write_private_file(folder / name, data)
        _give_to(folder / name, broker_user)


@contextmanager
def accounts_lock(settings: Settings, *, holder: str) -> Iterator[None]:
    """Hold the lock on the broker's accounts file, or raise BrokerError at once if it is held:
    by `Broker.start` until the broker has read the file, by `open_dynsec_file` while it edits it."""
    settings.broker_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    fd = os.open(settings.broker_dir / "accounts.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BrokerError(
                f"the broker's accounts in {settings.broker_dir} are in use ({holder} must wait): a broker "
                "is starting, or provisioning with --offline is writing them; try again when it is done"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def running_broker_pid(settings: Settings) -> int | None:
    """The pid of the broker running on this data folder, or None if there is none."""
    try:
        pid = int(broker_pid_path(settings).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # A stale pid file could name any process by now: it must be mosquitto on our config.
    config = str(settings.broker_dir / "mosquitto.conf").encode()
    if not command or not command[0].endswith(b"mosquitto") or config not in command:
        return None
    return pid


def reload_certificates(settings: Settings, tls: TlsFiles | None = None) -> int | None:
    """Give the running broker of this data folder new copies of `tls` (default: pki.ensure) and make it
    read them (SIGHUP: Mosquitto reloads its certificates and keys; connected clients stay connected).
    Returns its pid, or None when no broker runs (the next start serves the new files)."""
    pid = running_broker_pid(settings)
    if pid is None:
        return None
    _reinstall(settings, tls, pid)
    return pid


def _reinstall(settings: Settings, tls: TlsFiles | None, pid: int) -> None:
    folder = broker_tls_dir(settings)
    owner = folder.stat()
    user = None if owner.st_uid == os.geteuid() else pwd.getpwuid(owner.st_uid)
    install_certificates(folder, tls or pki.ensure(settings), user)
    os.kill(pid, signal.SIGHUP)
    log.info("the broker (pid %d) reloads its certificates", pid)


def served_fingerprint(settings: Settings, timeout: float = 3.0) -> str | None:
    """The SHA-256 fingerprint of the certificate the TLS listener serves now, or None if none answers.

    Nothing is verified: this only tells which certificate is served (after a rotation, say).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        raw = socket.create_connection((_probe_host(settings.mqtt_tls_bind), settings.mqtt_tls_port), timeout)
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return pki.fingerprint_der(der) if der else None


def _probe_host(bind: str) -> str:
    """The address to probe a listener bound to `bind` on."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def _broker_user() -> pwd.struct_passwd | None:
    """The account mosquitto drops to when started as root, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        raise BrokerError(
            "there is no `mosquitto` user for the broker to run as: install the mosquitto package "
            "(it creates the user) or run the broker as an unprivileged user"
        ) from None


def _give_to(path: Path, user: pwd.struct_passwd | None) -> None:
    # A broker that cannot write its folders silently saves nothing, so it must own them.
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _can_enter(path: Path, user: pwd.struct_passwd) -> bool:
    """True if `user` can traverse `path` and every folder above it (not so under a 0700 home)."""
    for folder in (*reversed(path.parents), path):
        mode = folder.stat()
        if mode.st_uid == user.pw_uid:
            ok = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == user.pw_gid:
            ok = mode.st_mode & stat.S_IXGRP
        else:
            ok = mode.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
