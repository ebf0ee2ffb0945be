"""Every backend setting from the environment, and the private files (secrets) under the data folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read PENDANT_DATA_DIR, PENDANT_DB_URL, PENDANT_MQTT_HOST, PENDANT_MQTT_PORT, PENDANT_MOSQUITTO
        and PENDANT_DYNSEC_PLUGIN; anything unset takes its default."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("PENDANT_DATA_DIR") or "data").expanduser().resolve()
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
    def mqtt_address(self) -> str:
        """host:port, for messages."""
        return f"{self.mqtt_host}:{self.mqtt_port}"


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
