"""Conformance of voice calls: ATD...; with each far-end outcome, ATH and AT+CVHU, AT+CHUP, AT+CLCC,
incoming calls with RING / +CLIP and ATA, and the capture of every call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.settings import DENIED

from hw_helpers import AtClient, on_loop, wait_until


@pytest.fixture
def phone(modem: ModemSim, at: AtClient) -> Iterator[AtClient]:
    """The AT client with echo off and a far end that answers within 0.1 s."""
    settings = modem.settings
    settings.call_alert_s, settings.call_answer_s, settings.call_no_answer_s = 0.02, 0.05, 0.1
    settings.ring_interval_s, settings.incoming_timeout_s = 0.1, 0.35
    at.command("ATE0")
    yield at


def without_rings(lines: list[str]) -> list[str]:
    """A response with the RING / +CLIP URCs that may land in it (as on a real modem) left out."""
    return [line for line in lines if not line.startswith(("RING", "+CLIP:"))]


def calls(bench_loop: LoopThread, modem: ModemSim) -> list[dict[str, object]]:
    return on_loop(bench_loop, lambda: modem.calls)


def test_a_call_to_112_is_answered_listed_and_ended(
    phone: AtClient, modem: ModemSim, bench_loop: LoopThread
) -> None:
    assert phone.command("ATD112;") == b"\r\nOK\r\n"
    assert phone.read_line() == "VOICE CALL: BEGIN"
    assert phone.lines("AT+CLCC") == ['+CLCC: 1,0,0,0,0,"112",129', "OK"]
    # ATH is ignored for voice calls until AT+CVHU=0 (the A76XX default is 1): the call goes on.
    assert phone.command("ATH") == b"\r\nOK\r\n"
    assert phone.lines("AT+CLCC") == ['+CLCC: 1,0,0,0,0,"112",129', "OK"]
    assert phone.lines("AT+CVHU?") == ["+CVHU: 1", "OK"]
    assert phone.command("AT+CVHU=0") == b"\r\nOK\r\n"
    assert phone.command("ATH") == b"\r\nVOICE CALL: END: 000000\r\n\r\nOK\r\n"
    assert phone.lines("AT+CLCC") == ["OK"]
    [call] = calls(bench_loop, modem)
    assert (call["direction"], call["number"], call["outcome"], call["ended_by"]) == (
        "out",
        "112",
        "answered",
        "host",
    )
    assert call["answered"] and call["ended"]


@pytest.mark.parametrize(
    ("outcome", "final"), [("busy", "BUSY"), ("no_answer", "NO ANSWER"), ("no_carrier", "NO CARRIER")]
)
def test_far_end_outcomes(
    phone: AtClient, modem: ModemSim, bench_loop: LoopThread, outcome: str, final: str
) -> None:
    modem.settings.call_outcomes["+31201234567"] = outcome
    assert phone.command("ATD+31201234567;") == b"\r\nOK\r\n"
    assert phone.read_line() == final
    assert phone.lines("AT+CLCC") == ["OK"]
    [call] = calls(bench_loop, modem)
    assert call["outcome"] == outcome and call["answered"] is None and call["number"] == "+31201234567"


def test_clcc_reports_every_state_when_asked(phone: AtClient) -> None:
    assert phone.command("AT+CLCC=1") == b"\r\nOK\r\n"
    assert phone.lines("AT+CLCC?") == ["+CLCC: 1", "OK"]
    assert phone.command("ATD0612345678;") == b"\r\nOK\r\n"
    assert phone.read_line() == '+CLCC: 1,0,2,0,0,"0612345678",129'  # dialling
    assert phone.read_line() == '+CLCC: 1,0,3,0,0,"0612345678",129'  # alerting
    assert phone.read_line() == '+CLCC: 1,0,0,0,0,"0612345678",129'  # active
    assert phone.read_line() == "VOICE CALL: BEGIN"
    assert (
        phone.command("AT+CHUP")
        == b'\r\nVOICE CALL: END: 000000\r\n\r\n+CLCC: 1,0,6,0,0,"0612345678",129\r\n\r\nOK\r\n'
    )


def test_the_far_end_hangs_up(phone: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    modem.settings.call_remote_hangup_s = 0.05
    phone.command("ATD112;")
    assert phone.read_line() == "VOICE CALL: BEGIN"
    assert phone.read_line() == "VOICE CALL: END: 000000"
    assert phone.read_line() == "NO CARRIER"
    assert calls(bench_loop, modem)[0]["ended_by"] == "remote"


def test_without_network_only_emergency_numbers_connect(
    phone: AtClient, modem: ModemSim, bench_loop: LoopThread
) -> None:
    on_loop(bench_loop, modem.set_registration, DENIED)
    assert phone.command("ATD0612345678;") == b"\r\nOK\r\n"
    assert phone.read_line() == "NO CARRIER"
    modem.settings.sim_ready = False
    assert phone.command("ATD112;") == b"\r\nOK\r\n"  # 112 needs neither SIM nor registration
    assert phone.read_line() == "VOICE CALL: BEGIN"
    outcomes = [(call["number"], call["outcome"]) for call in calls(bench_loop, modem)]
    assert outcomes == [("0612345678", "no_carrier"), ("112", "answered")]


def test_dial_errors(phone: AtClient) -> None:
    assert phone.command("ATD112") == b"\r\nERROR\r\n"  # no ';': a data call, not supported
    assert phone.command("ATD12a4;") == b"\r\nERROR\r\n"
    assert phone.command("ATD112;") == b"\r\nOK\r\n"
    assert phone.command("ATD113;") == b"\r\n+CME ERROR: operation not allowed\r\n"  # one call at a time
    assert phone.command("ATA") == b"\r\nNO CARRIER\r\n"  # nothing rings


def test_incoming_call_rings_with_clip_and_is_answered(
    phone: AtClient, modem: ModemSim, bench_loop: LoopThread
) -> None:
    assert phone.command("AT+CLIP=1") == b"\r\nOK\r\n"
    assert phone.lines("AT+CLIP?") == ["+CLIP: 1,1", "OK"]
    modem.settings.incoming_timeout_s = 30
    on_loop(bench_loop, modem.ring, "+31612345678")
    assert phone.read_line() == "RING"
    assert phone.read_line() == '+CLIP: "+31612345678",145,,,,0'
    assert phone.read_line() == "RING"  # again, every ring interval
    assert without_rings(phone.lines("AT+CLCC")) == ['+CLCC: 1,1,4,0,0,"+31612345678",145', "OK"]
    assert without_rings(phone.lines("ATA")) == ["OK"]
    assert phone.expect_line("VOICE CALL:") == "VOICE CALL: BEGIN"
    assert phone.lines("AT+CLCC") == ['+CLCC: 1,1,0,0,0,"+31612345678",145', "OK"]
    phone.command("AT+CHUP")
    [call] = calls(bench_loop, modem)
    assert (call["direction"], call["outcome"], call["ended_by"]) == ("in", "answered", "host")


def test_an_unanswered_incoming_call_is_missed(
    phone: AtClient, modem: ModemSim, bench_loop: LoopThread
) -> None:
    on_loop(bench_loop, modem.ring, "0612345678")
    assert phone.read_line() == "RING"
    assert phone.expect_line("MISSED_CALL:").endswith(" 0612345678")
    wait_until(lambda: calls(bench_loop, modem)[0]["outcome"] == "missed", what="the call to end as missed")
    with pytest.raises(ValueError, match="not a phone number"):
        on_loop(bench_loop, modem.ring, "call me")
