"""The pendant over TLS, end to end on real parts: the real firmware (MicroPython, 128K heap) verifies the
broker through the simulated A7670 (a real TLS handshake against the project's Mosquitto, with the CA
that provisioning put beside config.json), and the stories of a server that cannot prove it is ours.

- Over TLS with the project CA: press -> alarm stored -> ack at the pendant -> an operator takes it and
  the pendant vibrates `acknowledged`.
- The broker's certificate comes from a foreign CA (operator-supplied files): the pendant refuses it and
  says why on its console, the alarm goes out by SMS and by call, stays on flash, and once the real
  certificate is back it is delivered too, stored once.
- A certificate from the right CA that has expired: refused as the foreign one (the pendant's modem checks
  the dates once it knows the time, which the network gives it). One for another name: accepted, as the
  A7670 accepts it (it checks the chain, not the name: modem_sim/tls.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pendant_backend import configs, pki
from pendant_backend.accounts import provision_device
from pendant_backend.alarms import acknowledge_alarm
from pendant_backend.broker import Broker
from pendant_backend.db import engine_for
from pendant_backend.pki import TlsFiles
from pendant_backend.queries import list_alarms
from pendant_backend.service import BackendService
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_host import BackgroundSimHost

from support import BrokerFixture

pytestmark = pytest.mark.e2e

DEVICE = "pd-0001"
PRESS_MS = 2500
BOOT_S = 90  # firmware build + boot + registration + TLS connect, on a loaded 2-core machine
ACK_S = 60
SMS_TO, CALL_TO = "+31612345678", "+31699999999"
REFUSED = "mqtt: the server's certificate is not from our CA, or is out of date (TLS handshake failed, 32)"


@pytest.fixture
def pendant(broker: BrokerFixture, backend: BackendService) -> Iterator[BackgroundSimHost]:
    """One virtual pendant provisioned over TLS (config.json and ca.pem), online, with fallback numbers
    in its config (applied once it connected)."""
    config = provision_device(broker.settings, DEVICE)
    configs.set_config(
        engine_for(broker.settings),
        scope=DEVICE,
        changes={"sms": [SMS_TO], "call": [CALL_TO], "ack_timeout_s": 5},
    )

    def modem(device_id: str) -> ModemSettings:
        return ModemSettings.for_device(device_id, call_answer_s=0.5, call_outcomes={"*": "answer"})

    with BackgroundSimHost(broker.data_dir, [config], modem_settings=modem) as sim:
        sim.wait_for_mqtt(DEVICE, timeout=BOOT_S)
        sim.wait_for_line(DEVICE, "app: config_applied", timeout=ACK_S)
        yield sim


def stored_alarms(broker: BrokerFixture) -> list[Any]:
    return list(reversed(list_alarms(engine_for(broker.settings), device_id=DEVICE, limit=100)))


def outbox(broker: BrokerFixture) -> list[str]:
    folder = broker.data_dir / "sim" / DEVICE / "flash" / "outbox"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def console(broker: BrokerFixture) -> str:
    return (broker.data_dir / "sim" / DEVICE / "console.log").read_text()


def project_ca(settings: Any) -> pki.Issued:
    """The project CA of the data folder (its key too: these tests issue bad certificates from it)."""
    folder = settings.tls_dir
    cert = pki.load_certs(folder / pki.CA_CERT, "the project CA")[0]
    return pki.Issued(pki.load_key(folder / pki.CA_KEY, "the project CA key"), cert)


def write_files(folder: Path, ca: pki.Issued, server: pki.Issued) -> TlsFiles:
    """The CA certificate, a server certificate and its key as PEM files for a broker to serve."""
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_cert.write_bytes(pki.pem_cert(ca.cert))
    files.server_cert.write_bytes(pki.pem_cert(server.cert))
    files.server_key.write_bytes(pki.pem_key(server.key))
    files.server_key.chmod(0o600)
    return files


@dataclasses.dataclass
class Swap:
    """Replaces the project's broker by another on the same data folder, ports and accounts (a server
    with other certificates) and back; remembers the pendant's console line count at the swap."""

    broker: BrokerFixture
    sim: BackgroundSimHost
    replacement: Broker | None = None
    seen: int = 0

    def to(self, replacement: Broker) -> None:
        self.seen = self.sim.pendant(DEVICE).line_count
        self.broker.broker.stop()
        self.replacement = replacement
        replacement.start()

    def back(self) -> None:
        if self.replacement is not None:
            self.replacement.stop()
            self.replacement = None
            self.broker.broker.start()


@pytest.fixture
def swap(broker: BrokerFixture, pendant: BackgroundSimHost) -> Iterator[Swap]:
    """A Swap; a replacement still running at the end is stopped."""
    swapper = Swap(broker, pendant)
    yield swapper
    if swapper.replacement is not None:
        swapper.replacement.stop()


