"""Every backend setting from the environment, and the private files (secrets) under the data folder."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pendant_backend import BackendError

DEFAULT_MQTT_HOST = "127.0.0.1"
DEFAULT_MQTT_PORT = 18830
DEFAULT_MQTT_TLS_PORT = 8883
# Where `pendant backend run` serves Prometheus metrics, on 127.0.0.1 (pendant_backend.metrics); 0: off.
DEFAULT_METRICS_PORT = 18890
_SWITCH_WORDS = {
    "1": True,
    "on": True,
    "true": True,
    "yes": True,
    "0": False,
    "off": False,
    "false": False,
    "no": False,
}
_DYNSEC_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


@dataclass(frozen=True)
class Settings:
    """Where the backend keeps its data and how it reaches the broker.

    Build it with `Settings.from_env()`; tests build it directly.
    """

    data_dir: Path
    db_url: str
    # The plain (unencrypted) listener: loopback only, for the backend and the bench; off when False.
    mqtt_host: str = DEFAULT_MQTT_HOST
    mqtt_port: int = DEFAULT_MQTT_PORT
    mqtt_plain: bool = True
    # The TLS listener the pendants use, and the name they connect to (the server certificate names it).
    mqtt_tls_port: int = DEFAULT_MQTT_TLS_PORT
    mqtt_tls_bind: str = "0.0.0.0"
    mqtt_public_host: str = "localhost"
    # Certificates the operator supplies (PEM paths); all empty: the project CA issues them (pki.py).
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    mosquitto_bin: str = "mosquitto"
    dynsec_plugin: str = ""
    # Health and escalation (docs/operations.md, "Fleet health").
    offline_after_missed: int = 3
    escalate_after_s: int = 60
    # 0: escalate again every escalate_after_s until someone acknowledges.
    escalate_max: int = 0
    rules_interval_s: float = 5.0
    fleet_firmware: str = ""
    # Notifications: empty means no webhook.
    webhook_url: str = ""
    # Retention, in days.
    retain_heartbeats_days: int = 30
    retain_locations_days: int = 90
    # The HTTP API for dispatch and police IT.
    api_host: str = "127.0.0.1"
    api_port: int = 18880
    # Prometheus metrics of `pendant backend run`, plain HTTP on 127.0.0.1 (0: none).
    metrics_port: int = DEFAULT_METRICS_PORT
    # Plain HTTP instead of HTTPS: allowed only on a loopback api_host (the demo, the browser tests).
    web_plain: bool = False
    # Console sessions: the hard end after login, and the idle time that ends one sooner.
    session_hours: int = 12
    session_idle_min: int = 30
    # The force's own map tiles ({z}/{x}/{y}); empty: the embedded offline outlines only.
    tile_url: str = ""
    tile_attribution: str = ""
    # A CSV of cell positions (OpenCellID's export, or mcc,mnc,lac,cid,lat,lon,range) for cell-only alarms.
    cell_db: str = ""
    # Where `npm ci` put the console's front-end packages (backend/frontend/node_modules).
    frontend_dir: Path = field(default_factory=lambda: default_frontend_dir())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the PENDANT_* variables of docs/operations.md; anything unset takes its default."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("PENDANT_DATA_DIR") or "data").expanduser().resolve()

        def number(name: str, default: int, lo: int, hi: int) -> int:
            text = env.get(name) or str(default)
            try:
                value = int(text)
            except ValueError:
                raise BackendError(f"{name} must be a whole number, not {text!r}") from None
            if not lo <= value <= hi:
                raise BackendError(f"{name} must be between {lo} and {hi}, not {value}")
            return value

        def port_number(name: str, default: int) -> int:
            text = env.get(name) or str(default)
            try:
                port = int(text)
            except ValueError:
                raise BackendError(f"{name} must be a port number, not {text!r}") from None
            if not 0 < port < 65536:
                raise BackendError(f"{name} must be between 1 and 65535, not {port}")
            return port

        def switch(name: str, default: bool) -> bool:
            text = (env.get(name) or "").strip().lower()
            if not text:
                return default
            if text not in _SWITCH_WORDS:
                raise BackendError(f"{name} must be on or off (1/0, true/false, yes/no), not {text!r}")
            return _SWITCH_WORDS[text]

        settings = cls(
            data_dir=data_dir,
            db_url=database_url(env.get("PENDANT_DB_URL") or "") or default_db_url(data_dir),
            mqtt_host=env.get("PENDANT_MQTT_HOST") or DEFAULT_MQTT_HOST,
            mqtt_port=port_number("PENDANT_MQTT_PORT", DEFAULT_MQTT_PORT),
            mqtt_plain=switch("PENDANT_MQTT_PLAIN", True),
            mqtt_tls_port=port_number("PENDANT_MQTT_TLS_PORT", DEFAULT_MQTT_TLS_PORT),
            mqtt_tls_bind=env.get("PENDANT_MQTT_TLS_BIND") or "0.0.0.0",
            mqtt_public_host=check_public_host(env.get("PENDANT_MQTT_PUBLIC_HOST") or "localhost"),
            tls_cert=env.get("PENDANT_TLS_CERT") or "",
            tls_key=env.get("PENDANT_TLS_KEY") or "",
            tls_ca=env.get("PENDANT_TLS_CA") or "",
            mosquitto_bin=env.get("PENDANT_MOSQUITTO") or find_mosquitto(),
            dynsec_plugin=env.get("PENDANT_DYNSEC_PLUGIN") or find_dynsec_plugin(),
            offline_after_missed=number("PENDANT_OFFLINE_AFTER_MISSED", 3, 1, 100),
            escalate_after_s=number("PENDANT_ESCALATE_AFTER_S", 60, 5, 86400),
            escalate_max=number("PENDANT_ESCALATE_MAX", 0, 0, 100_000),
            fleet_firmware=env.get("PENDANT_FLEET_FIRMWARE") or "",
            webhook_url=env.get("PENDANT_WEBHOOK_URL") or "",
            retain_heartbeats_days=number("PENDANT_RETAIN_HEARTBEATS_DAYS", 30, 1, 3650),
            retain_locations_days=number("PENDANT_RETAIN_LOCATIONS_DAYS", 90, 1, 3650),
            api_host=env.get("PENDANT_API_HOST") or "127.0.0.1",
            api_port=number("PENDANT_API_PORT", 18880, 1, 65535),
            metrics_port=number("PENDANT_METRICS_PORT", DEFAULT_METRICS_PORT, 0, 65535),
            web_plain=switch("PENDANT_WEB_PLAIN", False),
            session_hours=number("PENDANT_SESSION_HOURS", 12, 1, 24),
            session_idle_min=number("PENDANT_SESSION_IDLE_MIN", 30, 1, 24 * 60),
            tile_url=check_tile_url(env.get("PENDANT_TILE_URL") or ""),
            tile_attribution=env.get("PENDANT_TILE_ATTRIBUTION") or "",
            cell_db=env.get("PENDANT_CELL_DB") or "",
            frontend_dir=Path(env.get("PENDANT_FRONTEND_DIR") or default_frontend_dir()),
        )
        check_plain_listener(settings)
        return settings

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, *, mqtt_port: int = DEFAULT_MQTT_PORT, mqtt_tls_port: int | None = None
    ) -> Settings:
        """Settings with every default except the data folder and ports (for tests and demos).

        Everything stays on loopback: the TLS listener binds 127.0.0.1, on `mqtt_tls_port` or, if None,
        a port that was free a moment ago (so that tests running side by side never meet on 8883), the
        console is asked for in plain HTTP (web_plain), which web_tls allows on loopback only, and no
        metrics are served (a fixed port would collide the same way).
        """
        data_dir = Path(data_dir).resolve()
        return cls(
            data_dir=data_dir,
            db_url=default_db_url(data_dir),
            mqtt_port=mqtt_port,
            mqtt_tls_port=free_loopback_port() if mqtt_tls_port is None else mqtt_tls_port,
            mqtt_tls_bind="127.0.0.1",
            web_plain=True,
            metrics_port=0,
            mosquitto_bin=find_mosquitto(),
            dynsec_plugin=find_dynsec_plugin(),
        )

    @property
    def secrets_dir(self) -> Path:
        """Folder of private files (mode 0700): broker account passwords."""
        return self.data_dir / "secrets"

    @property
    def broker_secrets_path(self) -> Path:
        """JSON with the admin and backend broker accounts (mode 0600)."""
        return self.secrets_dir / "broker.json"

    @property
    def broker_dir(self) -> Path:
        """The broker's config, log, dynamic-security file and persistence database."""
        return self.data_dir / "broker"

    @property
    def devices_dir(self) -> Path:
        """Provisioned device configs, one folder per device id."""
        return self.data_dir / "devices"

    @property
    def signing_key_path(self) -> Path:
        """The backend's HMAC key for bench-test reports and case exports (created on first use)."""
        return self.secrets_dir / "signing.key"

    @property
    def webhook_key_path(self) -> Path:
        """The webhook's shared HMAC secret (created on first use; give it to the receiver)."""
        return self.secrets_dir / "webhook.key"

    @property
    def tls_dir(self) -> Path:
        """The project CA and the certificates it issued (mode 0700; the CA key 0600): see pki.py."""
        return self.data_dir / "tls"

    @property
    def operator_tls(self) -> bool:
        """True when the operator supplies the certificates (PENDANT_TLS_CERT, _KEY and _CA)."""
        return bool(self.tls_cert or self.tls_key or self.tls_ca)

    @property
    def mqtt_address(self) -> str:
        """host:port of the plain listener, for messages."""
        return f"{self.mqtt_host}:{self.mqtt_port}"

    @property
    def mqtt_tls_address(self) -> str:
        """bind:port of the TLS listener, for messages."""
        return f"{self.mqtt_tls_bind}:{self.mqtt_tls_port}"


