"""MQTT over TLS through the simulated modem: the certificate store (AT+CCERTDOWN / CCERTLIST / CCERTDELE),
SSL contexts (AT+CSSLCFG), AT+CMQTTSSLCFG, and connections to a Mosquitto TLS listener with certificates
made for the test by openssl: no verification, server verification, mutual TLS, and the failures."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_modem_mqtt import TOPIC, send_data

from pendant_hardware.modem_sim import ModemSim

from hw_helpers import MOSQUITTO, AtClient, Mosquitto, Subscriber
from support import free_port

pytestmark = pytest.mark.broker
OPENSSL = shutil.which("openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=folder,
    )  # fmt: skip


def make_signed(folder: Path, name: str, ca: str, extension: str) -> None:
    (folder / f"{name}.ext").write_text(extension)
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder,
    )  # fmt: skip


class TlsBroker(Mosquitto):
    """Mosquitto with a plain listener (`port`), a TLS listener (`tls_port`) and a TLS listener that
    wants a client certificate (`mtls_port`), all with the test CA's server certificate."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.tls_port, self.mtls_port = free_port(), free_port()
        certs = (
            f"cafile {directory}/ca.pem\ncertfile {directory}/server.pem\nkeyfile {directory}/server.key\n"
        )
        # As root, Mosquitto would switch to its own user before reading the certificates, which live in
        # pytest's private temporary folder.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"{user}per_listener_settings false\nallow_anonymous true\npersistence false\n"
            f"listener {self.port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n{certs}require_certificate false\n"
            f"listener {self.mtls_port} 127.0.0.1\n{certs}require_certificate true\n"
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_ca(folder, "other-ca")  # a CA that signed nothing the broker has
    make_signed(folder, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    make_signed(folder, "pd-0001", "ca", "extendedKeyUsage=clientAuth\n")
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


def tls_client(at: AtClient, port: int) -> str:
    """Start the service, acquire client 0 with TLS, connect to `port`; the +CMQTTCONNECT result line."""
    at.command("AT+CMQTTSTART")
    at.read_line()
    assert at.command('AT+CMQTTACCQ=0,"pd-0001",1') == b"\r\nOK\r\n"
    assert at.command("AT+CMQTTSSLCFG=0,0") == b"\r\nOK\r\n"
    assert at.command(f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{port}",60,1') == b"\r\nOK\r\n"
    return at.expect_line("+CMQTTCONNECT:")


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
    assert host.command('AT+CSSLCFG="colour",0,1') == b"\r\nERROR\r\n"
    assert host.command("AT+CMQTTSSLCFG=1,9") == b"\r\nOK\r\n"
    assert host.lines("AT+CMQTTSSLCFG?") == ["+CMQTTSSLCFG: 0,0", "+CMQTTSSLCFG: 1,9", "OK"]


def test_tls_without_verification(host: AtClient, tls_broker: TlsBroker) -> None:
    watcher = Subscriber(tls_broker.port, TOPIC)
    try:
        assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,0"
        publish(host, b"over tls")
        assert watcher.next().payload == b"over tls"
    finally:
        watcher.close()


def test_server_verified_against_the_ca(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    download(host, "ca.pem", (pki / "ca.pem").read_bytes())
    host.command('AT+CSSLCFG="sslversion",0,4')
    host.command('AT+CSSLCFG="authmode",0,1')
    host.command('AT+CSSLCFG="cacert",0,"ca.pem"')
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,0"


def test_a_server_from_another_ca_fails_the_handshake(
    host: AtClient, tls_broker: TlsBroker, pki: Path
) -> None:
    download(host, "other.pem", (pki / "other-ca.pem").read_bytes())
    host.command('AT+CSSLCFG="authmode",0,1')
    host.command('AT+CSSLCFG="cacert",0,"other.pem"')
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,32"


def test_a_context_naming_a_missing_file_fails(host: AtClient, tls_broker: TlsBroker) -> None:
    host.command('AT+CSSLCFG="authmode",0,1')
    host.command('AT+CSSLCFG="cacert",0,"nowhere.pem"')
    assert tls_client(host, tls_broker.tls_port) == "+CMQTTCONNECT: 0,32"


def test_mutual_tls(host: AtClient, tls_broker: TlsBroker, pki: Path) -> None:
    download(host, "ca.pem", (pki / "ca.pem").read_bytes())
    host.command('AT+CSSLCFG="authmode",0,1')
    host.command('AT+CSSLCFG="cacert",0,"ca.pem"')
    # The listener wants a client certificate and gets none: refused during the handshake. TLS 1.3
    # reports that only after the handshake, so the result is a failed connect or a lost connection.
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
