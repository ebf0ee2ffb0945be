"""Writes the Mosquitto config and the initial dynamic-security file, and runs the broker as a subprocess."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pendant_backend import BackendError
from pendant_backend.payloads import BACKEND_TOPICS, DEVICE_TOPICS, topic_for
from pendant_backend.settings import Settings, read_private_json, write_private_json

log = logging.getLogger(__name__)

ADMIN_USERNAME = "pendant_admin"
BACKEND_USERNAME = "pendant_backend"
# Underscores cannot occur in a device id, so no device can ever be provisioned under these names.
_ADMIN_ROLE = "pendant_admin"
_BACKEND_ROLE = "pendant_backend"

DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"

# Mosquitto's own defaults for the dynamic-security file (see mosquitto_ctrl dynsec init).
_DYNSEC_SALT_BYTES = 12
_DYNSEC_ITERATIONS = 101


class BrokerError(BackendError):
    """The broker could not be configured, started or stopped."""


@dataclass(frozen=True)
class BrokerSecrets:
    """The two service accounts of the broker, as saved in <data>/secrets/broker.json."""

    admin_username: str
    admin_password: str
    backend_username: str
    backend_password: str

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            "admin": {"username": self.admin_username, "password": self.admin_password},
            "backend": {"username": self.backend_username, "password": self.backend_password},
        }


def load_secrets(settings: Settings) -> BrokerSecrets:
    """Read the broker's service accounts; raise BrokerError saying how to create them if absent."""
    path = settings.broker_secrets_path
    if not path.exists():
        raise BrokerError(f"no broker accounts in {path}: run `pendant broker run` once to create them")
    data = read_private_json(path)
    try:
        return BrokerSecrets(
            admin_username=data["admin"]["username"],
            admin_password=data["admin"]["password"],
            backend_username=data["backend"]["username"],
            backend_password=data["backend"]["password"],
        )
    except (KeyError, TypeError):
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


def dynsec_document(broker_secrets: BrokerSecrets) -> dict[str, object]:
    """The initial dynamic-security file: the admin and the backend account with their roles.

    Everything not granted here is refused (every default access is false).
    """
    admin_acls = [
        _acl("publishClientSend", DYNSEC_TOPIC),
        _acl("subscribeLiteral", f"{DYNSEC_TOPIC}/response"),
        _acl("publishClientReceive", f"{DYNSEC_TOPIC}/response"),
    ]
    backend_acls = []
    for leaf in DEVICE_TOPICS:
        backend_acls.append(_acl("subscribeLiteral", topic_for("+", leaf)))
        backend_acls.append(_acl("publishClientReceive", topic_for("+", leaf)))
    backend_acls += [_acl("publishClientSend", topic_for("+", leaf)) for leaf in BACKEND_TOPICS]
    return {
        "clients": [
            {
                "username": broker_secrets.admin_username,
                "textName": "pendant provisioning (dynamic-security API only)",
                **dynsec_password_fields(broker_secrets.admin_password),
                "roles": [{"rolename": _ADMIN_ROLE}],
            },
            {
                "username": broker_secrets.backend_username,
                "textName": "pendant backend ingest",
                # Bound so that only one backend holds the persistent session at a time.
                "clientid": broker_secrets.backend_username,
                **dynsec_password_fields(broker_secrets.backend_password),
                "roles": [{"rolename": _BACKEND_ROLE}],
            },
        ],
        "groups": [],
        "roles": [
            {"rolename": _ADMIN_ROLE, "acls": admin_acls},
            {"rolename": _BACKEND_ROLE, "acls": backend_acls},
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

    `start()` writes the config (and, on first run, the accounts), starts mosquitto and waits until it
    accepts connections; `stop()` ends it cleanly so it saves its queues; `kill()` is SIGKILL, for tests.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        """True while the mosquitto process started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def prepare(self) -> BrokerSecrets:
        """Create the folders, the accounts (first run only) and the config; return the accounts."""
        settings = self.settings
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
        # The log names clients and their addresses: for the broker and root only.
        os.close(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        _give_to(self.log_path, broker_user)
        self.config_path.write_text(self.render_config(broker_user))
        return broker_secrets

    def _ensure_accounts(self, broker_user: pwd.struct_passwd | None) -> BrokerSecrets:
        secrets_path = self.settings.broker_secrets_path
        have_secrets, have_dynsec = secrets_path.exists(), self.dynsec_path.exists()
        if have_secrets and have_dynsec:
            return load_secrets(self.settings)
        if have_secrets != have_dynsec:
            present, missing = (
                (secrets_path, self.dynsec_path) if have_secrets else (self.dynsec_path, secrets_path)
            )
            raise BrokerError(
                f"{present} exists but {missing} does not: restore it from a backup, or delete both "
                "to start over with new accounts (every device must then be provisioned again)"
            )
        broker_secrets = BrokerSecrets(ADMIN_USERNAME, new_password(), BACKEND_USERNAME, new_password())
        write_private_json(secrets_path, broker_secrets.to_json())
        write_private_json(self.dynsec_path, dynsec_document(broker_secrets))
        _give_to(self.dynsec_path, broker_user)
        log.info("created the broker accounts in %s", secrets_path)
        return broker_secrets

    def render_config(self, broker_user: pwd.struct_passwd | None) -> str:
        """The text of mosquitto.conf for these settings."""
        s = self.settings
        lines = [
            "# Written by pendant_backend.broker on every start: edit the settings, not this file.",
            "per_listener_settings false",
            f"listener {s.mqtt_port} {s.mqtt_host}",
            "allow_anonymous false",
            f"auth_plugin {s.dynsec_plugin}",
            f"auth_opt_config_file {self.dynsec_path}",
            # Queued alarms for an offline backend must survive a broker restart: save on every change.
            "persistence true",
            f"persistence_location {self.persistence_dir}",
            "autosave_interval 1",
            "autosave_on_changes true",
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
        broker_secrets = self.prepare()
        if _accepts_connections(self.settings.mqtt_host, self.settings.mqtt_port):
            raise BrokerError(
                f"something already listens on {self.settings.mqtt_address} (another broker?): "
                "stop it, or choose another port with PENDANT_MQTT_PORT"
            )
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
            if _accepts_connections(self.settings.mqtt_host, self.settings.mqtt_port):
                log.info("broker listening on %s (pid %d)", self.settings.mqtt_address, self._process.pid)
                return broker_secrets
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(
                    f"mosquitto did not listen on {self.settings.mqtt_address} within {timeout:.0f} s; "
                    f"the end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        if self._process is None:
            raise BrokerError("the broker is not running")
        return self._process.wait()

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

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
