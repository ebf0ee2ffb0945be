"""Shared fixtures: a real Mosquitto broker on a free port, provisioned devices, MQTT test clients and the
backend service. Every process and thread a fixture starts is ended at teardown.

    def test_something(broker, provision, mqtt_client, backend):
        config = provision("pd-0001")                 # the device's config.json as a dict
        pendant = mqtt_client(config)                 # connected like a pendant (MQTT 3.1.1, persistent)
        pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
        pendant.publish("pendant/v1/pd-0001/alarm", payload)
        ack = pendant.expect("pendant/v1/pd-0001/alarm/ack")
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import leak_check
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.db import make_engine
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings
from pendant_hardware import virtual_pendant

from support import BrokerFixture, free_port

PROTOCOL_EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "protocol-examples"
WAIT_S = 10.0


# ---- databases: every database-touching test runs on SQLite and on PostgreSQL ------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: runs on the private PostgreSQL cluster of tests/conftest.py"
    )


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


# ---- two workers: scripts/test runs pytest-xdist (`-n 2`) -----------------------------------------------
try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # a plain `pytest` without the plugin runs everything in one process
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:

    class ModuleScheduling(LoadScopeScheduling):
        """One worker takes a whole module, in order: its shared fixtures start once, and its tests may
        build on each other (test_console_browser). All end-to-end tests are one unit: the secret check
        that ends them (tests/e2e/test_no_secrets_in_output.py) reads a registry kept in their process."""

        def _split_scope(self, nodeid: str) -> str:
            return "tests/e2e" if nodeid.startswith("tests/e2e/") else nodeid.split("::", 1)[0]

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
        return ModuleScheduling(config, log)


@pytest.fixture(autouse=True)
def _no_memory_trouble() -> Iterator[None]:
    """Fail any test (hardware, end to end, tools) during which a virtual pendant's firmware said it ran
    short of heap (a MemoryError, `short of memory`, a memory reboot): it must live within its budget."""
    seen = len(virtual_pendant.MEMORY_TROUBLE_LINES)
    yield
    new = virtual_pendant.MEMORY_TROUBLE_LINES[seen:]
    assert not new, "the firmware ran short of memory:\n" + "\n".join(new)


# Commands set these loggers' levels for the rest of the process (tools/pendant_tools/progress.py keeps
# the backend's INFO lines off a technician's terminal): put them back, so that no test depends on which
# modules ran before it in its worker.
_COMMAND_LOGGERS = ("pendant_backend", "alembic")


@pytest.fixture(autouse=True)
def _logger_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in _COMMAND_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(command: list[str]) -> list[str]:
    # The server refuses to run as root: as root, run it as the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresCluster:
    """A private PostgreSQL server on 127.0.0.1 (trust authentication, for tests only)."""

    port: int
    data_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(sql)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Starts PostgreSQL (Debian's server) once for the session in a private folder on a free port;
    stops it and deletes the folder at the end. Skips when the server is not installed."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): apt-get install postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="pendant-pg-"))
    data_dir, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresCluster(port=port, data_dir=data_dir)
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: PostgresCluster) -> str:
    """A database migrated to the newest schema once, copied for every test (CREATE DATABASE ... TEMPLATE)."""
    postgres_cluster.admin("CREATE DATABASE pendant_template")
    engine = make_engine(postgres_cluster.url("pendant_template"))
    engine.dispose()
    return "pendant_template"


@pytest.fixture(scope="session")
def sqlite_template() -> Iterator[Path]:
    """A SQLite file migrated to the newest schema once, copied for every test."""
    folder = Path(tempfile.mkdtemp(prefix="pendant-sqlite-"))
    path = folder / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    engine.dispose()
    yield path
    shutil.rmtree(folder, ignore_errors=True)


_database_numbers = iter(range(1, 1_000_000))


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at the newest schema: a SQLite file, or a PostgreSQL database on the private
    cluster. Parametrised: a test that uses it runs once on each."""
    if request.param == "sqlite":
        path = tmp_path / "pendant.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        os.chmod(path, 0o600)
        return f"sqlite:///{path}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    template = request.getfixturevalue("postgres_template")
    name = f"pendant_{os.getpid()}_{next(_database_numbers)}"
    for attempt in range(50):
        try:
            cluster.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
            break
        except Exception:  # the template is briefly in use by another connection: try again
            if attempt == 49:
                raise
            time.sleep(0.1)
    return cluster.url(name)


@pytest.fixture
def engine(db_url: str):
    """An engine on `db_url` (both databases), disposed at teardown."""
    instance = make_engine(db_url)
    yield instance
    instance.dispose()


@pytest.fixture
def pendant_data_dir() -> Iterator[Path]:
    """A fresh data folder the broker's user can enter (pytest's own tmp folders are 0700 to root)."""
    path = Path(tempfile.mkdtemp(prefix="pendant-test-"))
    os.chmod(path, 0o711)
    yield path
    leak_check.REGISTRY.harvest(path)  # its secrets and logs, for the end-to-end suite's secret check
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pendant_settings(pendant_data_dir: Path) -> Settings:
    """Project settings on the fresh data folder and a free port (the broker is not started); SQLite."""
    return Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())


@pytest.fixture
def any_db_settings(pendant_settings: Settings, db_url: str) -> Settings:
    """`pendant_settings` on both databases (parametrised by `db_url`): for the `broker_on` fixture."""
    return dataclasses.replace(pendant_settings, db_url=db_url)


