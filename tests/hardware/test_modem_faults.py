"""Every fault the modem can be given, seen from the host's side of the UART as the firmware would see it,
plus the pure rules of the fault catalogue."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from test_modem_mqtt import ACK_TOPIC, TOPIC, send_data, start_and_connect, subscribe

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.faults import (
    FAULTS,
    ByteMangler,
    fault_spec,
    noise,
    parse_assignments,
    parse_params,
)

from hw_helpers import AtClient, BenchBroker, on_loop, wait_until


@pytest.fixture
def host(at: AtClient) -> Iterator[AtClient]:
    at.command("ATE0")
    yield at


def inject(bench_loop: LoopThread, modem: ModemSim, fault: str, **params: object) -> dict:
    return on_loop(bench_loop, lambda: modem.inject(fault, **params))


def clear(bench_loop: LoopThread, modem: ModemSim, fault: str | None = None) -> dict:
    return on_loop(bench_loop, lambda: modem.clear(fault))


def silent(at: AtClient, command: str, wait_s: float = 0.3) -> None:
    """The modem says nothing to `command` for `wait_s`."""
    at.send(command + "\r")
    at.sock.settimeout(wait_s)
    try:
        with pytest.raises(TimeoutError):
            at.read_final()
    finally:
        at.sock.settimeout(10)


# -- the catalogue (pure) ----------------------------------------------------------------------------


def test_catalogue_names_every_fault_the_issue_asks_for() -> None:
    asked = {
        "no_signal", "registration_denied", "roaming", "connlost", "nonet", "broker_unreachable", "slow",
        "drop_bytes", "garble_bytes", "client_busy", "gnss_no_fix", "gnss_cold_start", "call_not_answered",
        "sms_failure", "hung", "quirk_start_before_ok", "quirk_rx_chunks", "quirk_gnss_decimal",
        "quirk_interleave",
    }  # fmt: skip
    assert asked <= set(FAULTS)
    assert all(spec.summary for spec in FAULTS.values())


def test_parameters_are_checked_and_converted() -> None:
    spec = fault_spec("connlost")
    assert parse_params(spec, {}) == {"cause": 1, "client": -1}
    assert parse_params(spec, {"cause": "3"}) == {"cause": 3, "client": -1}
    with pytest.raises(
        ValueError, match="fault connlost has no parameter 'reason' \\(parameters: cause, client\\)"
    ):
        parse_params(spec, {"reason": 1})
    with pytest.raises(ValueError, match="cause must be a int, not 'soon'"):
        parse_params(spec, {"cause": "soon"})
    assert parse_params(fault_spec("drop_bytes"), {"rate": 1}) == {"rate": 1.0, "seed": 1}
    with pytest.raises(ValueError, match="rate must be between 0 and 1"):
        parse_params(fault_spec("drop_bytes"), {"rate": "1.5"})
    with pytest.raises(ValueError, match="unknown fault 'flood'"):
        fault_spec("flood")
    assert parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="name=value"):
        parse_assignments(["=1"])


def test_byte_mangler_is_reproducible() -> None:
    data = bytes(range(256)) * 4
    first, second = ByteMangler(0.1, 0.1, seed=7), ByteMangler(0.1, 0.1, seed=7)
    assert first(data) == second(data)
    assert first.dropped and first.garbled
    assert len(first(data)) < len(data)
    assert ByteMangler(0.0, 0.0)(data) == data
    assert ByteMangler(1.0, 0.0)(data) == b""
    garbled = ByteMangler(0.0, 1.0)(data)
    assert len(garbled) == len(data) and all(a != b for a, b in zip(garbled, data, strict=True))
    assert noise(16, 3) == noise(16, 3) and len(noise(16, 3)) == 16


# -- network -----------------------------------------------------------------------------------------


def test_no_signal_and_back(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    host.command("AT+CEREG=1")
    assert inject(bench_loop, modem, "no_signal") == {"no_signal": {}}
    assert host.read_line() == "+CEREG: 2"
    assert host.lines("AT+CSQ") == ["+CSQ: 99,99", "OK"]
    assert host.lines("AT+CEREG?") == ["+CEREG: 1,2", "OK"]
    assert host.lines("AT+CPSI?") == ["+CPSI: NO SERVICE,Online", "OK"]
    assert clear(bench_loop, modem, "no_signal") == {}
    assert host.read_line() == "+CEREG: 1"
    assert host.lines("AT+CSQ") == ["+CSQ: 20,99", "OK"]


def test_denied_and_roaming_stack_and_unwind(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "registration_denied")
    assert host.lines("AT+CREG?") == ["+CREG: 0,3", "OK"]
    assert host.command("ATD0612345678;") == b"\r\nOK\r\n"
    assert host.read_line() == "NO CARRIER"
    inject(bench_loop, modem, "roaming")
    assert host.lines("AT+CEREG?") == ["+CEREG: 0,5", "OK"]
    clear(bench_loop, modem, "roaming")
    assert host.lines("AT+CEREG?") == ["+CEREG: 0,3", "OK"]  # the other fault is still in force
    clear(bench_loop, modem)
    assert host.lines("AT+CEREG?") == ["+CEREG: 0,1", "OK"]


@pytest.mark.broker
def test_no_signal_drops_mqtt_roaming_does_not(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(host, bench_broker)
    inject(bench_loop, modem, "roaming")
    assert host.command("AT") == b"\r\nOK\r\n"
    assert on_loop(bench_loop, modem.mqtt_connected)
    inject(bench_loop, modem, "no_signal")
    assert host.expect_line("+CMQTTCONNLOST") == "+CMQTTCONNLOST: 0,3"


# -- MQTT --------------------------------------------------------------------------------------------


@pytest.mark.broker
def test_connlost_with_a_cause_sends_the_will(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    watcher = bench_broker.backend()
    try:
        will = b'{"online":false}'
        host.command("AT+CMQTTSTART")
        host.read_line()
        host.command('AT+CMQTTACCQ=0,"pd-0001"')
        send_data(host, "AT+CMQTTWILLTOPIC=0,25", b"pendant/v1/pd-0001/status")
        send_data(host, f"AT+CMQTTWILLMSG=0,{len(will)},1", will)
        host.command(bench_broker.connect_line())
        assert host.read_line() == "+CMQTTCONNECT: 0,0"
        assert inject(bench_loop, modem, "connlost", cause=2) == {}  # once: nothing stays in force
        assert host.read_line() == "+CMQTTCONNLOST: 0,2"
        assert watcher.next().payload == will
    finally:
        watcher.close()


@pytest.mark.broker
def test_nonet_stops_the_service(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(host, bench_broker)
    inject(bench_loop, modem, "nonet")
    assert host.read_line() == "+CMQTTNONET"
    assert not on_loop(bench_loop, modem.mqtt_connected)
    assert host.command('AT+CMQTTACCQ=0,"pd-0001"') == b"\r\n+CMQTTACCQ: 0,9\r\n\r\nERROR\r\n"  # not started
    start_and_connect(host, bench_broker)  # the host starts again from the top


@pytest.mark.broker
def test_broker_unreachable(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(host, bench_broker)
    inject(bench_loop, modem, "broker_unreachable", err=3, after_s=0.05)
    assert host.read_line() == "+CMQTTCONNLOST: 0,3"
    assert host.command(bench_broker.connect_line()) == b"\r\nOK\r\n"
    assert host.read_line() == "+CMQTTCONNECT: 0,3"
    clear(bench_loop, modem, "broker_unreachable")
    host.command(bench_broker.connect_line())
    assert host.read_line() == "+CMQTTCONNECT: 0,0"


@pytest.mark.broker
def test_client_busy_fails_the_next_publishes(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    watcher = bench_broker.backend()
    try:
        start_and_connect(host, bench_broker)
        assert inject(bench_loop, modem, "client_busy", count=2) == {"client_busy": {"count": 2}}
        for attempt in (1, 2, 3):
            send_data(host, f"AT+CMQTTTOPIC=0,{len(TOPIC)}", TOPIC.encode())
            send_data(host, "AT+CMQTTPAYLOAD=0,1", str(attempt).encode())
            if attempt < 3:
                assert host.command("AT+CMQTTPUB=0,1,60") == b"\r\n+CMQTTPUB: 0,14\r\n\r\nERROR\r\n"
            else:
                assert host.command("AT+CMQTTPUB=0,1,60") == b"\r\nOK\r\n"
                assert host.read_line() == "+CMQTTPUB: 0,0"
            if attempt == 1:
                assert on_loop(bench_loop, modem.faults.summary) == {"client_busy": {"count": 1}}
        assert watcher.next().payload == b"3"  # only the publish that went through
        assert on_loop(bench_loop, modem.faults.summary) == {}
    finally:
        watcher.close()


def test_quirk_start_before_ok(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "quirk_start_before_ok")
    assert host.command("AT+CMQTTSTART") == b"\r\n+CMQTTSTART: 0\r\n\r\nOK\r\n"


@pytest.mark.broker
def test_quirk_rx_chunks(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(host, bench_broker)
    subscribe(host, ACK_TOPIC)
    inject(bench_loop, modem, "quirk_rx_chunks", bytes=10)
    watcher = bench_broker.backend()
    try:
        watcher.publish(ACK_TOPIC, b"0123456789abcde")
        assert host.read_line() == f"+CMQTTRXSTART: 0,{len(ACK_TOPIC)},15"
        topic_chunks = (len(ACK_TOPIC) + 9) // 10
        data = host.read_until(b"+CMQTTRXEND: 0\r\n")
        assert data.count(b"+CMQTTRXTOPIC: 0,") == topic_chunks
        assert (
            b"+CMQTTRXPAYLOAD: 0,10\r\n0123456789\r\n" in data
            and b"+CMQTTRXPAYLOAD: 0,5\r\nabcde\r\n" in data
        )
    finally:
        watcher.close()


@pytest.mark.broker
def test_quirk_interleave_puts_urcs_inside_a_response(
    host: AtClient, modem: ModemSim, bench_loop: LoopThread, bench_broker: BenchBroker
) -> None:
    start_and_connect(host, bench_broker)
    subscribe(host, ACK_TOPIC)
    inject(bench_loop, modem, "quirk_interleave", urc="RING")
    assert host.lines("AT+CSQ") == ["+CSQ: 20,99", "RING", "OK"]
    assert host.lines("AT+CSQ") == ["+CSQ: 20,99", "OK"]  # once per injection
    watcher = bench_broker.backend()
    try:
        watcher.publish(ACK_TOPIC, b"ack")
        time.sleep(0.2)  # the message is in; the modem holds it for the next command (at most 1 s)
        lines = host.lines("AT+CSQ")
        assert lines[0] == "+CSQ: 20,99" and lines[1].startswith("+CMQTTRXSTART: 0,") and lines[-1] == "OK"
        assert "+CMQTTRXEND: 0" in lines
    finally:
        watcher.close()


# -- the wire ----------------------------------------------------------------------------------------


def test_slow_answers_late(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "slow", ms=1500)
    silent(host, "AT")  # not within the first 0.3 s ...
    assert host.read_final() == b"\r\nOK\r\n"  # ... but it comes
    clear(bench_loop, modem, "slow")
    assert host.command("AT") == b"\r\nOK\r\n"


def test_dropped_and_garbled_bytes(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "drop_bytes", rate=1.0)
    silent(host, "AT+CSQ")
    clear(bench_loop, modem, "drop_bytes")
    inject(bench_loop, modem, "garble_bytes", rate=1.0, seed=5)
    host.send("AT+CSQ\r")
    expected = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    received = host.read_exact(len(expected))
    assert received == ByteMangler(0.0, 1.0, seed=5)(expected)  # every byte corrupted, reproducibly
    clear(bench_loop, modem)
    assert host.command("AT") == b"\r\nOK\r\n"


def test_noise(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "noise", bytes=24, seed=9)
    assert host.read_exact(24) == noise(24, 9)
    assert host.command("AT") == b"\r\nOK\r\n"  # the modem itself is fine


def test_hung_until_power_cycled(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "hung")
    silent(host, "AT")
    bench_loop.run(modem.power_cycle())
    wait_until(lambda: on_loop(bench_loop, lambda: modem.power_state) == "on", what="the modem to boot")
    assert host.command("AT") == b"AT\r\r\nOK\r\n"
    assert on_loop(bench_loop, modem.faults.summary) == {}


def test_sim_missing(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "sim_missing")
    assert host.command("AT+CPIN?") == b"\r\n+CME ERROR: SIM not inserted\r\n"
    clear(bench_loop, modem, "sim_missing")
    assert host.lines("AT+CPIN?") == ["+CPIN: READY", "OK"]


# -- GNSS, voice, SMS --------------------------------------------------------------------------------


def test_gnss_no_fix_and_cold_start(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "gnss_no_fix")
    host.command("AT+CGNSSPWR=1")
    assert host.read_line() == "+CGNSSPWR: READY!"
    assert host.lines("AT+CGNSSINFO") == ["+CGNSSINFO: " + "," * 15, "OK"]
    clear(bench_loop, modem, "gnss_no_fix")
    host.command("AT+CGNSSPWR=0")
    inject(bench_loop, modem, "gnss_cold_start", ttff_s=0.5)
    host.command("AT+CGNSSPWR=1")
    assert host.read_line() == "+CGNSSPWR: READY!"
    assert host.lines("AT+CGPSINFO") == ["+CGPSINFO: ,,,,,,,,", "OK"]  # ready, but no fix yet
    wait_until(lambda: not host.lines("AT+CGPSINFO")[0].endswith(",,,,,,,,"), what="the first fix")


def test_quirk_gnss_decimal(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    inject(bench_loop, modem, "quirk_gnss_decimal")
    host.command("AT+CGNSSPWR=1")
    host.read_line()
    fields = host.lines("AT+CGNSSINFO")[0].split(": ")[1].split(",")
    assert len(fields) == 18 and fields[5] == "52.3731010" and fields[7] == "4.8922030"


def test_calls_not_answered_or_busy(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    modem.settings.call_alert_s = modem.settings.call_answer_s = modem.settings.call_no_answer_s = 0.02
    inject(bench_loop, modem, "call_not_answered", number="112")
    inject(bench_loop, modem, "call_busy", number="0612345678")
    host.command("ATD112;")
    assert host.read_line() == "NO ANSWER"
    host.command("ATD0612345678;")
    assert host.read_line() == "BUSY"
    clear(bench_loop, modem, "call_not_answered")
    host.command("ATD112;")
    assert host.read_line() == "VOICE CALL: BEGIN"


def test_sms_failure(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    modem.settings.sms_send_s = 0.01
    inject(bench_loop, modem, "sms_failure", count=1, code=332)
    host.command("AT+CMGF=1")
    for final in (b"\r\n+CMS ERROR: network timeout\r\n", b"\r\n+CMGS: 1\r\n\r\nOK\r\n"):
        host.send('AT+CMGS="112"\r')
        host.read_exact(4)
        host.send(b"ALARM\x1a")
        assert host.read_final() == final
    statuses = [record["status"] for record in on_loop(bench_loop, lambda: modem.sms_sent)]
    assert statuses == ["failed", "sent"]


def test_unknown_faults_and_parameters_are_refused(modem: ModemSim, bench_loop: LoopThread) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        inject(bench_loop, modem, "meteor")
    with pytest.raises(ValueError, match="has no parameter"):
        inject(bench_loop, modem, "slow", delay=3)
    with pytest.raises(ValueError, match="cause must be 1"):
        inject(bench_loop, modem, "connlost", cause=7)
    with pytest.raises(ValueError, match="unknown fault"):
        clear(bench_loop, modem, "meteor")
