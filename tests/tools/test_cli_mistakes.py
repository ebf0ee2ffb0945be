"""`pendant provision` and `pendant bench` when something is wrong: one line, a fixed exit code, nothing
half done; and the small pure readers they rely on (modem answers, the console's crash lines)."""

from __future__ import annotations

import json
import os
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from repl_pty import MicroPythonOnPty

from pendant_backend.db import make_engine
from pendant_hardware.flash import write_sim_ports
from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings, ModemSim
from pendant_tools.cli import main
from pendant_tools.console import firmware_crash
from pendant_tools.deploying import deploy
from pendant_tools.probes import csq_rssi, registration_status, rssi_dbm

from support import add_account, free_port


def pendant(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def silent_port() -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(master)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.fixture
def no_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for a data folder where no broker was ever set up."""
    monkeypatch.setenv("PENDANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PENDANT_MQTT_PORT", str(free_port()))
    monkeypatch.delenv("PENDANT_DB_URL", raising=False)
    monkeypatch.delenv("PENDANT_PORT", raising=False)
    return tmp_path / "data"


def technician_account(data_dir: Path, monkeypatch: pytest.MonkeyPatch, *roles: str) -> None:
    """The database in `data_dir` with the account `tester` (technician unless `roles` say otherwise),
    named by PENDANT_TECHNICIAN as a technician's shell would."""
    engine = make_engine(f"sqlite:///{data_dir / 'pendant.db'}")
    add_account(engine, "tester", *(roles or ("technician",)))
    engine.dispose()
    monkeypatch.setenv("PENDANT_TECHNICIAN", "tester")


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["flash", "deploy", "provision", "bench"])
def test_every_technician_command_has_examples_and_exit_codes(command: str) -> None:
    code, out, _ = pendant(command, "--help")
    assert code == 0
    assert "Examples:" in out and f"pendant {command}" in out and "Exit codes:" in out
    assert "--json" in out


# -- provision -------------------------------------------------------------------------------------


def test_provision_refuses_one_device_id_for_two_ports(silent_port: str) -> None:
    code, _, err = pendant("provision", "-p", silent_port, "-p", "/dev/null", "--device-id", "pd-0001")
    assert code == 2
    assert err.splitlines()[-1] == "Error: --device-id names one pendant: give one --port with it"


def test_provision_with_no_pendants_found_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, no_backend: Path
) -> None:
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: [])
    code, _, err = pendant("provision", "--all-ports")
    assert (code, err) == (3, "Error: no USB serial port found: connect the pendants with data USB cables\n")


