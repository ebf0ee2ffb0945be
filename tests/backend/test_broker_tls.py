"""The broker's TLS listener on the real Mosquitto: who gets in (a client trusting the project CA), who
does not (another CA, TLS 1.0/1.1, a truncated handshake) and what each side says; certificates the
broker must not serve (expired, self-signed, wrong name) refused by a verifying client; rotation that
leaves every device's login as it was; the backend over TLS with the plain listener off."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import socket
import ssl
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend import BackendError, pki
from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker, load_secrets, served_fingerprint
from pendant_backend.broker_endpoint import backend_endpoint
from pendant_backend.mqtt_link import MqttError, MqttLink, RequestSession
from pendant_backend.pki import TlsFiles
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings

from support import BrokerFixture, free_port, run_cli

pytestmark = pytest.mark.broker

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
WAIT_S = 15.0


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def trusting(ca_file: Path) -> ssl.SSLContext:
    """A client context as the backend's own (mqtt_link.tls_context): only this CA, name checked."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TlsPendant:
    """A paho client over TLS, connected like a pendant (MQTT 3.1.1, client id = username)."""

    def __init__(self, settings: Settings, context: ssl.SSLContext, *, host: str = "127.0.0.1") -> None:
        self.settings, self.host = settings, host
        self.connack: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._done: dict[int, threading.Event] = {}
        self.context = context
        self.client: paho.Client | None = None

    def connect(self, username: str, password: str) -> Any:
        """Connect; the CONNACK reason, or the ssl error the handshake raised."""
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311
        )
        client.username_pw_set(username, password)
        client.tls_set_context(self.context)
        client.on_connect = lambda c, u, f, reason, p: self.connack.put(reason)
        client.on_message = lambda c, u, m: self.messages.put(m)
        client.on_publish = lambda c, u, mid, rc, p: self._done.setdefault(mid, threading.Event()).set()
        client.on_subscribe = lambda c, u, mid, rcs, p: self._done.setdefault(mid, threading.Event()).set()
        self.client = client
        client.connect(self.host, self.settings.mqtt_tls_port, keepalive=30)
        client.loop_start()
        return self.connack.get(timeout=WAIT_S)

    def _wait(self, mid: int, what: str) -> None:
        done = self._done.setdefault(mid, threading.Event())
        assert done.wait(WAIT_S), f"no answer from the broker to {what} within {WAIT_S} s"

    def publish(self, topic: str, payload: bytes) -> None:
        assert self.client is not None
        self._wait(self.client.publish(topic, payload, qos=1).mid, f"PUBLISH on {topic}")

    def subscribe(self, topic: str) -> None:
        assert self.client is not None
        self._wait(self.client.subscribe(topic, qos=1)[1], f"SUBSCRIBE to {topic}")

    def expect(self, topic: str) -> paho.MQTTMessage:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if message.topic == topic:
                return message
        raise AssertionError(f"no message on {topic} within {WAIT_S} s")

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def settings(pendant_data_dir: Path) -> Settings:
    """SQLite only: what is tested here is the transport, not the database."""
    return Settings.for_data_dir(pendant_data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())


@pytest.fixture
def start_broker(settings: Settings) -> Iterator[Callable[..., Broker]]:
    """`start_broker(settings=..., tls=...)` starts a broker; every one is killed at teardown."""
    started: list[Broker] = []

    def _start(broker_settings: Settings = settings, tls: TlsFiles | None = None) -> Broker:
        instance = Broker(broker_settings, tls=tls)
        started.append(instance)
        instance.start()
        return instance

    yield _start
    for instance in started:
        instance.kill()


@pytest.fixture
def pendants() -> Iterator[Callable[..., TlsPendant]]:
    made: list[TlsPendant] = []

    def _make(settings: Settings, context: ssl.SSLContext, **kwargs: Any) -> TlsPendant:
        made.append(TlsPendant(settings, context, **kwargs))
        return made[-1]

    yield _make
    for pendant in made:
        pendant.close()


def log_since(broker: Broker, start: int) -> str:
    return broker.log_path.read_bytes()[start:].decode(errors="replace")