def is_loopback(host: str) -> bool:
    """True for `localhost` and the loopback addresses (127.0.0.0/8, ::1); False for anything else."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plain_listener(settings: Settings) -> None:
    """Raise BackendError if the plain (unencrypted) MQTT listener would listen beyond this machine."""
    if settings.mqtt_plain and not is_loopback(settings.mqtt_host):
        raise BackendError(
            f"the plain MQTT listener may only listen on loopback, not on {settings.mqtt_host}: pendants "
            "connect over TLS (PENDANT_MQTT_TLS_PORT); set PENDANT_MQTT_HOST=127.0.0.1, or switch the "
            "plain listener off with PENDANT_MQTT_PLAIN=off"
        )


def check_public_host(name: str) -> str:
    """The name pendants connect to: a DNS name or an IP address, without a port or white space."""
    name = name.strip()
    if not name or any(c.isspace() for c in name) or "/" in name or name.count(":") == 1:
        raise BackendError(
            f"PENDANT_MQTT_PUBLIC_HOST must be a host name or IP address (no port), not {name!r}"
        )
    return name


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_frontend_dir() -> Path:
    """backend/frontend/node_modules of this checkout, where scripts/setup.sh runs `npm ci`."""
    return Path(__file__).resolve().parents[1] / "frontend" / "node_modules"


def check_tile_url(url: str) -> str:
    """A tile server URL template with {z}, {x} and {y}, over http(s); '' for none."""
    if not url:
        return ""
    if not url.startswith(("http://", "https://", "/")) or not all(p in url for p in ("{z}", "{x}", "{y}")):
        raise BackendError(
            f"PENDANT_TILE_URL must be an http(s) URL with {{z}}, {{x}} and {{y}} in it, not {url!r}"
        )
    return url


# The databases the project runs on (SQLAlchemy's drivers: `postgresql` means psycopg 3 here, db.py).
_DATABASE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")
_DATABASE_EXAMPLES = "sqlite:////var/lib/pendant/pendant.db or postgresql://user:password@host/dbname"


def database_url(text: str) -> str:
    """PENDANT_DB_URL checked: "" (unset), or a SQLite or PostgreSQL URL; BackendError otherwise (the
    message never shows the password)."""
    text = text.strip()
    if not text:
        return ""
    try:
        url = make_url(text)
    except ArgumentError:
        raise BackendError(
            f"PENDANT_DB_URL cannot be read as a database URL: give one like {_DATABASE_EXAMPLES}"
        ) from None
    if url.drivername not in _DATABASE_DRIVERS:
        shown = url.render_as_string(hide_password=True)
        raise BackendError(
            f"PENDANT_DB_URL {shown} names a database this project does not run on ({url.drivername}): "
            f"use SQLite or PostgreSQL, e.g. {_DATABASE_EXAMPLES}"
        )
    return text


def default_db_url(data_dir: Path) -> str:
    """SQLite file in the data folder."""
    return f"sqlite:///{Path(data_dir) / 'pendant.db'}"


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return (
        shutil.which("mosquitto")
        or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        or "mosquitto"
    )


def find_dynsec_plugin() -> str:
    """Path of the dynamic-security plugin shipped with Mosquitto, or '' if none was found."""
    for candidate in _DYNSEC_PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return ""


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600, creating its folder with mode 0700.

    The file is never readable by others, not even for a moment: it is created 0600 before anything
    is written, then renamed over the old one.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_owner_only(path, data)


def write_owner_only(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 from the first byte; the folder keeps its mode
    (for a file the user names, such as a case export in their own folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_private_json(path: Path, value: Any) -> None:
    """`write_private_file` for a JSON document (indented, for people who read it)."""
    write_private_file(path, (json.dumps(value, indent=2) + "\n").encode())


def read_private_json(path: Path) -> Any:
    """Read a JSON file written by `write_private_json`; raise BackendError if it is missing or broken."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BackendError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None


def secret_key(path: Path) -> bytes:
    """The 256-bit key kept in `path` (hex, mode 0600), created at random on first use."""
    path = Path(path)
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise BackendError(
            f"{path} is damaged: it must hold one hex key (restore it from a backup)"
        ) from None
    key = secrets.token_bytes(32)
    if not create_private_once(path, (key.hex() + "\n").encode()):
        return secret_key(path)
    return key


def create_private_once(path: Path, data: bytes) -> bool:
    """Create `path` (mode 0600, its folder 0700) holding `data`, unless it exists: False then, and the
    file is left as it is. When two processes create a key at once, both go on with the winner's."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # link() refuses to replace, unlike rename()
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True
