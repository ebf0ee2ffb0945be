"""Conformance of the modem simulator's general and network commands, byte-exact where it matters."""

from __future__ import annotations

import re
import time

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings, ModemSim
from pendant_hardware.modem_sim.general import format_cclk
from pendant_hardware.modem_sim.settings import DENIED, ROAMING, luhn_valid

from hw_helpers import AtClient, on_loop, wait_until


def test_echo_is_on_until_ate0(at: AtClient) -> None:
    assert at.command("AT") == b"AT\r\r\nOK\r\n"
    assert at.command("ATE0") == b"ATE0\r\r\nOK\r\n"
    assert at.command("AT") == b"\r\nOK\r\n"
    assert at.command("ATE1") == b"\r\nOK\r\n"
    assert at.command("AT") == b"AT\r\r\nOK\r\n"


def test_crlf_line_end_is_one_command(at: AtClient) -> None:
    at.command("ATE0")
    at.send(b"AT\r\nAT+CSQ\r\n")
    assert at.read_final() == b"\r\nOK\r\n"
    assert at.read_final() == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"


def test_unknown_commands_answer_error(at: AtClient) -> None:
    at.command("ATE0")
    assert at.command("AT+NOPE") == b"\r\nERROR\r\n"
    assert at.command("AT+CSQ?") == b"\r\nERROR\r\n"  # known command, unknown form
    assert at.command("AT+CMEE=7") == b"\r\nERROR\r\n"  # out of range
    at.send(b"hello\r")  # no AT prefix: ignored, as modems do
    assert at.command("AT") == b"\r\nOK\r\n"


def test_identification(at: AtClient, modem: ModemSim) -> None:
    at.command("ATE0")
    imei = modem.settings.imei
    assert (
        at.command("ATI")
        == (
            "\r\nManufacturer: SIMCOM INCORPORATED\r\nModel: A7670E-FASE\r\nRevision: A011B07A7670M7_F\r\n"
            f"IMEI: {imei}\r\n+GCAP: +CGSM,+FCLASS,+DS\r\n\r\nOK\r\n"
        ).encode()
    )
    assert at.lines("AT+SIMCOMATI") == [
        "Manufacturer: SIMCOM INCORPORATED",
        "Model: A7670E-FASE",
        "Revision: A011B07A7670M7_F",
        "A7670M7_B07V01_240927",
        f"IMEI: {imei}",
        "OK",
    ]
    assert at.command("AT+CGMR") == b"\r\n+CGMR: A011B07A7670M7_F\r\n\r\nOK\r\n"
    assert at.command("AT+CGSN") == f"\r\n{imei}\r\n\r\nOK\r\n".encode()
    assert at.lines("AT+CICCID") == [f"+ICCID: {modem.settings.iccid}", "OK"]


def test_identity_per_device_is_valid_and_distinct() -> None:
    one, two = ModemSettings.for_device("pd-0001"), ModemSettings.for_device("pd-0002")
    for settings in (one, two):
        assert len(settings.imei) == 15 and luhn_valid(settings.imei)
        assert len(settings.iccid) == 20 and luhn_valid(settings.iccid)
    assert one.imei != two.imei and one.iccid != two.iccid


def test_cme_error_format_follows_cmee(at: AtClient, modem: ModemSim) -> None:
    at.command("ATE0")
    assert at.lines("AT+CPIN?") == ["+CPIN: READY", "OK"]
    modem.settings.sim_ready = False
    assert at.lines("AT+CMEE?") == ["+CMEE: 2", "OK"]
    assert at.command("AT+CPIN?") == b"\r\n+CME ERROR: SIM not inserted\r\n"
    at.command("AT+CMEE=1")
    assert at.command("AT+CPIN?") == b"\r\n+CME ERROR: 10\r\n"
    at.command("AT+CMEE=0")
    assert at.command("AT+CPIN?") == b"\r\nERROR\r\n"


