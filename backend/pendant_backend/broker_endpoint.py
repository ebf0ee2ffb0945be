"""Where and how the backend's own MQTT clients (ingest, provisioning, the CLI) reach the broker.

The plain listener on loopback while it is on (PENDANT_MQTT_PLAIN); otherwise the TLS listener, trusting
only the CA the pendants trust and checking the broker's name: 127.0.0.1 (or ::1) when the TLS listener
can be reached on loopback and the project CA issued its certificate (which names both), the public
name (PENDANT_MQTT_PUBLIC_HOST) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pendant_backend import pki
from pendant_backend.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """An address of the broker, and the CA to verify it with (None: the plain loopback listener)."""

    host: str
    port: int
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        """mqtt://host:port or mqtts://host:port, for messages."""
        scheme = "mqtts" if self.ca_file is not None else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """The keywords `MqttLink` and `RequestSession` take for it: host, port and ca_file."""
        return {"host": self.host, "port": self.port, "ca_file": self.ca_file}


def backend_endpoint(settings: Settings) -> Endpoint:
    """How the backend connects: see the module's docstring."""
    if settings.mqtt_plain:
        return Endpoint(settings.mqtt_host, settings.mqtt_port)
    return Endpoint(tls_host(settings), settings.mqtt_tls_port, pki.ca_file(settings))


def tls_host(settings: Settings) -> str:
    """The host a client on this machine names to reach the TLS listener (and verifies it by)."""
    bind = settings.mqtt_tls_bind
    if settings.operator_tls:
        # The operator's certificate names the public name, not necessarily loopback.
        return settings.mqtt_public_host
    if bind in ("::", "::1"):
        return "::1"
    if bind in ("", "0.0.0.0", "127.0.0.1", "localhost"):
        return "127.0.0.1"
    return settings.mqtt_public_host
