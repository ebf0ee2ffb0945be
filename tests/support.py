"""Small helpers shared by tests in every folder (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import leak_check

from pendant_backend.broker import Broker, BrokerSecrets
from pendant_backend.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    return free_ports(1)[0]


# Ports the tests listen on come from below the kernel's ephemeral range (32768-60999 here), which every
# outgoing connection draws from: a port the kernel handed out by `bind(0)` and released could be taken
# by another worker's client before the broker meant for it binds (seen in CI with two workers). Each
# pytest-xdist worker has its own slice, and a process never hands the same port out twice in a row.
_FIRST_PORT, _SLICE = 20000, 3000
_next_port = [0]


def _slice_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return _FIRST_PORT + (index % 4) * _SLICE


def free_ports(count: int) -> list[int]:
    """`count` different such ports, each free (bound and released) when chosen."""
    start, found = _slice_start(), []
    for _ in range(_SLICE):
        port = start + _next_port[0] % _SLICE
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # something listens there (or a socket is lingering): the next one
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no free port in 127.0.0.1:{start}-{start + _SLICE - 1}")


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
