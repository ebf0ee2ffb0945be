"""AT+CMQTT* against the project's broker (a provisioned device account): prompts, byte lengths, publish,
receive, will, refused credentials, connection loss."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.settings import DENIED
from pendant_hardware.modem_sim.uart import redacted

from hw_helpers import AtClient, BenchBroker, Mosquitto, Subscriber, on_loop
from support import BrokerFixture, free_port

pytestmark = pytest.mark.broker

TOPIC = "pendant/v1/pd-0001/alarm"
ACK_TOPIC = "pendant/v1/pd-0001/alarm/ack"


@pytest.fixture
def subscriber(bench_broker: BenchBroker) -> Iterator[Subscriber]:
    """The backend's account on the broker: it hears every device's data and publishes acks."""
    client = bench_broker.backend()
    yield client
    client.close()


def send_data(at: AtClient, command: str, data: bytes) -> None:
    """A prompt command: the exact prompt, then exactly len(data) bytes, then OK."""
    at.send(command + "\r")
    assert at.read_exact(3) == b"\r\n>"
    at.send(data)
    assert at.read_final() == b"\r\nOK\r\n"


def start_and_connect(
    at: AtClient, broker: BenchBroker | int, client_id: str = "pd-0001", clean: int = 1
) -> None:
    """Start the service, acquire client 0 and connect it: to the project's broker with the device's
    account, or (a port number) to a test's own server without credentials."""
    at.command("ATE0")
    assert at.command("AT+CMQTTSTART") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTSTART: 0"
    assert at.command(f'AT+CMQTTACCQ=0,"{client_id}"') == b"\r\nOK\r\n"
    if isinstance(broker, BenchBroker):
        connect = broker.connect_line(client_id, clean)
    else:
        connect = f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{broker}",60,{clean}'
    assert at.command(connect) == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTCONNECT: 0,0"


def subscribe(at: AtClient, topic: str) -> None:
    data = topic.encode()
    send_data(at, f"AT+CMQTTSUBTOPIC=0,{len(data)},1", data)
    assert at.command("AT+CMQTTSUB=0") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTSUB: 0,0"


def test_service_start_twice_and_stop(at: AtClient) -> None:
    at.command("ATE0")
    assert at.command('AT+CMQTTACCQ=0,"pd-0001"') == b"\r\n+CMQTTACCQ: 0,9\r\n\r\nERROR\r\n"
    assert at.command("AT+CMQTTSTART") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTSTART: 0"
    assert at.command("AT+CMQTTSTART") == b"\r\nERROR\r\n"
    assert at.command('AT+CMQTTACCQ=0,"pd-0001"') == b"\r\nOK\r\n"
    assert at.command('AT+CMQTTACCQ=0,"pd-0001"') == b"\r\n+CMQTTACCQ: 0,19\r\n\r\nERROR\r\n"
    assert at.lines("AT+CMQTTACCQ?") == ['+CMQTTACCQ: 0,"pd-0001",0', '+CMQTTACCQ: 1,"",0', "OK"]
    assert at.command("AT+CMQTTREL=0") == b"\r\nOK\r\n"
    assert at.command("AT+CMQTTSTOP") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTSTOP: 0"
    assert at.command("AT+CMQTTSTOP") == b"\r\nERROR\r\n"


def test_prompt_takes_exactly_len_bytes_even_with_cr_lf_inside(at: AtClient) -> None:
    at.command("AT+CMQTTSTART")
    at.read_line()
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    # With echo on, the command line is echoed but the data after the prompt is not.
    at.send("AT+CMQTTPAYLOAD=0,5\r")
    assert at.read_exact(23) == b"AT+CMQTTPAYLOAD=0,5\r\r\n>"
    at.send(b"a\r\nb\r")
    assert at.read_final() == b"\r\nOK\r\n"
    # A command ended by CR LF: the LF is not the first data byte.
    at.send(b"ATE0\r\n")
    at.read_final()
    at.send(b"AT+CMQTTTOPIC=0,3\r\n")
    assert at.read_exact(3) == b"\r\n>"
    at.send(b"\nxy")
    assert at.read_final() == b"\r\nOK\r\n"


