"""Small helpers shared by tests in every folder (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path

import leak_check

from pendant_backend.broker import Broker, BrokerSecrets
from pendant_backend.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different such ports. Asked one at a time, the kernel may hand the same one out twice
    (seen in CI: a broker given one port for two listeners failed with "Address already in use"), so
    all of them are held open together while they are chosen."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass
class BrokerFixture:
    """A running broker: its settings (data folder, port), its service accounts and the Broker itself
    (`broker.broker.kill()` then `.start()` simulates a crash and restart)."""

    settings: Settings
    # Not in the repr: pytest prints a failing test's fixtures, and these are passwords.
    secrets: BrokerSecrets = field(repr=False)
    broker: Broker

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


PASSWORD = "correct horse battery staple"


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that points the `pendant` CLI at a test's data folder, broker port and database."""
    return {
        "PENDANT_DATA_DIR": str(settings.data_dir),
        "PENDANT_MQTT_PORT": str(settings.mqtt_port),
        "PENDANT_MQTT_PLAIN": "on" if settings.mqtt_plain else "off",
        "PENDANT_MQTT_TLS_PORT": str(settings.mqtt_tls_port),
        "PENDANT_MQTT_TLS_BIND": settings.mqtt_tls_bind,
        "PENDANT_MQTT_PUBLIC_HOST": settings.mqtt_public_host,
        "PENDANT_TLS_CERT": settings.tls_cert,
        "PENDANT_TLS_KEY": settings.tls_key,
        "PENDANT_TLS_CA": settings.tls_ca,
        "PENDANT_DB_URL": settings.db_url,
    }


def run_cli(settings: Settings, *args: str, catch_exceptions: bool = False):  # noqa: ANN201
    """`pendant ARGS...` in-process (click's CliRunner) against `settings`; its click Result."""
    from click.testing import CliRunner

    from pendant_tools.cli import main

    result = CliRunner().invoke(main, list(args), env=cli_env(settings), catch_exceptions=catch_exceptions)
    leak_check.REGISTRY.add_output(f"pendant {' '.join(args)}", result.output)
    return result


def add_account(engine, username: str, *roles: str, password: str = PASSWORD) -> str:  # noqa: ANN001
    """An account holding `roles`, its one-time password already replaced by `password` (as its owner
    does at the first login); returns the password."""
    from pendant_backend import users

    _, one_time = users.add_user(engine, username=username, role_names=list(roles), actor="test")
    users.change_password(engine, username=username, old=one_time, new=password)
    leak_check.REGISTRY.add_secret(f"account {username}'s one-time password", one_time)
    leak_check.REGISTRY.add_secret(f"account {username}'s password", password)
    return password
