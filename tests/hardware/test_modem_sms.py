"""Conformance of SMS in text mode: AT+CMGF, AT+CMGS with the `> ` prompt, Ctrl-Z and ESC, the errors,
receiving with +CMTI / AT+CMGR / AT+CMGD, and the capture of every message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.settings import SEARCHING
from pendant_hardware.modem_sim.sms import septets

from hw_helpers import AtClient, on_loop

CTRL_Z, ESC = b"\x1a", b"\x1b"
ALARM_SMS = "ALARM pd-0001 52.373101,4.892203 https://maps.example/?q=52.373101,4.892203"


@pytest.fixture
def texting(modem: ModemSim, at: AtClient) -> Iterator[AtClient]:
    """Echo off, quick network."""
    modem.settings.sms_send_s = 0.01
    at.command("ATE0")
    yield at


def sent(bench_loop: LoopThread, modem: ModemSim) -> list[dict[str, object]]:
    return on_loop(bench_loop, lambda: modem.sms_sent)


def test_text_mode_send_with_ctrl_z(texting: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    assert texting.lines("AT+CMGF?") == ["+CMGF: 0", "OK"]  # PDU mode after power-on
    assert texting.lines("AT+CMGF=?") == ["+CMGF: (0-1)", "OK"]
    assert texting.command("AT+CMGF=1") == b"\r\nOK\r\n"
    assert texting.lines("AT+CSCS?") == ['+CSCS: "GSM"', "OK"]
    assert texting.command('AT+CSCS="IRA"') == b"\r\nOK\r\n"
    assert texting.lines("AT+CSCS?") == ['+CSCS: "IRA"', "OK"]
    assert texting.command('AT+CSCS="KOI8"') == b"\r\nERROR\r\n"  # not a character set the modem has
    assert texting.command('AT+CSCS="GSM"') == b"\r\nOK\r\n"
    texting.send('AT+CMGS="112"\r')
    assert texting.read_exact(4) == b"\r\n> "
    texting.send(ALARM_SMS.encode() + CTRL_Z)
    assert texting.read_final() == b"\r\n+CMGS: 1\r\n\r\nOK\r\n"
    texting.send('AT+CMGS="+31612345678",145\r')
    texting.read_exact(4)
    texting.send(b"second" + CTRL_Z)
    assert texting.read_final() == b"\r\n+CMGS: 2\r\n\r\nOK\r\n"  # the reference counts up
    records = sent(bench_loop, modem)
    assert [(r["number"], r["text"], r["status"], r["reference"]) for r in records] == [
        ("112", ALARM_SMS, "sent", 1),
        ("+31612345678", "second", "sent", 2),
    ]


def test_echo_and_line_breaks_in_the_text(texting: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    texting.command("ATE1")
    texting.command("AT+CMGF=1")
    texting.send('AT+CMGS="112"\r')
    assert texting.read_until(b"\r\n> ") == b'AT+CMGS="112"\r\r\n> '
    texting.send(b"line one\rline two" + CTRL_Z)
    assert texting.read_final() == b"line one\r\n> line two\r\n+CMGS: 1\r\n\r\nOK\r\n"
    assert sent(bench_loop, modem)[0]["text"] == "line one\rline two"


def test_esc_cancels(texting: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    texting.command("AT+CMGF=1")
    texting.send('AT+CMGS="112"\r')
    texting.read_exact(4)
    texting.send(b"never mind" + ESC)
    assert texting.read_final() == b"\r\nOK\r\n"
    assert sent(bench_loop, modem)[0]["status"] == "cancelled"


def test_send_errors(texting: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    assert texting.command('AT+CMGS="112"') == b"\r\n+CMS ERROR: operation not supported\r\n"  # PDU mode
    texting.command("AT+CMGF=1")
    assert texting.command("AT+CMGS=112") == b"\r\nERROR\r\n"  # the number must be quoted
    assert texting.command('AT+CMGS="call me"') == b"\r\n+CMS ERROR: invalid text mode parameter\r\n"
    texting.send('AT+CMGS="112"\r')
    texting.read_exact(4)
    texting.send(b"x" * 161 + CTRL_Z)  # longer than one message
    assert texting.read_final() == b"\r\n+CMS ERROR: invalid text mode parameter\r\n"
    on_loop(bench_loop, modem.set_registration, SEARCHING)
    texting.send('AT+CMGS="112"\r')
    texting.read_exact(4)
    texting.send(b"help" + CTRL_Z)
    assert texting.read_final() == b"\r\n+CMS ERROR: no network service\r\n"
    texting.command("AT+CMEE=1")
    texting.send('AT+CMGS="112"\r')
    texting.read_exact(4)
    texting.send(b"help" + CTRL_Z)
    assert texting.read_final() == b"\r\n+CMS ERROR: 331\r\n"
    statuses = [(r["status"], r.get("error")) for r in sent(bench_loop, modem)]
    assert statuses == [("failed", 305), ("failed", 331), ("failed", 331)]


def test_receiving(texting: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    texting.command("AT+CMGF=1")
    assert texting.lines("AT+CNMI?") == ["+CNMI: 2,1,0,0,0", "OK"]
    index = on_loop(bench_loop, modem.deliver_sms, "+31612345678", "Are you safe?")
    assert texting.read_line() == f'+CMTI: "SM",{index}'
    lines = texting.lines(f"AT+CMGR={index}")
    assert lines[0].startswith('+CMGR: "REC UNREAD","+31612345678","","')
    assert lines[1:] == ["Are you safe?", "OK"]
    assert texting.lines(f"AT+CMGR={index}")[0].startswith('+CMGR: "REC READ"')
    assert texting.command(f"AT+CMGD={index}") == b"\r\nOK\r\n"
    assert texting.command(f"AT+CMGR={index}") == b"\r\n+CMS ERROR: invalid memory index\r\n"
    texting.command("AT+CNMI=2,0")
    on_loop(bench_loop, modem.deliver_sms, "112", "quiet")
    assert texting.command("AT") == b"\r\nOK\r\n"  # no +CMTI before it


def test_gsm_alphabet_length() -> None:
    assert septets("hello") == 5
    assert septets("€[]") == 6  # extension characters take two septets
    assert septets("ÄÖÜ@") == 4
    assert septets("emoji 🙂") is None  # not in the GSM alphabet