def test_length_limits_and_client_state(at: AtClient) -> None:
    at.command("ATE0")
    at.command("AT+CMQTTSTART")
    at.read_line()
    assert at.command("AT+CMQTTTOPIC=0,5") == b"\r\n+CMQTTTOPIC: 0,20\r\n\r\nERROR\r\n"  # not acquired
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    assert at.command("AT+CMQTTTOPIC=0,0") == b"\r\nERROR\r\n"
    assert at.command("AT+CMQTTTOPIC=0,1025") == b"\r\nERROR\r\n"
    assert at.command("AT+CMQTTPAYLOAD=0,10241") == b"\r\nERROR\r\n"
    assert at.command("AT+CMQTTTOPIC=2,5") == b"\r\nERROR\r\n"
    assert at.command("AT+CMQTTPUB=0,1,60") == b"\r\n+CMQTTPUB: 0,11\r\n\r\nERROR\r\n"  # not connected
    assert at.command("AT+CMQTTDISC=0,60") == b"\r\n+CMQTTDISC: 0,11\r\n\r\nERROR\r\n"
    assert at.command('AT+CMQTTCONNECT=0,"mqtt://127.0.0.1:1883",60,1') == b"\r\nERROR\r\n"


def test_publish_reaches_the_broker_with_exact_bytes(
    at: AtClient, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    start_and_connect(at, bench_broker)
    payload = '{"alarm_id":"12-3","note":"Grüße ✓"}'.encode()
    assert len(payload) != len(payload.decode())  # byte length, not character length
    send_data(at, f"AT+CMQTTTOPIC=0,{len(TOPIC)}", TOPIC.encode())
    send_data(at, f"AT+CMQTTPAYLOAD=0,{len(payload)}", payload)
    assert at.command("AT+CMQTTPUB=0,1,60") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTPUB: 0,0"
    message = subscriber.next()
    assert (message.topic, message.payload, message.qos) == (TOPIC, payload, 1)
    # Topic and payload are cleared after each publish.
    assert at.command("AT+CMQTTPUB=0,1,60") == b"\r\n+CMQTTPUB: 0,18\r\n\r\nERROR\r\n"


def test_received_message_is_the_rx_urc_sequence(
    at: AtClient, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    start_and_connect(at, bench_broker)
    subscribe(at, ACK_TOPIC)
    payload = '{"alarm_id":"12-3","state":"received","by":"Zoë"}'.encode()
    subscriber.publish(ACK_TOPIC, payload)
    expected = (
        (
            f"\r\n+CMQTTRXSTART: 0,{len(ACK_TOPIC)},{len(payload)}\r\n"
            f"\r\n+CMQTTRXTOPIC: 0,{len(ACK_TOPIC)}\r\n{ACK_TOPIC}\r\n"
            f"\r\n+CMQTTRXPAYLOAD: 0,{len(payload)}\r\n"
        ).encode()
        + payload
        + b"\r\n\r\n+CMQTTRXEND: 0\r\n"
    )
    assert at.read_until(b"+CMQTTRXEND: 0\r\n") == expected


def test_one_shot_subscribe_and_unsubscribe(at: AtClient, anonymous_broker: Mosquitto) -> None:
    # On an anonymous broker: the project's refuses a device's UNSUBSCRIBE (see the fixture).
    subscriber = Subscriber(anonymous_broker.port)
    try:
        start_and_connect(at, anonymous_broker.port)
        other = "pendant/v1/pd-0001/config"
        for topic in (ACK_TOPIC, other):
            send_data(at, f"AT+CMQTTSUB=0,{len(topic)},1", topic.encode())
            assert at.read_line() == "+CMQTTSUB: 0,0"
        send_data(at, f"AT+CMQTTUNSUB=0,{len(ACK_TOPIC)},0", ACK_TOPIC.encode())
        assert at.read_line() == "+CMQTTUNSUB: 0,0"
        subscriber.publish(ACK_TOPIC, b"not for you")
        subscriber.publish(other, b"for you")
        # Messages are delivered in order, so the first RX after the unsubscribe is the second message.
        assert at.expect_line("+CMQTTRXSTART:") == f"+CMQTTRXSTART: 0,{len(other)},7"
        assert at.expect_line("+CMQTTRXTOPIC:") == f"+CMQTTRXTOPIC: 0,{len(other)}"
        assert at.read_line() == other
    finally:
        subscriber.close()


def test_unsubscribe_list_form(at: AtClient, bench_broker: BenchBroker) -> None:
    start_and_connect(at, bench_broker)
    subscribe(at, ACK_TOPIC)
    send_data(at, f"AT+CMQTTUNSUBTOPIC=0,{len(ACK_TOPIC)}", ACK_TOPIC.encode())
    assert at.command("AT+CMQTTUNSUB=0,0") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTUNSUB: 0,0"


def test_chunked_rx_quirk_adds_up(
    at: AtClient, modem: ModemSim, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    modem.settings.rx_chunk_bytes = 8
    start_and_connect(at, bench_broker)
    subscribe(at, ACK_TOPIC)
    payload = b"x" * 20
    subscriber.publish(ACK_TOPIC, payload)
    assert at.expect_line("+CMQTTRXSTART:") == f"+CMQTTRXSTART: 0,{len(ACK_TOPIC)},20"
    topic, body = b"", b""
    while (line := at.read_line()) != "+CMQTTRXEND: 0":
        kind, size = line.split(": 0,")
        chunk = at.read_exact(int(size))
        assert int(size) <= 8
        if kind == "+CMQTTRXTOPIC":
            topic += chunk
        else:
            body += chunk
    assert (topic, body) == (ACK_TOPIC.encode(), payload)


def test_will_is_sent_when_the_connection_is_lost(
    at: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    at.command("ATE0")
    at.command("AT+CMQTTSTART")
    at.read_line()
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    will_topic = b"pendant/v1/pd-0001/status"
    will = b'{"online":false,"boot":12,"sess":40}'
    send_data(at, f"AT+CMQTTWILLTOPIC=0,{len(will_topic)}", will_topic)
    send_data(at, f"AT+CMQTTWILLMSG=0,{len(will)},1", will)
    at.command(bench_broker.connect_line("pd-0001", clean=0))
    assert at.read_line() == "+CMQTTCONNECT: 0,0"
    assert modem.mqtt_connected()
    on_loop(bench_loop, modem.force_connlost, 2)
    assert at.read_line() == "+CMQTTCONNLOST: 0,2"
    message = subscriber.next()
    assert (message.topic, message.payload) == (will_topic.decode(), will)
    assert not modem.mqtt_connected()


def test_clean_disconnect_sends_no_will(
    at: AtClient, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    at.command("ATE0")
    at.command("AT+CMQTTSTART")
    at.read_line()
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    send_data(at, "AT+CMQTTWILLTOPIC=0,25", b"pendant/v1/pd-0001/status")
    send_data(at, "AT+CMQTTWILLMSG=0,4,1", b"gone")
    at.command(bench_broker.connect_line())
    assert at.read_line() == "+CMQTTCONNECT: 0,0"
    assert at.command("AT+CMQTTDISC=0,60") == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTDISC: 0,0"
    assert at.command("AT+CMQTTREL=0") == b"\r\nOK\r\n"
    # Connect again and publish a marker: it must be the next thing the backend sees (no will before it).
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    at.command(bench_broker.connect_line())
    assert at.read_line() == "+CMQTTCONNECT: 0,0"
    marker = "pendant/v1/pd-0001/evt"
    send_data(at, f"AT+CMQTTTOPIC=0,{len(marker)}", marker.encode())
    send_data(at, "AT+CMQTTPAYLOAD=0,6", b"marker")
    at.command("AT+CMQTTPUB=0,1,60")
    assert at.read_line() == "+CMQTTPUB: 0,0"
    message = subscriber.next()
    assert (message.topic, message.payload) == (marker, b"marker")


def test_broker_stopped_gives_connlost(
    at: AtClient, own_bench_broker: tuple[BenchBroker, BrokerFixture]
) -> None:
    bench_broker, fixture = own_bench_broker
    start_and_connect(at, bench_broker)
    fixture.broker.kill()
    assert at.read_line() == "+CMQTTCONNLOST: 0,1"
    fixture.broker.start()
    at.command(bench_broker.connect_line())
    assert at.read_line() == "+CMQTTCONNECT: 0,0"


def test_refused_credentials_are_a_connack_error(at: AtClient, bench_broker: BenchBroker) -> None:
    # The project's broker has no anonymous access: a wrong password or none is refused in the CONNACK.
    at.command("ATE0")
    at.command("AT+CMQTTSTART")
    at.read_line()
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    assert at.command(bench_broker.connect_line(password="wrong")) == b"\r\nOK\r\n"
    # Mosquitto's dynamic security answers a wrong password and a missing account alike: CONNACK 5, not
    # authorised, which the modem reports as 31.
    assert at.read_line() == "+CMQTTCONNECT: 0,31"
    assert at.command(f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{bench_broker.port}",60,1') == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTCONNECT: 0,31"
    at.command(bench_broker.connect_line())
    assert at.read_line() == "+CMQTTCONNECT: 0,0"


def test_connect_to_nothing_fails_with_3(at: AtClient) -> None:
    at.command("ATE0")
    at.command("AT+CMQTTSTART")
    at.read_line()
    at.command('AT+CMQTTACCQ=0,"pd-0001"')
    assert at.command(f'AT+CMQTTCONNECT=0,"tcp://127.0.0.1:{free_port()}",60,1') == b"\r\nOK\r\n"
    assert at.read_line() == "+CMQTTCONNECT: 0,3"


def test_losing_registration_drops_mqtt_with_cause_3(
    at: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(at, bench_broker)
    on_loop(bench_loop, modem.set_registration, DENIED)
    assert at.read_line() == "+CMQTTCONNLOST: 0,3"
    at.command(bench_broker.connect_line())
    assert at.read_line() == "+CMQTTCONNECT: 0,3"


def test_persistent_session_delivers_what_was_queued(
    at: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker, subscriber: Subscriber
) -> None:
    start_and_connect(at, bench_broker, client_id="pd-0042", clean=0)
    topic = "pendant/v1/pd-0042/alarm/ack"
    subscribe(at, topic)
    on_loop(bench_loop, modem.force_connlost, 1)
    assert at.read_line() == "+CMQTTCONNLOST: 0,1"
    subscriber.publish(topic, b'{"alarm_id":"1-1","state":"received"}')
    at.command(bench_broker.connect_line("pd-0042", clean=0))
    assert at.read_line() == "+CMQTTCONNECT: 0,0"
    assert at.read_line() == f"+CMQTTRXSTART: 0,{len(topic)},37"


def test_power_cycle_drops_everything_silently(
    at: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(at, bench_broker)
    bench_loop.run(modem.power_cycle())
    assert not modem.mqtt_connected()
    # The service is stopped again: START works, ACCQ is free; echo is back on.
    assert at.command("AT+CMQTTSTART") == b"AT+CMQTTSTART\r\r\nOK\r\n"


def test_pub_result_waits_for_the_puback(at: AtClient) -> None:
    """Against a broker that accepts the connection but acknowledges nothing, QoS 1 ends in a timeout
    (17) while QoS 0 reports success once the message is written."""
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def serve() -> None:
        connection, _ = server.accept()
        connections.append(connection)
        connection.recv(1024)  # CONNECT
        connection.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
        with contextlib.suppress(OSError):  # closed at the end of the test
            while connection.recv(1024):  # PUBLISH, never acknowledged
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        start_and_connect(at, server.getsockname()[1])
        for qos, expected in ((1, "+CMQTTPUB: 0,17"), (0, "+CMQTTPUB: 0,0")):
            send_data(at, f"AT+CMQTTTOPIC=0,{len(TOPIC)}", TOPIC.encode())
            send_data(at, "AT+CMQTTPAYLOAD=0,2", b"{}")
            assert at.command(f"AT+CMQTTPUB=0,{qos},1") == b"\r\nOK\r\n"
            assert at.read_line() == expected
    finally:
        server.close()
        for connection in connections:
            connection.close()


def test_the_trace_never_shows_a_password() -> None:
    line = 'AT+CMQTTCONNECT=0,"tcp://localhost:8883",60,0,"pd-0001","pw-very-secret"'
    assert redacted(line) == 'AT+CMQTTCONNECT=0,"tcp://localhost:8883",60,0,"pd-0001","***"'
    assert redacted('AT+CMQTTCONNECT=0,"tcp://h:1",60,1') == 'AT+CMQTTCONNECT=0,"tcp://h:1",60,1'


def test_a_disconnect_reported_after_the_simulator_stopped_is_dropped() -> None:
    # paho's network thread can report the last disconnect after the simulator's loop has closed (seen
    # as "RuntimeError: Event loop is closed" in that thread at the end of a console test).
    import asyncio

    from pendant_hardware.modem_sim.mqtt_bridge import BrokerLink, ConnectParams

    async def make() -> BrokerLink:
        return BrokerLink(
            ConnectParams(
                client_id="pd-0001", host="127.0.0.1", port=free_port(), keepalive=60, clean_session=True
            ),
            on_connect_result=lambda err: None,
            on_lost=lambda err: None,
            on_message=lambda topic, payload: None,
        )

    loop = asyncio.new_event_loop()
    link = loop.run_until_complete(make())
    loop.close()
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _report_disconnect(link, errors))
    thread.start()
    thread.join(5)
    assert errors == []


def _report_disconnect(link: object, errors: list[BaseException]) -> None:
    try:
        link._paho_disconnect(None, None, None, None, None)  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
        errors.append(exc)