def wait_for_log(broker: Broker, start: int, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while text not in log_since(broker, start):
        assert time.monotonic() < deadline, f"{text!r} not in the broker's log:\n{log_since(broker, start)}"
        time.sleep(0.05)
    return log_since(broker, start)


def still_serves(settings: Settings) -> bool:
    """A verifying TLS handshake succeeds: the broker is up and serving the project's certificate."""
    context = trusting(settings.tls_dir / "ca.crt")
    raw = socket.create_connection(("127.0.0.1", settings.mqtt_tls_port), timeout=5)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.version() in ("TLSv1.2", "TLSv1.3")


# ---- files and config ---------------------------------------------------------------------------------


def test_the_first_start_creates_a_private_ca_and_the_broker_gets_no_ca_key(start_broker, settings) -> None:
    broker = start_broker()
    assert mode(settings.tls_dir) == 0o700
    assert mode(settings.tls_dir / "ca.key") == 0o600
    assert mode(settings.tls_dir / "server.key") == 0o600
    assert mode(broker.tls_dir) == 0o700
    assert sorted(p.name for p in broker.tls_dir.iterdir()) == ["ca.crt", "server.crt", "server.key"]
    assert all(mode(p) == 0o600 for p in broker.tls_dir.iterdir())
    ca_key = (settings.tls_dir / "ca.key").read_bytes()
    assert all(p.read_bytes() != ca_key for p in broker.tls_dir.iterdir())
    # The CA key never reaches a log.
    body = b"".join(ca_key.splitlines()[1:-1])
    assert body[:40] not in broker.log_path.read_bytes().replace(b"\n", b"")


def test_the_config_has_a_tls_listener_and_a_plain_one_on_loopback(start_broker, settings) -> None:
    lines = start_broker().config_path.read_text().splitlines()
    assert f"listener {settings.mqtt_port} 127.0.0.1" in lines
    tls_at = lines.index(f"listener {settings.mqtt_tls_port} 127.0.0.1")
    assert lines[tls_at + 1 : tls_at + 5] == [
        f"cafile {settings.broker_dir / 'tls' / 'ca.crt'}",
        f"certfile {settings.broker_dir / 'tls' / 'server.crt'}",
        f"keyfile {settings.broker_dir / 'tls' / 'server.key'}",
        "tls_version tlsv1.2",
    ]


def test_a_second_start_keeps_the_ca_and_the_server_certificate(start_broker, settings) -> None:
    first = pki.certificate_facts(settings)
    start_broker().stop()
    before = pki.certificate_facts(settings)
    start_broker()
    assert first == {}
    assert pki.certificate_facts(settings) == before


# ---- who gets in ---------------------------------------------------------------------------------------


def test_a_client_trusting_the_project_ca_connects_and_publishes(start_broker, settings, pendants) -> None:
    start_broker()
    config = provision_device(settings, "pd-0001")
    pendant = pendants(settings, trusting(settings.tls_dir / "ca.crt"))
    reason = pendant.connect(config["mqtt"]["user"], config["mqtt"]["password"])
    assert not reason.is_failure, reason
    pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
    pendant.publish("pendant/v1/pd-0001/status", b'{"online":true}')  # PUBACK came back
    assert pendant.client.socket().version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_trusting_another_ca_is_refused_and_the_broker_logs_it(
    start_broker, settings, pendants, tmp_path
) -> None:
    broker = start_broker()
    config = provision_device(settings, "pd-0001")
    foreign = pki.new_ca("someone else's CA")
    (tmp_path / "foreign.crt").write_bytes(pki.pem_cert(foreign.cert))
    start = broker.log_path.stat().st_size
    pendant = pendants(settings, trusting(tmp_path / "foreign.crt"))
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        pendant.connect(config["mqtt"]["user"], config["mqtt"]["password"])
    # Mosquitto sends the project CA along with its certificate: a chain ending in a CA the client lacks.
    assert refused.value.verify_message == "self-signed certificate in certificate chain"
    # The client refused in the handshake with an alert; the broker logs it and serves on. (Mosquitto
    # words the line in one of two ways, depending on whether the handshake ended within accept().)
    wait_for_log(broker, start, "tlsv1 alert unknown ca")
    assert still_serves(settings)


def test_a_client_offering_only_tls_1_0_or_1_1_is_refused_and_the_broker_logs_it(
    start_broker, settings
) -> None:
    broker = start_broker()
    start = broker.log_path.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1 / TLSv1_1
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer the old versions at all
        old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", settings.mqtt_tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        old.wrap_socket(raw)
    assert "PROTOCOL_VERSION" in str(refused.value) or "unsupported protocol" in str(refused.value)
    wait_for_log(broker, start, "SSL routines::unsupported protocol")
    assert still_serves(settings)


def test_a_truncated_handshake_leaves_the_broker_serving_and_logged(start_broker, settings) -> None:
    broker = start_broker()
    start = broker.log_path.stat().st_size
    # A TLS record header announcing a 512-byte ClientHello, then half of it, then the connection ends.
    half_hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]) + bytes(245)
    with socket.create_connection(("127.0.0.1", settings.mqtt_tls_port), timeout=5) as raw:
        raw.sendall(half_hello)
    wait_for_log(broker, start, "SSL routines::unexpected eof while reading")
    assert broker.is_running()
    assert still_serves(settings)


