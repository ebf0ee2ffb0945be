"""MQTT over TLS through the simulated modem: the certificate store (AT+CCERTDOWN / CCERTLIST / CCERTDELE),
SSL contexts (AT+CSSLCFG), AT+CMQTTSSLCFG, and real handshakes with a Mosquitto TLS listener whose
certificates are made for the test (tests/tls_support.py): no verification, server verification, mutual
TLS, and each way verification fails as the A7670 fails it (tls.py's docstring says what the manual
gives and what the simulator does)."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_modem_mqtt import TOPIC, send_data
from tls_support import TestCa

from pendant_hardware.modem_sim import ModemSim

from hw_helpers import MOSQUITTO, AtClient, Mosquitto, Subscriber
from support import free_ports

pytestmark = pytest.mark.broker


class TlsBroker(Mosquitto):
    """Mosquitto with a plain listener (`port`) and TLS listeners, each with a server certificate of
    `folder`: `tls_port` (server.pem from the test CA), `mtls_port` (the same, wanting a client
    certificate), `expired_port`, `wrong_name_port` (from the test CA) and `tls13_port` (TLS 1.3 only)."""

    LISTENERS = {
        "tls_port": ("server", "require_certificate false\n"),
        "mtls_port": ("server", "require_certificate true\n"),
        "expired_port": ("expired", "require_certificate false\n"),
        "wrong_name_port": ("wrong-name", "require_certificate false\n"),
        "tls13_port": ("server", "require_certificate false\ntls_version tlsv1.3\n"),
    }

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        # As root, Mosquitto would switch to its own user before reading the certificates, which live in
        # pytest's private temporary folder.
        text = "user root\n" if os.geteuid() == 0 else ""
        text += "per_listener_settings false\nallow_anonymous true\npersistence false\n"
        # One more port than listeners: the plain listener's own may not be among the others.
        ports = [p for p in free_ports(len(self.LISTENERS) + 1) if p != self.port][: len(self.LISTENERS)]
        text += f"listener {self.port} 127.0.0.1\n"
        for (attribute, (stem, options)), port in zip(self.LISTENERS.items(), ports, strict=True):
            setattr(self, attribute, port)
            text += f"listener {port} 127.0.0.1\ncafile {folder}/ca.pem\n"
            text += f"certfile {folder}/{stem}.pem\nkeyfile {folder}/{stem}.key\n{options}"
        self.config.write_text(text)

    tls_port: int
    mtls_port: int
    expired_port: int
    wrong_name_port: int
    tls13_port: int


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem (the test CA), other-ca.pem (a CA that signed nothing the broker has), the broker's
    server, expired and wrong-name certificates from the test CA, and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCa("test CA")
    ca.write(folder, "ca")
    TestCa("other CA").write(folder, "other-ca")
    ca.issue().write(folder, "server")
    ca.issue(valid_days=(-10, -1)).write(folder, "expired")
    ca.issue(names=("broker.elsewhere.example",)).write(folder, "wrong-name")
    ca.issue(names=("pd-0001",), client=True).write(folder, "pd-0001")
    return folder


@pytest.fixture(scope="module")
def tls_broker(pki: Path) -> Iterator[TlsBroker]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    broker = TlsBroker(pki)
    broker.start()
    yield broker
    broker.stop()


def download(at: AtClient, name: str, data: bytes) -> None:
    send_data(at, f'AT+CCERTDOWN="{name}",{len(data)}', data)


def tls_client(at: AtClient, port: int, host: str = "127.0.0.1") -> str:
    """Start the service, acquire client 0 with TLS, connect to `port`; the +CMQTTCONNECT result line."""
    at.command("AT+CMQTTSTART")
    at.read_line()
    assert at.command('AT+CMQTTACCQ=0,"pd-0001",1') == b"\r\nOK\r\n"
    assert at.command("AT+CMQTTSSLCFG=0,0") == b"\r\nOK\r\n"
    assert at.command(f'AT+CMQTTCONNECT=0,"tcp://{host}:{port}",60,1') == b"\r\nOK\r\n"
    return at.expect_line("+CMQTTCONNECT:")


def verify_with(at: AtClient, ca: bytes, *options: str) -> None:
    """Context 0 as the firmware sets it: the CA stored, TLS 1.2, the server verified; then `options`."""
    download(at, "ca.pem", ca)
    for option in ('"sslversion",0,3', '"authmode",0,1', '"cacert",0,"ca.pem"', *options):
        assert at.command(f"AT+CSSLCFG={option}") == b"\r\nOK\r\n", option


def publish(at: AtClient, payload: bytes) -> None:
    send_data(at, f"AT+CMQTTTOPIC=0,{len(TOPIC)}", TOPIC.encode())
    send_data(at, f"AT+CMQTTPAYLOAD=0,{len(payload)}", payload)
    assert at.command("AT+CMQTTPUB=0,1,60") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTPUB: 0,0"


@pytest.fixture
def host(at: AtClient) -> Iterator[AtClient]:
    at.command("ATE0")
    yield at


def test_certificate_store(host: AtClient, modem: ModemSim, pki: Path) -> None:
    ca = (pki / "ca.pem").read_bytes()
    host.send(f'AT+CCERTDOWN="ca.pem",{len(ca)}\r')
    assert host.read_exact(3) == b"\r\n>"
    host.send(ca)
    assert host.read_final() == b"\r\nOK\r\n"
    download(host, "client.der", b"\x30\x82")
    assert host.lines("AT+CCERTLIST") == ['+CCERTLIST: "ca.pem"', '+CCERTLIST: "client.der"', "OK"]
    assert host.command('AT+CCERTDELE="client.der"') == b"\r\nOK\r\n"
    assert host.command('AT+CCERTDELE="client.der"') == b"\r\nERROR\r\n"
    assert host.command('AT+CCERTDOWN="notes.txt",10') == b"\r\nERROR\r\n"  # .pem or .der only
    assert host.command('AT+CCERTDOWN="ca.pem",0') == b"\r\nERROR\r\n"
    assert host.command('AT+CSSLCFG="authmode",0,1') == b"\r\nOK\r\n"
    assert host.command('AT+CSSLCFG="authmode",0,4') == b"\r\nERROR\r\n"
    assert host.command('AT+CSSLCFG="cacert",0,"ca.pem"') == b"\r\nOK\r\n"
    assert host.command('AT+CSSLCFG="sslversion",9,4') == b"\r\nOK\r\n"
    assert host.command('AT+CSSLCFG="enableSNI",0,1') == b"\r\nOK\r\n"  # the manual's spelling
    assert host.command('AT+CSSLCFG="colour",0,1') == b"\r\nERROR\r\n"
    assert host.command("AT+CMQTTSSLCFG=1,9") == b"\r\nOK\r\n"
    assert host.lines("AT+CMQTTSSLCFG?") == ["+CMQTTSSLCFG: 0,0", "+CMQTTSSLCFG: 1,9", "OK"]


def test_the_store_survives_a_power_cycle_and_the_contexts_do_not(host: AtClient, modem: ModemSim) -> None:
    download(host, "ca.pem", b"-----BEGIN CERTIFICATE-----\n")
    host.command('AT+CSSLCFG="authmode",0,1')
    modem.tls.reset()  # what a power-on does
    assert host.lines("AT+CCERTLIST") == ['+CCERTLIST: "ca.pem"', "OK"]
    assert modem.tls.contexts[0].authmode == 0


def test_tls_without_verification(host: AtClient, tls_broker: TlsBroker) -> None:
    watcher = Subscriber(tls_broker.port, TOPIC)
    try:
        assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,0"
        publish(host, b"over tls")
        assert watcher.next().payload == b"over tls"
    finally:
        watcher.close()


def test_server_verified_against_the_ca(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    verify_with(host, (pki / "ca.pem").read_bytes())
    assert tls_client(host, tls_broker.tls_port, host="localhost") == "+CMQTTCONNECT: 0,0"
    publish(host, b"verified")


def test_authmode_1_with_the_wrong_ca_does_not_connect(
    host: AtClient, tls_broker: TlsBroker, pki: Path, modem: ModemSim, caplog: pytest.LogCaptureFixture
) -> None:
    # The check is real: the broker that a context without verification reaches (the test above) is
    # refused, and OpenSSL says why.
    caplog.set_level(logging.INFO, logger="pendant_hardware.modem_sim.mqtt_bridge")
    verify_with(host, (pki / "other-ca.pem").read_bytes())
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,32"
    assert not modem.mqtt_connected(0)
    assert "certificate verify failed" in caplog.text


def test_a_context_without_its_ca_gives_not_set_certificate(host: AtClient, tls_broker: TlsBroker) -> None:
    host.command('AT+CSSLCFG="authmode",0,1')
    host.command('AT+CSSLCFG="cacert",0,"nowhere.pem"')
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,33"


def test_an_expired_certificate_is_refused_only_when_dates_are_checked(
    host: AtClient, tls_broker: TlsBroker, pki: Path
) -> None:
    verify_with(host, (pki / "ca.pem").read_bytes(), '"ignorelocaltime",0,0')
    assert tls_client(host, tls_broker.expired_port) == "+CMQTTCONNECT: 0,32"
    host.command("AT+CMQTTREL=0")
    host.command("AT+CMQTTSTOP")
    host.read_line()
    # The manual's default, ignorelocaltime 1: a modem without a clock does not look at the dates.
    host.command('AT+CSSLCFG="ignorelocaltime",0,1')
    assert tls_client(host, tls_broker.expired_port) == "+CMQTTCONNECT: 0,0"


def test_a_certificate_from_the_ca_for_another_name_is_accepted(
    host: AtClient, tls_broker: TlsBroker, pki: Path
) -> None:
    # The A7670 verifies the chain, not the name (no such option in AT+CSSLCFG): the simulator neither.
    verify_with(host, (pki / "ca.pem").read_bytes(), '"enableSNI",0,1')
    assert tls_client(host, tls_broker.wrong_name_port, host="localhost") == "+CMQTTCONNECT: 0,0"


def test_tls_1_2_is_the_newest_the_modem_speaks(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    verify_with(host, (pki / "ca.pem").read_bytes())
    assert tls_client(host, tls_broker.tls13_port) == "+CMQTTCONNECT: 0,32"  # sslversion 3: TLS 1.2 only
    host.command("AT+CMQTTREL=0")
    host.command("AT+CMQTTSTOP")
    host.read_line()
    host.command('AT+CSSLCFG="sslversion",0,4')  # "all": still nothing past TLS 1.2
    assert tls_client(host, tls_broker.tls13_port) == "+CMQTTCONNECT: 0,32"


def test_old_tls_versions_are_refused_by_the_broker(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    verify_with(host, (pki / "ca.pem").read_bytes(), '"sslversion",0,1')  # TLS 1.0 only
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,32"


def _sni_seen(enable_sni: int, host: AtClient, pki: Path) -> list[str | None]:
    """Connect to a bare TLS server that records the SNI of each client hello, then refuses."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki / "server.pem", pki / "server.key")
    seen: list[str | None] = []
    server.sni_callback = lambda sock, name, context: seen.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        connection, _ = listener.accept()
        try:
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # the modem gives up, or we do: only the hello matters
        finally:
            listener.close()

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    verify_with(host, (pki / "ca.pem").read_bytes(), f'"enableSNI",0,{enable_sni}')
    host.command("AT+CMQTTSTART")
    host.read_line()
    host.command('AT+CMQTTACCQ=0,"pd-0001",1')
    host.command(f'AT+CMQTTCONNECT=0,"tcp://localhost:{port}",5,1')
    thread.join(10)
    return seen