def refusal_and_fallback(swap: Swap) -> str:
    """The pendant, online a moment ago, meets a server it cannot trust: it says so once per try, and a
    press goes out by SMS and call while the alarm stays on flash. Returns the alarm's id."""
    sim, broker = swap.sim, swap.broker
    line = sim.wait_for_line(DEVICE, "TLS handshake failed", after=swap.seen, timeout=BOOT_S)
    assert line.endswith(REFUSED), line
    sim.wait_for_line(DEVICE, "mqtt: offline, retry in", after=swap.seen, timeout=ACK_S)
    assert not sim.pendant(DEVICE).mqtt_connected
    events = len(sim.pendant(DEVICE).events)
    sim.press(DEVICE, PRESS_MS)
    raised = sim.wait_for_event(DEVICE, "alarm_raised", after=events, timeout=ACK_S)
    sim.wait_for_line(DEVICE, "alarm: no data path: fallback now", after=swap.seen, timeout=ACK_S)
    sms = sim.wait_for_sms(DEVICE, SMS_TO, timeout=ACK_S)
    assert sms["text"].startswith(f"ALARM PANIC {DEVICE}"), sms
    sim.wait_for_call(DEVICE, CALL_TO, timeout=ACK_S)
    assert len(outbox(broker)) == 1  # the alarm waits on flash for a server it can trust
    assert stored_alarms(broker) == []
    return raised.alarm_id


def test_over_tls_the_press_is_stored_and_acked_and_the_operator_felt(
    broker: BrokerFixture, pendant: BackgroundSimHost
) -> None:
    modem = pendant.pendant(DEVICE).modem
    # The modem verifies the server against the project CA, which provisioning gave the pendant.
    context = modem.tls.contexts[modem.tls.mqtt_context[0]]
    assert (context.authmode, context.sslversion, context.enablesni) == (1, 3, 1)
    assert modem.tls.files[context.cacert] == pki.ca_pem(broker.settings)
    assert modem.mqtt.slots[0].tls and modem.mqtt.slots[0].link.params.port == broker.settings.mqtt_tls_port

    pendant.press(DEVICE, PRESS_MS)
    acked = pendant.wait_for_event(DEVICE, "alarm_acked", timeout=ACK_S)
    pendant.wait_for_vibration(DEVICE, "received", timeout=ACK_S)
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    assert outbox(broker) == []

    acknowledge_alarm(engine_for(broker.settings), ref=f"{DEVICE}/{acked.alarm_id}", operator="Ann")
    pendant.wait_for_vibration(DEVICE, "acknowledged", timeout=ACK_S)


def test_a_broker_with_a_foreign_ca_is_refused_and_the_alarm_goes_by_sms_and_call(
    broker: BrokerFixture, swap: Swap, tmp_path: Path
) -> None:
    foreign = pki.new_ca("someone else's CA")
    server = pki.issue_server(foreign, pki.server_names(broker.settings))
    files = write_files(tmp_path / "operator", foreign, server)
    operator = dataclasses.replace(
        broker.settings,
        tls_cert=str(files.server_cert),
        tls_key=str(files.server_key),
        tls_ca=str(files.ca_cert),
    )
    swap.to(Broker(operator))  # the operator's files are checked, and good: they are just not ours
    alarm_id = refusal_and_fallback(swap)
    swap.back()  # the project's certificate again: the alarm on flash goes out, and is stored once
    acked = swap.sim.wait_for_event(DEVICE, "alarm_acked", alarm_id, timeout=BOOT_S)
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    assert outbox(broker) == []


def test_an_expired_certificate_from_our_ca_is_refused(
    broker: BrokerFixture, swap: Swap, tmp_path: Path
) -> None:
    ca = project_ca(broker.settings)
    names = pki.server_names(broker.settings)
    expired = pki.issue_server(ca, names, now=datetime.now(UTC) - timedelta(days=30), days=10)
    swap.to(Broker(broker.settings, tls=write_files(tmp_path / "expired", ca, expired)))
    refusal_and_fallback(swap)


def test_a_certificate_from_our_ca_for_another_name_is_accepted_as_the_modem_does(
    broker: BrokerFixture, swap: Swap, tmp_path: Path
) -> None:
    ca = project_ca(broker.settings)
    elsewhere = pki.issue_server(ca, ["broker.elsewhere.example"])
    swap.to(Broker(broker.settings, tls=write_files(tmp_path / "elsewhere", ca, elsewhere)))
    sim = swap.sim
    sim.wait_for_line(DEVICE, "mqtt: connected sess", after=swap.seen, timeout=BOOT_S)
    events = len(sim.pendant(DEVICE).events)
    sim.press(DEVICE, PRESS_MS)
    acked = sim.wait_for_event(DEVICE, "alarm_acked", after=events, timeout=ACK_S)
    assert [alarm.alarm_id for alarm in stored_alarms(broker)] == [acked.alarm_id]
    assert "TLS handshake failed" not in console(broker)
