"""GNSS power, the READY! URC and both position formats."""

from __future__ import annotations

import time

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.gnss import cgnssinfo_fields, to_ddmm
from pendant_hardware.modem_sim.settings import GNSS_STYLE_DECIMAL, ModemSettings

from hw_helpers import AtClient, on_loop

NO_FIX_MANUAL = "+CGNSSINFO: ,,,,,,,,,,,,,,,"


def power_on(at: AtClient) -> None:
    at.command("ATE0")
    assert at.command("AT+CGNSSPWR=1") == b"\r\nOK\r\n"
    assert at.read_line() == "+CGNSSPWR: READY!"


def test_no_position_while_gnss_is_off(at: AtClient) -> None:
    at.command("ATE0")
    assert at.lines("AT+CGNSSINFO") == [NO_FIX_MANUAL, "OK"]
    assert at.lines("AT+CGPSINFO") == ["+CGPSINFO: ,,,,,,,,", "OK"]


def test_position_after_ready(at: AtClient) -> None:
    power_on(at)
    (info, ok) = at.lines("AT+CGNSSINFO")
    fields = info.removeprefix("+CGNSSINFO: ").split(",")
    assert ok == "OK"
    assert len(fields) == 16
    assert fields[0] == "3"
    assert fields[4:8] == ["5222.386060", "N", "00453.532180", "E"]
    assert fields[8] == time.strftime("%d%m%y", time.gmtime())
    (gps, _) = at.lines("AT+CGPSINFO")
    assert gps.removeprefix("+CGPSINFO: ").split(",")[:4] == ["5222.386060", "N", "00453.532180", "E"]


def test_fix_hook_and_power_off(at: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    power_on(at)
    on_loop(bench_loop, modem.set_gnss_fix, False)
    assert at.lines("AT+CGNSSINFO") == [NO_FIX_MANUAL, "OK"]
    on_loop(bench_loop, modem.set_gnss_fix, True)
    assert at.lines("AT+CGNSSINFO")[0] != NO_FIX_MANUAL
    assert at.command("AT+CGNSSPWR=0") == b"\r\nOK\r\n"
    assert at.lines("AT+CGNSSINFO") == [NO_FIX_MANUAL, "OK"]


def test_decimal_style_of_newer_firmware(bench_loop: LoopThread) -> None:
    settings = ModemSettings(boot_urcs=False, gnss_ready_delay_s=0.01, gnss_style=GNSS_STYLE_DECIMAL)
    sim = on_loop(bench_loop, ModemSim, settings)
    bench_loop.run(sim.start())
    client = AtClient(sim.port)
    try:
        assert client.lines("AT+CGNSSINFO") == ["+CGNSSINFO: " + "," * 17, "OK"]
        power_on(client)
        fields = client.lines("AT+CGNSSINFO")[0].removeprefix("+CGNSSINFO: ").split(",")
        assert len(fields) == 18
        assert fields[5:9] == ["52.3731010", "N", "4.8922030", "E"]
    finally:
        client.close()
        bench_loop.run(sim.stop())


@pytest.mark.parametrize(
    ("degrees", "digits", "expected"),
    [(52.373101, 2, ("5222.386060", "N")), (-4.5, 3, ("00430.000000", "S")), (0.0, 2, ("0000.000000", "N"))],
)
def test_to_ddmm(degrees: float, digits: int, expected: tuple[str, str]) -> None:
    assert to_ddmm(degrees, digits, "N", "S") == expected


def test_southern_western_hemispheres() -> None:
    settings = ModemSettings(latitude=-33.8688, longitude=-151.2093)
    fields = cgnssinfo_fields(settings, 0).split(",")
    assert fields[5] == "S" and fields[7] == "W"
    assert fields[8:10] == ["010170", "000000.0"]