# ---- certificates a verifying client must refuse --------------------------------------------------------


def _bad_files(kind: str, settings: Settings, folder: Path) -> TlsFiles:
    """Files the broker is made to serve: `expired`, `self-signed` or `wrong-name` (from the project CA
    but for another host). The client trusts the project CA throughout."""
    files = pki.ensure(settings)
    project = pki.Issued(
        pki.load_key(settings.tls_dir / "ca.key", "ca"), pki.load_certs(files.ca_cert, "ca")[0]
    )
    if kind == "expired":
        issued = pki.issue_server(
            project, ["localhost", "127.0.0.1"], now=datetime.now(UTC) - timedelta(days=400)
        )
    elif kind == "wrong-name":
        issued = pki.issue_server(project, ["mqtt.elsewhere.example"])
    else:
        issued = pki.new_ca("127.0.0.1")  # a certificate that signs itself
    (folder / "bad.crt").write_bytes(pki.pem_cert(issued.cert))
    (folder / "bad.key").write_bytes(pki.pem_key(issued.key))
    return TlsFiles(files.ca_cert, folder / "bad.crt", folder / "bad.key")


@pytest.mark.parametrize(
    ("kind", "verify_message"),
    [
        ("expired", "certificate has expired"),
        ("self-signed", "self-signed certificate"),
        ("wrong-name", "IP address mismatch"),
    ],
)
def test_a_broker_serving_a_bad_certificate_is_refused_by_a_verifying_client(
    start_broker, settings, tmp_path, kind: str, verify_message: str
) -> None:
    broker = start_broker(tls=_bad_files(kind, settings, tmp_path))
    broker_secrets = load_secrets(settings)
    with pytest.raises(MqttError) as refused:
        RequestSession(
            host="127.0.0.1",
            port=settings.mqtt_tls_port,
            ca_file=settings.tls_dir / "ca.crt",
            username=broker_secrets.admin_username,
            password=broker_secrets.admin_password,
            topic="$CONTROL/dynamic-security/v1",
            response_topic="$CONTROL/dynamic-security/v1/response",
            timeout=5,
        )
    message = str(refused.value)
    assert message.startswith(f"the broker at 127.0.0.1:{settings.mqtt_tls_port} is not trusted")
    assert verify_message in message
    # The password never left: the broker saw a failed handshake, not a CONNECT.
    assert "New client connected" not in broker.log_path.read_text()