def test_sni_carries_the_host_name_only_when_enabled(host: AtClient, pki: Path) -> None:
    assert _sni_seen(1, host, pki) == ["localhost"]


def test_no_sni_by_default(host: AtClient, pki: Path) -> None:
    assert _sni_seen(0, host, pki) == [None]


def test_mutual_tls(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    verify_with(host, (pki / "ca.pem").read_bytes())
    # The listener wants a client certificate and gets none: refused during the handshake.
    result = tls_client(host, tls_broker.mtls_port)
    if result == "+CMQTTCONNECT: 0,0":
        assert host.expect_line("+CMQTTCONNLOST:").startswith("+CMQTTCONNLOST: 0,")
    else:
        assert result in ("+CMQTTCONNECT: 0,32", "+CMQTTCONNECT: 0,3")
    host.command("AT+CMQTTREL=0")
    host.command("AT+CMQTTSTOP")
    host.read_line()
    download(host, "pd-0001.pem", (pki / "pd-0001.pem").read_bytes())
    download(host, "pd-0001.key.pem", (pki / "pd-0001.key").read_bytes())
    host.command('AT+CSSLCFG="authmode",0,2')
    host.command('AT+CSSLCFG="clientcert",0,"pd-0001.pem"')
    host.command('AT+CSSLCFG="clientkey",0,"pd-0001.key.pem"')
    assert tls_client(host, tls_broker.mtls_port) == "+CMQTTCONNECT: 0,0"
    publish(host, b"mutual")


def test_plain_and_tls_do_not_mix(host: AtClient, tls_broker: TlsBroker) -> None:
    assert tls_client(host, tls_broker.port) == "+CMQTTCONNECT: 0,32"  # TLS to a plain listener
    host.command("AT+CMQTTREL=0")
    host.command('AT+CMQTTACCQ=0,"pd-0001",0')
    host.command(f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{tls_broker.tls_port}",60,1')
    result = host.expect_line("+CMQTTCONNECT:")
    assert result != "+CMQTTCONNECT: 0,0"  # plain MQTT to a TLS listener gets nowhere