def test_signal_and_registration(at: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    at.command("ATE0")
    assert at.lines("AT+CSQ") == ["+CSQ: 20,99", "OK"]
    assert at.lines("AT+CREG?") == ["+CREG: 0,1", "OK"]
    assert at.lines("AT+CGREG?") == ["+CGREG: 0,1", "OK"]
    assert at.lines("AT+CEREG?") == ["+CEREG: 0,1", "OK"]
    at.command("AT+CEREG=2")
    assert at.lines("AT+CEREG?") == ['+CEREG: 2,1,"1A2B","0BC614E",7', "OK"]
    at.command("AT+CREG=1")
    on_loop(bench_loop, modem.set_registration, ROAMING)
    assert at.read_line() == "+CREG: 5"
    assert at.read_line() == '+CEREG: 5,"1A2B","0BC614E",7'
    on_loop(bench_loop, modem.set_registration, DENIED)
    assert at.read_line() == "+CREG: 3"
    assert at.read_line() == "+CEREG: 3"
    assert at.lines("AT+CGREG?") == ["+CGREG: 0,3", "OK"]
    assert at.command("AT+CGREG=2") == b"\r\nOK\r\n"
    assert at.lines("AT+CGREG?") == ["+CGREG: 2,3", "OK"]  # no cell fields while not registered
    assert at.command("AT+CGREG=3") == b"\r\nERROR\r\n"


def test_serving_cell(at: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    at.command("ATE0")
    (cpsi, ok) = at.lines("AT+CPSI?")
    assert ok == "OK"
    fields = cpsi.removeprefix("+CPSI: ").split(",")
    assert fields[:7] == ["LTE", "Online", "204-08", "0x1A2B", "12345678", "257", "EUTRAN-BAND20"]
    assert len(fields) == 14
    on_loop(bench_loop, modem.set_registration, DENIED)
    assert at.lines("AT+CPSI?") == ["+CPSI: NO SERVICE,Online", "OK"]


def test_pdp_context(at: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    at.command("ATE0")
    assert at.command('AT+CGDCONT=1,"IP","internet"') == b"\r\nOK\r\n"
    assert at.command("AT+CGACT=1,1") == b"\r\nOK\r\n"
    assert at.lines("AT+CGACT?") == ["+CGACT: 1,1", "OK"]
    assert at.command("AT+CGACT=0,1") == b"\r\nOK\r\n"
    assert at.lines("AT+CGACT?") == ["+CGACT: 1,0", "OK"]
    assert at.command("AT+CGDCONT=1,IP") == b"\r\nERROR\r\n"  # strings must be quoted
    on_loop(bench_loop, modem.set_registration, DENIED)
    assert at.command("AT+CGACT=1,1") == b"\r\n+CME ERROR: no network service\r\n"


def test_clock_is_host_time_in_quarter_hours(at: AtClient) -> None:
    at.command("ATE0")
    (line, _) = at.lines("AT+CCLK?")
    match = re.fullmatch(r'\+CCLK: "(\d\d/\d\d/\d\d,\d\d:\d\d:\d\d)([+-]\d\d)"', line)
    assert match is not None, line
    quarters = time.localtime().tm_gmtoff // 900
    assert int(match.group(2)) == quarters
    shown = time.mktime(time.strptime(match.group(1), "%y/%m/%d,%H:%M:%S"))
    assert abs(shown - time.time()) < 120


def test_format_cclk_signs_the_zone() -> None:
    assert re.fullmatch(r"\d\d/\d\d/\d\d,\d\d:\d\d:\d\d[+-]\d\d", format_cclk(0))


def test_battery_voltage(bench_loop: LoopThread) -> None:
    sim = on_loop(bench_loop, lambda: ModemSim(ModemSettings(boot_urcs=False), battery_mv=lambda: 3749))
    bench_loop.run(sim.start())
    client = AtClient(sim.port)
    try:
        assert client.command("AT+CBC") == b"AT+CBC\r\r\n+CBC: 3.749V\r\n\r\nOK\r\n"
    finally:
        client.close()
        bench_loop.run(sim.stop())


def test_boot_urcs_after_power_on_only(bench_loop: LoopThread) -> None:
    sim = on_loop(bench_loop, ModemSim, ModemSettings())
    bench_loop.run(sim.start())
    try:
        first = AtClient(sim.port)
        assert first.read_until(b"PB DONE\r\n") == (
            b"\r\n*ATREADY: 1\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n"
        )
        first.close()
        second = AtClient(sim.port)  # the board rebooted, the modem did not: no boot URCs
        assert second.command("AT") == b"AT\r\r\nOK\r\n"
        bench_loop.run(sim.power_cycle())
        assert second.read_until(b"PB DONE\r\n").endswith(b"\r\nPB DONE\r\n")
        second.close()
    finally:
        bench_loop.run(sim.stop())


def test_a_new_connection_replaces_the_old(modem: ModemSim) -> None:
    old = AtClient(modem.port)
    assert old.command("AT") == b"AT\r\r\nOK\r\n"
    new = AtClient(modem.port)
    try:
        assert new.command("AT") == b"AT\r\r\nOK\r\n"
        with pytest.raises((ConnectionError, OSError)):
            old.command("AT")
    finally:
        old.close()
        new.close()


def test_reset_restores_power_on_state(at: AtClient, bench_loop: LoopThread, modem: ModemSim) -> None:
    at.command("ATE0")
    modem.settings.boot_delay_s = 0.3
    assert at.command("AT+CRESET") == b"\r\nOK\r\n"
    # While it restarts the modem hears nothing; then echo is back on (no boot URCs in this fixture).
    at.send("AT\r")
    with pytest.raises(TimeoutError):
        at.sock.settimeout(0.2)
        at.read_final()
    at.sock.settimeout(10)
    wait_until(lambda: on_loop(bench_loop, lambda: modem.power_state) == "on")
    assert at.command("AT") == b"AT\r\r\nOK\r\n"
