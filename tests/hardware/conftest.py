"""Fixtures for the bench tests: a throwaway Mosquitto, the bench's event loop, a modem simulator with a
blocking AT client. (The Mosquitto fixture stands in until backend's hardened broker module can be used.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings, ModemSim

from hw_helpers import MOSQUITTO, AtClient, Mosquitto, on_loop


def _mosquitto(directory: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker shared by the tests that do not stop it."""
    yield from _mosquitto(tmp_path_factory.mktemp("mosquitto"))


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker for one test, which may stop and start it."""
    yield from _mosquitto(tmp_path)


@pytest.fixture(scope="session")
def bench_loop() -> Iterator[LoopThread]:
    """The event loop the bench objects live on, in a background thread."""
    with LoopThread("test-bench") as loop:
        yield loop


@pytest.fixture
def modem_settings() -> ModemSettings:
    """Fast settings, no boot URCs (tests that want them make their own modem)."""
    return ModemSettings(boot_urcs=False, gnss_ready_delay_s=0.05, mqtt_start_delay_s=0.0, data_timeout_s=5)


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
