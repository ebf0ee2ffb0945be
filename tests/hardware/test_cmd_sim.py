"""`pendant sim ...`: help with examples, one-line errors with fixed exit codes, the commands against a
running simulator, and `pendant sim run` as a real process stopped with Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_control import host_file, pid_alive
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_tools.cli import main

from hw_helpers import FAKE_CONFIG, FAKE_FIRMWARE, AtClient


def pendant(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def running(tmp_path: Path) -> Iterator[BackgroundSimHost]:
    with BackgroundSimHost(tmp_path, [FAKE_CONFIG], firmware_dir=FAKE_FIRMWARE, restart_delay_s=0.1) as sim:
        sim.wait_for_event("pd-0001", "mem")
        yield sim


COMMANDS = ["run", "press", "list", "battery", "state", "charger", "reset", "power-cut", "faults", "fault"]
COMMANDS += ["clear", "calls", "sms", "ring", "text", "power"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, output = pendant("sim", command, "--help")
    assert code == 0
    assert "Example" in output and f"pendant sim {command}" in output


def test_no_simulator_is_one_line_and_exit_3(tmp_path: Path) -> None:
    code, output = pendant("sim", "list", "--data-dir", str(tmp_path))
    assert code == 3
    assert output == f"Error: no simulator is running in {tmp_path}: start one with `pendant sim run`\n"


def test_default_data_dir_is_dot_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sim", "press", "pd-0001"], env={"PENDANT_DATA_DIR": None})
    assert result.exit_code == 3
    assert result.output == "Error: no simulator is running in ./data: start one with `pendant sim run`\n"


def test_data_dir_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sim", "list"], env={"PENDANT_DATA_DIR": str(tmp_path / "elsewhere")})
    assert result.exit_code == 3 and "elsewhere" in result.output


def test_commands_against_a_running_simulator(running: BackgroundSimHost, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, output = pendant("sim", "list", *data)
    pty = running.pty("pd-0001")
    assert code == 0 and output.startswith(f"pd-0001  firmware  pty {pty}  pid ")
    code, output = pendant("sim", "list", "--json", *data)
    assert code == 0 and json.loads(output)[0]["device"] == "pd-0001"
    assert json.loads(output)[0]["pty"] == pty and json.loads(output)[0]["mode"] == "firmware"
    code, output = pendant("sim", "press", "pd-0001", "--ms", "50", *data)
    assert (code, output) == (0, "pressed pd-0001's panic button for 50 ms\n")
    running.wait_for_vibration("pd-0001", "sent")
    assert pendant("sim", "battery", "pd-0001", "3600", *data) == (0, "pd-0001: battery 3600 mV\n")
    code, output = pendant("sim", "state", "pd-0001", *data)
    assert code == 0
    assert "battery 3600 mV" in output and "vibration" in output and "alarm_raised 1-1" in output
    assert f"serial {pty}" in output
    code, output = pendant("sim", "state", "pd-0001", "--json", *data)
    assert json.loads(output)["vibrations"][0]["pattern"] == "sent"


def test_faults_from_the_command_line(running: BackgroundSimHost, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, output = pendant("sim", "faults")
    assert code == 0 and "no_signal" in output and "connlost" in output and "cause=1" in output
    code, output = pendant("sim", "faults", "--json")
    assert {
        "name": "slow",
        "summary": "every command is answered <ms> late",
        "lasting": True,
        "params": {"ms": 1500},
    } in json.loads(output)
    assert pendant("sim", "fault", "pd-0001", "slow", "ms=20", *data) == (
        0,
        "pd-0001: slow given; in force: slow(ms=20)\n",
    )
    assert pendant("sim", "fault", "pd-0001", "no_signal", *data)[0] == 0
    code, output = pendant("sim", "state", "pd-0001", "--json", *data)
    assert json.loads(output)["modem"]["faults"] == {"slow": {"ms": 20}, "no_signal": {}}
    assert json.loads(output)["modem"]["registration"] == 2
    assert pendant("sim", "clear", "pd-0001", "slow", *data) == (
        0,
        "pd-0001: cleared slow; in force: no_signal\n",
    )
    assert pendant("sim", "clear", "pd-0001", *data) == (0, "pd-0001: cleared every fault; in force: none\n")
    code, output = pendant("sim", "fault", "pd-0001", "slow", "ms=soon", *data)
    assert (code, output) == (1, "Error: fault slow: ms must be a int, not 'soon'\n")
    code, output = pendant("sim", "fault", "pd-0001", "slow", "delay", *data)
    assert (code, output) == (1, "Error: a fault parameter is name=value, not 'delay'\n")
    code, output = pendant("sim", "fault", "pd-0001", "earthquake", *data)
    assert code == 2 and "earthquake" in output


def test_calls_sms_power_and_buttons(running: BackgroundSimHost, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert pendant("sim", "calls", "pd-0001", *data) == (0, "pd-0001 made and received no calls\n")
    assert pendant("sim", "sms", "pd-0001", *data) == (0, "pd-0001 sent no SMS\n")
    assert pendant("sim", "ring", "pd-0001", "+31612345678", *data) == (
        0,
        "pd-0001: ringing from +31612345678\n",
    )
    code, output = pendant("sim", "calls", "pd-0001", "--json", *data)
    [call] = json.loads(output)
    assert (call["direction"], call["number"], call["outcome"]) == ("in", "+31612345678", "pending")
    code, output = pendant("sim", "text", "pd-0001", "112", "are you safe?", *data)
    assert (code, output) == (0, "pd-0001: SMS from 112 stored at index 0\n")
    code, output = pendant("sim", "power", "pd-0001", "--capacity", "1000", "--json", *data)
    report = json.loads(output)
    assert report["capacity_mah"] == 1000 and report["window_s"] > 0 and report["battery_days"] > 0
    code, output = pendant("sim", "power", "pd-0001", *data)
    assert code == 0 and "a 1000 mAh battery lasts" in output and "mcu active" in output
    assert pendant("sim", "charger", "pd-0001", "on", *data) == (0, "pd-0001: charger on\n")
    assert pendant("sim", "press", "pd-0001", "--power", "--ms", "20", *data)[1].startswith(
        "pressed pd-0001's power button for 20 ms"
    )
    boots = running.state("pd-0001")["boots"]
    assert pendant("sim", "reset", "pd-0001", *data) == (0, "pd-0001: reset\n")
    running.wait_for_line("pd-0001", f"[bench] boot {boots + 1}")
    assert pendant("sim", "power-cut", "pd-0001", *data) == (0, "pd-0001: power cut, booting again\n")
    running.wait_for_line("pd-0001", f"[bench] boot {boots + 2}")


def test_what_the_pendant_dialled_and_texted(tmp_path: Path) -> None:
    # The fallback path, as the firmware drives it: AT on the pendant's modem (the test takes the UART).
    def fast(device_id: str) -> ModemSettings:
        return ModemSettings.for_device(device_id, call_answer_s=0.05, sms_send_s=0.05)

    with BackgroundSimHost(
        tmp_path, [FAKE_CONFIG], firmware_dir=FAKE_FIRMWARE, restart_delay_s=0.1, modem_settings=fast
    ) as sim:
        sim.wait_for_event("pd-0001", "mem")
        uart = AtClient(sim.pendant("pd-0001").modem.port)
        try:
            for line in ("ATE0", "AT+CVHU=0", "AT+CMGF=1"):
                assert uart.command(line).endswith(b"\r\nOK\r\n")
            assert uart.command("ATD112;") == b"\r\nOK\r\n"
            assert uart.expect_line("VOICE CALL: BEGIN") == "VOICE CALL: BEGIN"
            assert uart.command("AT+CHUP").endswith(b"\r\nOK\r\n")
            uart.send('AT+CMGS="+31612345678"\r')
            uart.read_until(b"> ")
            uart.send(b"ALARM pd-0001: help needed\x1a")
            assert uart.read_final().endswith(b"\r\nOK\r\n")
        finally:
            uart.close()
        sim.wait_for_call("pd-0001", "112", ended=True)
        sim.wait_for_sms("pd-0001", "+31612345678")
        data = ["--data-dir", str(tmp_path)]
        code, output = pendant("sim", "calls", "pd-0001", *data)
        assert code == 0 and " -> 112: answered, " in output and "ended by host" in output
        code, output = pendant("sim", "sms", "pd-0001", *data)
        assert code == 0 and " -> +31612345678: sent\n    ALARM pd-0001: help needed\n" in output
        code, output = pendant("sim", "sms", "pd-0001", "--json", *data)
        [message] = json.loads(output)
        assert (message["number"], message["text"], message["status"]) == (
            "+31612345678",
            "ALARM pd-0001: help needed",
            "sent",
        )


def test_captured_calls_and_sms_outlive_the_simulator(tmp_path: Path) -> None:
    with BackgroundSimHost(tmp_path, [FAKE_CONFIG], firmware_dir=FAKE_FIRMWARE, restart_delay_s=0.1) as sim:
        sim.wait_for_event("pd-0001", "mem")
        sim.ring("pd-0001", "0612345678")
    # The ringing call was cut when the simulator stopped; the files keep it.
    code, output = pendant("sim", "calls", "pd-0001", "--data-dir", str(tmp_path))
    assert code == 0 and "<- 0612345678: cut" in output and "ended by network" in output
    assert pendant("sim", "sms", "pd-0001", "--data-dir", str(tmp_path)) == (0, "pd-0001 sent no SMS\n")
    code, output = pendant("sim", "calls", "pd-0404", "--data-dir", str(tmp_path))
    assert code == 3 and output.startswith("Error: no pendant pd-0404 in")


def test_run_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "pd-0001.json"
    config.write_text(json.dumps(FAKE_CONFIG))
    code, output = pendant(
        "sim",
        "run",
        "--config",
        str(config),
        "--config",
        str(config),
        "--count",
        "2",
        "--data-dir",
        str(tmp_path),
    )
    assert (code, output) == (1, "Error: --count takes exactly one --config as the template\n")
    track = tmp_path / "walk.csv"
    track.write_text("lat,lon\n91,4\n")
    code, output = pendant(
        "sim", "run", "--config", str(config), "--track", str(track), "--data-dir", str(tmp_path)
    )
    assert code == 1 and output == f"Error: {track}: point 1 is off the globe (91.0, 4.0)\n"


def test_errors_from_the_simulator_are_one_line(running: BackgroundSimHost, tmp_path: Path) -> None:
    code, output = pendant("sim", "state", "pd-0404", "--data-dir", str(tmp_path))
    assert code == 1
    assert output == "Error: no device 'pd-0404' on this simulator; devices: pd-0001\n"
    code, output = pendant("sim", "battery", "pd-0001", "9000", "--data-dir", str(tmp_path))
    assert code == 2  # usage error, caught before asking the simulator


def test_count_refuses_a_provisioned_config_of_another_device(tmp_path: Path) -> None:
    config = tmp_path / "pd-0001.json"
    config.write_text(json.dumps(FAKE_CONFIG))
    stray = tmp_path / "devices" / "pd-0002" / "config.json"
    stray.parent.mkdir(parents=True)
    stray.write_text(json.dumps(FAKE_CONFIG))  # pd-0001's config in pd-0002's folder
    code, output = pendant("sim", "run", "--config", str(config), "--count", "2", "--data-dir", str(tmp_path))
    assert (code, output) == (1, f"Error: {stray}: not the config of pd-0002\n")


def test_run_rejects_a_config_without_device_id(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mqtt": {}}')
    code, output = pendant("sim", "run", "--config", str(bad), "--data-dir", str(tmp_path))
    assert code == 1 and output.startswith("Error: device config") and output.count("\n") == 1


def test_run_reports_a_firmware_that_does_not_build(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    (firmware / "pendant").mkdir(parents=True)
    (firmware / "main.py").write_text("import pendant\n")
    (firmware / "pendant/__init__.py").write_text("def broken(:\n")
    config = tmp_path / "pd-0001.json"
    config.write_text(json.dumps(FAKE_CONFIG))
    code, output = pendant(
        "sim", "run", "--config", str(config), "--firmware", str(firmware), "--data-dir", str(tmp_path)
    )
    assert code == 1
    expected = "Error: the firmware does not build: pendant/__init__.py line 1: SyntaxError: invalid syntax\n"
    assert output == expected


def start_simulator(tmp_path: Path, *more: str) -> tuple[subprocess.Popen[str], list[int]]:
    """`pendant sim run` as a real process with the stand-in firmware (and `more` options); returns it and
    the firmware pid of every pendant once each one runs."""
    config = tmp_path / "pd-0001.json"
    config.write_text(json.dumps(FAKE_CONFIG))
    command = [
        sys.executable,
        "-c",
        "from pendant_tools.cli import main; main()",
        "sim",
        "run",
        "--config",
        str(config),
        "--firmware",
        str(FAKE_FIRMWARE),
        "--data-dir",
        str(tmp_path),
        *more,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    pids: list[int] = []
    while not pids or None in pids:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.1)
        code, output = pendant("sim", "list", "--json", "--data-dir", str(tmp_path))
        if code == 0:
            pids = [entry["pid"] for entry in json.loads(output)]
    return process, pids


def test_run_many_until_ctrl_c(tmp_path: Path) -> None:
    # pd-0002 was provisioned (`pendant device provision` wrote its own config): it uses its own account.
    mqtt = {**FAKE_CONFIG["mqtt"], "user": "pd-0002", "password": "own"}
    own = {**FAKE_CONFIG, "device_id": "pd-0002", "mqtt": mqtt}
    (tmp_path / "devices" / "pd-0002").mkdir(parents=True)
    (tmp_path / "devices" / "pd-0002" / "config.json").write_text(json.dumps(own))
    process, firmware_pids = start_simulator(tmp_path, "--count", "3")
    try:
        code, output = pendant("sim", "list", "--json", "--data-dir", str(tmp_path))
        listed = json.loads(output)
        assert [entry["device"] for entry in listed] == ["pd-0001", "pd-0002", "pd-0003"]
        assert len({entry["pty"] for entry in listed}) == 3  # a serial port each
        assert pendant("sim", "press", "pd-0003", "--ms", "50", "--data-dir", str(tmp_path))[0] == 0
        console = tmp_path / "sim" / "pd-0003" / "console.log"
        deadline = time.monotonic() + 30
        while "alarm: raised 1-1" not in console.read_text():  # the third pendant's firmware saw it
            assert time.monotonic() < deadline, "pd-0003 did not log the press"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out
    assert "pd-0003: serial /dev/pts/" in out
    assert f"1 of 3 pendants use their own provisioned config from {tmp_path / 'devices'}" in out
    flash = tmp_path / "sim"
    assert json.loads((flash / "pd-0002" / "flash" / "config.json").read_text()) == own
    assert json.loads((flash / "pd-0003" / "flash" / "config.json").read_text()) == {
        **FAKE_CONFIG,
        "device_id": "pd-0003",
    }
    assert "pendant sim press pd-0001" in out and out.endswith("simulator stopped\n")
    assert not host_file(tmp_path).exists()
    assert len(firmware_pids) == 3 and not any(pid_alive(pid) for pid in firmware_pids)


def test_a_killed_simulator_takes_its_firmware_along(tmp_path: Path) -> None:
    process, [firmware_pid] = start_simulator(tmp_path)
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while pid_alive(firmware_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(firmware_pid), "an orphaned firmware process outlived the simulator"
    code, output = pendant("sim", "list", "--data-dir", str(tmp_path))  # host.json is stale
    assert code == 3