def test_provision_without_a_repl_is_exit_4(
    silent_port: str, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENDANT_DATA_DIR", str(broker.settings.data_dir))
    monkeypatch.setenv("PENDANT_MQTT_PORT", str(broker.settings.mqtt_port))
    technician_account(broker.settings.data_dir, monkeypatch)
    code, out, err = pendant("provision", "-p", silent_port)
    assert code == 4 and out == ""
    assert err.splitlines()[-1].startswith(f"Error: no MicroPython REPL answered on {silent_port}")


@pytest.fixture
def bare_pendant(tmp_path: Path) -> Iterator[MicroPythonOnPty]:
    """The firmware deployed on a MicroPython REPL whose board reaches a running modem simulator."""
    flash = tmp_path / "flash"
    flash.mkdir()
    with LoopThread("modem") as loop:

        async def started() -> ModemSim:
            modem = ModemSim(ModemSettings.for_device("pd-0009", boot_urcs=False))
            await modem.start()
            return modem

        modem = loop.run(started())
        write_sim_ports(flash, modem.port, free_port())
        try:
            with MicroPythonOnPty(flash) as repl:
                deploy(repl.port, reboot=False)
                yield repl
        finally:
            loop.run(modem.stop())


def test_provision_with_the_backend_unreachable_is_exit_5_and_writes_nothing(
    bare_pendant: MicroPythonOnPty, no_backend: Path
) -> None:
    code, out, err = pendant("provision", "-p", bare_pendant.port)
    assert code == 5 and out == ""
    # The backend's own sentence, before any work: the technician's account is looked up first.
    assert err.startswith("Error: there is no database at ") and "pendant backend run" in err
    assert err.count("\n") == 1
    assert not (bare_pendant.folder / "config.json").exists()
    assert not (no_backend / "pendant.db").exists()


@pytest.mark.parametrize(
    ("command", "technician", "roles", "message"),
    [
        ("provision", "someone", ("technician",), "there is no account 'someone': --technician names your"),
        (
            "provision",
            "tester",
            ("dispatcher",),
            "'tester' (dispatcher) may not do this: it needs the role police",
        ),
        (
            "bench",
            "tester",
            ("police_it",),
            "'tester' (police_it) may not do this: it needs the role dispatcher",
        ),
    ],
)
def test_the_technician_must_be_an_account_allowed_to_do_the_work(
    silent_port: str,
    no_backend: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    technician: str,
    roles: tuple[str, ...],
    message: str,
) -> None:
    technician_account(no_backend, monkeypatch, *roles)
    code, out, err = pendant(command, "-p", silent_port, "--technician", technician)
    assert code == 5 and out == ""
    assert err.count("\n") == 1 and message in err, err


# -- bench -----------------------------------------------------------------------------------------


def test_bench_refuses_a_test_number_that_is_not_one() -> None:
    code, _, err = pendant("bench", "--test-number", "call me", "-p", "/dev/null")
    assert code == 2
    assert (
        err.splitlines()[-1]
        == "Error: Invalid value for --test-number: 'call me' is not a phone number (+ and digits)"
    )


def test_bench_of_a_silent_port_fails_the_console_and_skips_the_rest(
    silent_port: str, no_backend: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    technician_account(no_backend, monkeypatch)
    code, out, err = pendant("bench", "-p", silent_port, "--json", "--report", str(tmp_path / "r.json"))
    assert code == 1
    report = json.loads(out)["report"]
    statuses = [(step["key"], step["status"]) for step in report["steps"]]
    assert statuses[0] == ("serial_console", "fail")
    assert {status for _, status in statuses[1:]} == {"skip"}
    assert report["steps"][1]["detail"] == "not run: needs Serial console (REPL)"
    assert err.splitlines()[-1] == (
        "Error: the pendant failed the bench test: Serial console (REPL); the report was not stored: the "
        "pendant is not provisioned, so the report has no device record to go with"
    )
    assert json.loads((tmp_path / "r.json").read_text())["report"] == report


# -- readers -----------------------------------------------------------------------------------------


def test_modem_answers_are_read_as_3gpp_says() -> None:
    assert registration_status(["+CEREG: 0,1", "OK"]) == 1
    assert registration_status(["+CREG: 5"]) == 5  # the URC form has no <n>
    assert registration_status(["+CME ERROR: 10"]) is None
    assert csq_rssi(["+CSQ: 20,99", "OK"]) == 20 and rssi_dbm(20) == -73
    assert csq_rssi(None) is None


def test_the_console_names_what_crashed_the_firmware() -> None:
    lines = [
        "123 app: started",
        "Traceback (most recent call last):",
        '  File "main.py", line 14, in <module>',
        "MemoryError: memory allocation failed, allocating 368 bytes",
        "[bench] firmware exited with code 1",
    ]
    assert firmware_crash(lines) == "MemoryError: memory allocation failed, allocating 368 bytes"
    assert firmware_crash(lines[:1]) is None


def test_ports_are_refused_before_any_work(no_backend: Path) -> None:
    code, _, err = pendant("bench", "-p", "/dev/ttyUSB-none")
    assert (code, err) == (3, "Error: /dev/ttyUSB-none does not exist: is the pendant plugged in?\n")