@pytest.fixture
def broker(pendant_settings: Settings) -> Iterator[BrokerFixture]:
    """Mosquitto with the project's config and accounts, started on `pendant_settings`; killed at teardown."""
    instance = Broker(pendant_settings)
    broker_secrets = instance.start()
    try:
        yield BrokerFixture(pendant_settings, broker_secrets, instance)
    finally:
        instance.kill()


@pytest.fixture
def broker_any_db(any_db_settings: Settings) -> Iterator[BrokerFixture]:
    """`broker`, with settings whose database is SQLite or PostgreSQL (the test runs on both)."""
    instance = Broker(any_db_settings)
    broker_secrets = instance.start()
    try:
        yield BrokerFixture(any_db_settings, broker_secrets, instance)
    finally:
        instance.kill()


@pytest.fixture
def provision(broker: BrokerFixture) -> Callable[..., dict[str, Any]]:
    """`provision(device_id)` creates the device's broker account and returns its config.json dict."""

    def _provision(device_id: str, **kwargs: Any) -> dict[str, Any]:
        return provision_device(broker.settings, device_id, **kwargs)

    return _provision


@pytest.fixture
def backend(broker: BrokerFixture) -> Iterator[BackendService]:
    """The backend service, connected and subscribed; stopped at teardown."""
    service = BackendService(broker.settings)
    service.start()
    try:
        assert service.wait_ready(WAIT_S), "the backend did not subscribe within 10 s"
        yield service
    finally:
        service.stop()


class MqttTestClient:
    """A paho client for tests: connect, publish and wait for the broker's answer, subscribe and
    read what arrives. Reconnects quickly after a broker restart."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        mqtt5: bool,
        clean: bool,
    ) -> None:
        self.host, self.port, self.mqtt5 = host, port, mqtt5
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.disconnected = threading.Event()
        self._done: dict[int, threading.Event] = {}
        self._topics: list[tuple[str, int]] = []
        self._results: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
            clean_session=None if mqtt5 else clean,
        )
        self.clean = clean
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_publish = lambda c, u, mid, rc, p: self._finish(mid, rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._finish(mid, rcs)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connack.put(reason)
        if reason.is_failure:
            client.disconnect()  # refused: no automatic retries
            return
        self.disconnected.clear()
        # As the firmware does: subscribe again on every connect, whatever the broker kept.
        for topic, qos in self._topics:
            client.subscribe(topic, qos=qos)

    def _finish(self, mid: int, result: Any) -> None:
        with self._lock:
            self._results[mid] = result
            self._done.setdefault(mid, threading.Event()).set()

    def _wait(self, mid: int, what: str, timeout: float) -> Any:
        with self._lock:
            done = self._done.setdefault(mid, threading.Event())
        assert done.wait(timeout), f"no answer from the broker to {what} within {timeout} s"
        with self._lock:
            return self._results.pop(mid)

    def connect(self, timeout: float = WAIT_S) -> ReasonCode:
        """Connect and return the CONNACK reason (a failure for a refused connection)."""
        if self.mqtt5:
            self.client.connect(self.host, self.port, keepalive=60, clean_start=self.clean)
        else:
            self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        return self.connack.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, timeout: float = WAIT_S) -> Any:
        """Publish and wait until the broker took it (PUBACK); return the PUBACK reason (MQTT 5)."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            return None
        return self._wait(info.mid, f"PUBLISH on {topic}", timeout)

    def subscribe(self, topic: str, *, qos: int = 1, timeout: float = WAIT_S) -> ReasonCode:
        """Subscribe and return the SUBACK reason (`is_failure` when the broker refused it)."""
        result, mid = self.client.subscribe(topic, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS, paho.error_string(result)
        reason = self._wait(mid, f"SUBSCRIBE to {topic}", timeout)[0]
        if not reason.is_failure:
            self._topics.append((topic, qos))
        return reason

    def expect(self, topic: str | None = None, timeout: float = WAIT_S) -> paho.MQTTMessage:
        """The next message (on `topic`, if given; others before it are dropped)."""
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no message{f' on {topic}' if topic else ''} within {timeout} s"
                ) from None
            if topic is None or message.topic == topic:
                return message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_client(broker: BrokerFixture) -> Iterator[Callable[..., MqttTestClient]]:
    """`mqtt_client(config)` connects like the pendant of a provisioned `config` (MQTT 3.1.1, client id =
    username = device id, persistent session). Keywords override: `username`, `password`, `client_id`,
    `mqtt5`, `clean`, `connect=False` (then call `.connect()` and check its reason yourself)."""
    clients: list[MqttTestClient] = []

    def _make(
        config: dict[str, Any] | None = None, *, connect: bool = True, **overrides: Any
    ) -> MqttTestClient:
        options: dict[str, Any] = {
            "username": None,
            "password": None,
            "client_id": "",
            "mqtt5": False,
            "clean": True,
        }
        if config is not None:
            mqtt = config["mqtt"]
            options.update(
                username=mqtt["user"], password=mqtt["password"], client_id=config["device_id"], clean=False
            )
        options.update(overrides)
        client = MqttTestClient(host=broker.settings.mqtt_host, port=broker.settings.mqtt_port, **options)
        clients.append(client)
        if connect:
            reason = client.connect()
            assert not reason.is_failure, f"the broker refused {options['username']!r}: {reason}"
        return client

    yield _make
    for client in clients:
        client.close()


@pytest.fixture
def protocol_examples() -> Path:
    """docs/protocol-examples: the message contract shared with the firmware."""
    return PROTOCOL_EXAMPLES
