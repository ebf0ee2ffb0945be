"""Fixtures for the bench tests: the project's broker with device accounts for AT-level tests, the bench's
event loop, a modem simulator with a blocking AT client. Whole virtual pendants use tests/conftest.py's
`broker`; the TLS tests (test_modem_tls.py) run their own Mosquitto, as the project's has no TLS listener."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.settings import Settings
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings, ModemSim

from hw_helpers import MOSQUITTO, AtClient, BenchBroker, Mosquitto, on_loop
from support import BrokerFixture, free_port

AT_DEVICES = ("pd-0001", "pd-0042")  # the device ids the AT-level tests connect as


def bench_broker_for(broker: BrokerFixture) -> BenchBroker:
    """Provision AT_DEVICES on a running project broker; what the AT-level tests need of it."""
    passwords = {
        device_id: provision_device(broker.settings, device_id)["mqtt"]["password"]
        for device_id in AT_DEVICES
    }
    secrets = broker.secrets
    return BenchBroker(
        port=broker.settings.mqtt_port,
        passwords=passwords,
        backend_login=(secrets.backend_username, secrets.backend_password),
    )


@pytest.fixture(scope="session")
def bench_broker() -> Iterator[BenchBroker]:
    """The project's broker (generated config, per-device accounts, no anonymous access), started once
    for the AT-level tests that do not stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix="pendant-hw-broker-"))
    os.chmod(data_dir, 0o711)  # the broker's user must be able to enter it
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port())
    instance = Broker(settings)
    try:
        secrets = instance.start()
        yield bench_broker_for(BrokerFixture(settings, secrets, instance))
    finally:
        instance.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def anonymous_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A throwaway Mosquitto that lets anyone do anything, for the one behaviour the project's broker does
    not allow a device: UNSUBSCRIBE (its device roles grant no unsubscribe ACL, and MQTT 3.1.1's UNSUBACK
    cannot say so, so the unsubscribe is silently ignored)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    instance = Mosquitto(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def own_bench_broker(broker: BrokerFixture) -> tuple[BenchBroker, BrokerFixture]:
    """The project's broker for one test, which may kill and start it (`fixture.broker.kill()`)."""
    return bench_broker_for(broker), broker


@pytest.fixture(scope="session")
def bench_loop() -> Iterator[LoopThread]:
    """The event loop the bench objects live on, in a background thread."""
    with LoopThread("test-bench") as loop:
        yield loop


@pytest.fixture
def modem_settings() -> ModemSettings:
    """Fast settings, no boot URCs (tests that want them make their own modem)."""
    return ModemSettings(
        boot_urcs=False, gnss_ready_delay_s=0.05, mqtt_start_delay_s=0.0, data_timeout_s=5, boot_delay_s=0.0
    )


@pytest.fixture
def modem(bench_loop: LoopThread, modem_settings: ModemSettings) -> Iterator[ModemSim]:
    """A running modem simulator."""
    sim = on_loop(bench_loop, ModemSim, modem_settings)
    bench_loop.run(sim.start())
    yield sim
    bench_loop.run(sim.stop())


@pytest.fixture
def at(modem: ModemSim) -> Iterator[AtClient]:
    """A blocking AT client connected to `modem`, echo still on."""
    client = AtClient(modem.port)
    yield client
    client.close()
