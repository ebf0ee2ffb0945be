"""Every backend setting from the environment, and the private files (secrets) under the data folder."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pendant_backend import BackendError

DEFAULT_MQTT_HOST = "127.0.0.1"
DEFAULT_MQTT_PORT = 18830
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
    mqtt_host: str = DEFAULT_MQTT_HOST
    mqtt_port: int = DEFAULT_MQTT_PORT
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

        port_text = env.get("PENDANT_MQTT_PORT") or str(DEFAULT_MQTT_PORT)
        try:
            port = int(port_text)
        except ValueError:
            raise BackendError(f"PENDANT_MQTT_PORT must be a port number, not {port_text!r}") from None
        if not 0 < port < 65536:
            raise BackendError(f"PENDANT_MQTT_PORT must be between 1 and 65535, not {port}")
        return cls(
            data_dir=data_dir,
            db_url=env.get("PENDANT_DB_URL") or default_db_url(data_dir),
            mqtt_host=env.get("PENDANT_MQTT_HOST") or DEFAULT_MQTT_HOST,
            mqtt_port=port,
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
            session_hours=number("PENDANT_SESSION_HOURS", 12, 1, 24),
            session_idle_min=number("PENDANT_SESSION_IDLE_MIN", 30, 1, 24 * 60),
            tile_url=check_tile_url(env.get("PENDANT_TILE_URL") or ""),
            tile_attribution=env.get("PENDANT_TILE_ATTRIBUTION") or "",
            cell_db=env.get("PENDANT_CELL_DB") or "",
            frontend_dir=Path(env.get("PENDANT_FRONTEND_DIR") or default_frontend_dir()),
        )

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, mqtt_port: int = DEFAULT_MQTT_PORT) -> Settings:
        """Settings with every default except the data folder and port (for tests and demos)."""
        data_dir = Path(data_dir).resolve()
        return cls(
            data_dir=data_dir,
            db_url=default_db_url(data_dir),
            mqtt_port=mqtt_port,
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
    def mqtt_address(self) -> str:
        """host:port, for messages."""
        return f"{self.mqtt_host}:{self.mqtt_port}"


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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (key.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() refuses to replace: if two processes create the key at once, both end up with the winner's.
        os.link(tmp, path)
    except FileExistsError:
        return secret_key(path)
    finally:
        os.unlink(tmp)
    return key