def test_the_operators_certificate_is_served_and_verifies_for_the_public_name(
    start_broker, settings, tmp_path
) -> None:
    police_ca = pki.new_ca("police CA")
    server = pki.issue_server(police_ca, ["mqtt.police.example"])
    for name, data in (("ca.pem", pki.pem_cert(police_ca.cert)), ("cert.pem", pki.pem_cert(server.cert))):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "key.pem").write_bytes(pki.pem_key(server.key))
    os.chmod(tmp_path / "key.pem", 0o600)
    given = dataclasses.replace(
        settings,
        mqtt_public_host="mqtt.police.example",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        tls_ca=str(tmp_path / "ca.pem"),
    )
    start_broker(given)
    assert served_fingerprint(given) == pki.fingerprint(server.cert)
    assert not given.tls_dir.exists()  # no project CA was made
    raw = socket.create_connection(("127.0.0.1", given.mqtt_tls_port), timeout=5)
    with trusting(tmp_path / "ca.pem").wrap_socket(raw, server_hostname="mqtt.police.example") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_an_expired_operator_certificate_stops_the_start_with_one_clear_error(settings, tmp_path) -> None:
    police_ca = pki.new_ca("police CA")
    server = pki.issue_server(police_ca, ["localhost"], now=datetime.now(UTC) - timedelta(days=30), days=10)
    (tmp_path / "ca.pem").write_bytes(pki.pem_cert(police_ca.cert))
    (tmp_path / "cert.pem").write_bytes(pki.pem_cert(server.cert))
    (tmp_path / "key.pem").write_bytes(pki.pem_key(server.key))
    given = dataclasses.replace(
        settings,
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        tls_ca=str(tmp_path / "ca.pem"),
    )
    result = run_cli(given, "broker", "run", catch_exceptions=True)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the certificate in PENDANT_TLS_CERT (")
    assert "expired on" in result.output and "Traceback" not in result.output


def test_the_backend_says_once_why_it_does_not_trust_the_broker_and_never_connects(
    start_broker, settings, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    start_broker(tls=_bad_files("wrong-name", settings, tmp_path))
    broker_secrets = load_secrets(settings)
    link = MqttLink(
        host="127.0.0.1",
        port=settings.mqtt_tls_port,
        ca_file=settings.tls_dir / "ca.crt",
        username=broker_secrets.backend_username,
        password=broker_secrets.backend_password,
        subscriptions=["pendant/v1/+/alarm"],
        handler=lambda topic, payload: [],
    )
    with caplog.at_level(logging.ERROR, logger="pendant_backend.mqtt_link"):
        link.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while "is not trusted" not in caplog.text:
                assert time.monotonic() < deadline, "the backend logged no refusal"
                time.sleep(0.05)
            assert not link.connected and link.connect_count == 0
        finally:
            link.stop()
    refusals = [r.getMessage() for r in caplog.records if "is not trusted" in r.getMessage()]
    assert len(refusals) == 1
    assert "IP address mismatch" in refusals[0] and refusals[0].endswith("; retrying")
    assert broker_secrets.backend_password not in caplog.text


# ---- rotation ------------------------------------------------------------------------------------------


def test_rotate_serves_a_new_certificate_and_devices_log_in_as_before(
    start_broker, settings, pendants
) -> None:
    broker = start_broker()
    config = provision_device(settings, "pd-0001")
    dynsec_before = broker.dynsec_path.read_bytes()
    secrets_before = settings.broker_secrets_path.read_bytes()
    ca_before = (settings.tls_dir / "ca.crt").read_bytes()
    old = served_fingerprint(settings)
    connected = pendants(settings, trusting(settings.tls_dir / "ca.crt"))
    assert not connected.connect(config["mqtt"]["user"], config["mqtt"]["password"]).is_failure

    result = run_cli(settings, "broker", "cert", "rotate")

    assert result.exit_code == 0, result.output
    new = pki.certificate_facts(settings)["server"].sha256
    assert new != old
    assert f"the running broker (pid {broker.pid}) serves it now" in result.output
    assert served_fingerprint(settings) == new
    # Nothing of the devices' or the services' credentials changed, nor the CA the pendants trust.
    assert broker.dynsec_path.read_bytes() == dynsec_before
    assert settings.broker_secrets_path.read_bytes() == secrets_before
    assert (settings.tls_dir / "ca.crt").read_bytes() == ca_before
    # A connected pendant stays connected; a new login with the old password works on the new certificate.
    connected.publish("pendant/v1/pd-0001/status", b'{"online":true}')
    again = pendants(settings, trusting(settings.tls_dir / "ca.crt"))
    assert not again.connect(config["mqtt"]["user"], config["mqtt"]["password"]).is_failure
    served = again.client.socket().getpeercert(binary_form=True)
    assert pki.fingerprint_der(served) == new


def test_a_long_running_broker_takes_a_new_certificate_when_its_own_nears_its_end(
    start_broker, settings
) -> None:
    broker = start_broker()
    assert broker.refresh_certificates() is False  # nothing due: nothing changes
    project = pki.Issued(
        pki.load_key(settings.tls_dir / "ca.key", "ca"), pki.load_certs(settings.tls_dir / "ca.crt", "ca")[0]
    )
    ending = pki.issue_server(project, pki.server_names(settings), days=10)
    (settings.tls_dir / "server.crt").write_bytes(pki.pem_cert(ending.cert))
    (settings.tls_dir / "server.key").write_bytes(pki.pem_key(ending.key))
    assert broker.refresh_certificates() is True
    renewed = pki.certificate_facts(settings)["server"]
    assert renewed.days_left() > 390
    deadline = time.monotonic() + WAIT_S
    while served_fingerprint(settings) != renewed.sha256:
        assert time.monotonic() < deadline, "the broker did not serve the renewed certificate"
        time.sleep(0.1)
    # And again a year on: every check compares with what is served now.
    assert broker.refresh_certificates() is False
    pki.rotate_server_cert(settings)
    assert broker.refresh_certificates() is True


def test_rotate_without_a_running_broker_says_the_next_start_serves_it(settings) -> None:
    pki.ensure(settings)
    result = run_cli(settings, "broker", "cert", "rotate")
    assert result.exit_code == 0, result.output
    assert "no broker runs on this data folder: the next `pendant broker run` serves it" in result.output


def test_cert_show_and_ca_print_what_the_broker_serves(start_broker, settings) -> None:
    start_broker()
    shown = run_cli(settings, "broker", "cert", "show", "--json")
    assert shown.exit_code == 0, shown.output
    facts = json.loads(shown.output)
    server = facts["certificates"]["server"]
    assert facts["source"] == "project CA"
    assert facts["served"] == server["sha256"]
    assert server["names"] == ["localhost", "127.0.0.1", "::1"]
    assert facts["certificates"]["ca"]["is_ca"] is True
    assert server["issuer"] == facts["certificates"]["ca"]["subject"]
    text = run_cli(settings, "broker", "cert", "show")
    assert "served: the server certificate above" in text.output
    ca = run_cli(settings, "broker", "cert", "ca")
    assert ca.output.encode() == (settings.tls_dir / "ca.crt").read_bytes()
    assert "PRIVATE KEY" not in shown.output + text.output + ca.output


# ---- the plain listener ---------------------------------------------------------------------------------


def alarm(alarm_id: str) -> bytes:
    data = json.loads((EXAMPLES / "alarm.json").read_bytes())
    data["alarm_id"] = alarm_id
    return json.dumps(data, separators=(",", ":")).encode()


def test_with_the_plain_listener_off_the_backend_works_over_tls(pendant_settings: Settings, pendants) -> None:
    settings = dataclasses.replace(pendant_settings, mqtt_plain=False)
    broker = Broker(settings)
    broker.start()
    service = None
    try:
        listeners = [
            line for line in broker.config_path.read_text().splitlines() if line.startswith("listener")
        ]
        assert listeners == [f"listener {settings.mqtt_tls_port} 127.0.0.1"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", settings.mqtt_port), timeout=1).close()
        endpoint = backend_endpoint(settings)
        assert (endpoint.host, endpoint.port) == ("127.0.0.1", settings.mqtt_tls_port)
        assert endpoint.url.startswith("mqtts://")
        config = provision_device(settings, "pd-0001")  # the dynamic-security API over TLS
        service = BackendService(settings)
        service.start()
        assert service.wait_ready(WAIT_S), "the backend did not subscribe over TLS"
        pendant = pendants(settings, trusting(settings.tls_dir / "ca.crt"))
        assert not pendant.connect(config["mqtt"]["user"], config["mqtt"]["password"]).is_failure
        pendant.subscribe("pendant/v1/pd-0001/alarm/ack")
        pendant.publish("pendant/v1/pd-0001/alarm", alarm("31-1"))
        ack = json.loads(pendant.expect("pendant/v1/pd-0001/alarm/ack").payload)
        assert ack["alarm_id"] == "31-1"
    finally:
        if service is not None:
            service.stop()
        broker.kill()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "broker.example.org"])
def test_a_plain_listener_beyond_loopback_is_refused(settings, host: str) -> None:
    with pytest.raises(BackendError, match=f"may only listen on loopback, not on {host}"):
        Broker(dataclasses.replace(settings, mqtt_host=host)).start()
    with pytest.raises(BackendError, match="PENDANT_MQTT_PLAIN=off"):
        Settings.from_env({"PENDANT_DATA_DIR": str(settings.data_dir), "PENDANT_MQTT_HOST": host})
    # Switched off, the address no longer matters.
    off = Settings.from_env(
        {"PENDANT_DATA_DIR": str(settings.data_dir), "PENDANT_MQTT_HOST": host, "PENDANT_MQTT_PLAIN": "off"}
    )
    assert off.mqtt_plain is False


def test_the_broker_fixture_of_other_tests_listens_with_tls_too(broker: BrokerFixture) -> None:
    assert broker.settings.mqtt_tls_port != 8883
    assert still_serves(broker.settings)
