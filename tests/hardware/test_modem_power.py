"""Conformance of the power commands: AT+CSCLK, AT+CPSMS, AT+CFUN, AT+CPOF, and PWRKEY timing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim

from hw_helpers import AtClient, on_loop, wait_until


@pytest.fixture
def host(at: AtClient) -> Iterator[AtClient]:
    at.command("ATE0")
    yield at


def power_state(bench_loop: LoopThread, modem: ModemSim) -> str:
    return on_loop(bench_loop, lambda: modem.power_state)


def test_csclk(host: AtClient) -> None:
    assert host.lines("AT+CSCLK?") == ["+CSCLK: 0", "OK"]
    assert host.command("AT+CSCLK=1") == b"\r\nOK\r\n"
    assert host.lines("AT+CSCLK?") == ["+CSCLK: 1", "OK"]
    assert host.command("AT+CSCLK=3") == b"\r\nERROR\r\n"


def test_cpsms(host: AtClient) -> None:
    assert host.lines("AT+CPSMS?") == ["+CPSMS: 0,,,,", "OK"]
    assert host.command('AT+CPSMS=1,,,"00000100","00000001"') == b"\r\nOK\r\n"
    assert host.lines("AT+CPSMS?") == ['+CPSMS: 1,,,"00000100","00000001"', "OK"]
    assert host.command('AT+CPSMS=1,,,"4 hours"') == b"\r\nERROR\r\n"
    assert host.command("AT+CPSMS=0") == b"\r\nOK\r\n"
    assert host.lines("AT+CPSMS?") == ["+CPSMS: 0,,,,", "OK"]


def test_cfun_switches_the_radio(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    assert host.lines("AT+CFUN?") == ["+CFUN: 1", "OK"]
    host.command("AT+CEREG=1")
    assert host.command("AT+CFUN=4") == b"\r\n+CEREG: 0\r\n\r\nOK\r\n"
    assert host.lines("AT+CSQ") == ["+CSQ: 99,99", "OK"]
    assert host.lines("AT+CEREG?") == ["+CEREG: 1,0", "OK"]
    assert host.command("AT+CFUN=1") == b"\r\n+CEREG: 1\r\n\r\nOK\r\n"
    assert host.command("AT+CFUN=2") == b"\r\nERROR\r\n"
    assert host.lines("AT+CGACT?") == ["+CGACT: 1,1", "OK"]


def test_cpof_then_pwrkey(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    assert host.command("AT+CPOF") == b"\r\nOK\r\n"
    wait_until(lambda: power_state(bench_loop, modem) == "off", what="the modem to switch off")
    host.send("AT\r")
    host.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        host.read_final()
    host.sock.settimeout(10)
    assert on_loop(bench_loop, modem.pwrkey, 30) == "nothing"  # shorter than the power-on pulse
    assert on_loop(bench_loop, modem.pwrkey, 100) == "on"
    wait_until(lambda: power_state(bench_loop, modem) == "on", what="the modem to boot")
    assert host.command("AT") == b"AT\r\r\nOK\r\n"
    assert on_loop(bench_loop, modem.pwrkey, 1000) == "nothing"  # too short to switch it off
    assert on_loop(bench_loop, modem.pwrkey, 2500) == "off"


def test_cfun_reset_restarts(host: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    ons = on_loop(bench_loop, lambda: modem.power_ons)
    assert host.command("AT+CFUN=1,1") == b"\r\nOK\r\n"
    wait_until(lambda: on_loop(bench_loop, lambda: modem.power_ons) == ons + 1, what="the restart")
    assert host.command("AT") == b"AT\r\r\nOK\r\n"
