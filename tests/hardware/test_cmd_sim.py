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

from pendant_hardware.sim_control import host_file, pid_alive
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_tools.cli import main

FAKE_FIRMWARE = Path(__file__).parent / "fake_firmware"
CONFIG = {"device_id": "pd-0001", "mqtt": {"host": "127.0.0.1", "port": 1883}, "apn": "internet"}


def pendant(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def running(tmp_path: Path) -> Iterator[BackgroundSimHost]:
    with BackgroundSimHost(tmp_path, [CONFIG], firmware_dir=FAKE_FIRMWARE, restart_delay_s=0.1) as sim:
        sim.wait_for_event("pd-0001", "mem")
        yield sim


@pytest.mark.parametrize("command", ["run", "press", "list", "battery", "state"])
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
    assert code == 0 and output.startswith("pd-0001  pid ")
    code, output = pendant("sim", "list", "--json", *data)
    assert code == 0 and json.loads(output)[0]["device"] == "pd-0001"
    code, output = pendant("sim", "press", "pd-0001", "--ms", "50", *data)
    assert (code, output) == (0, "pressed pd-0001 for 50 ms\n")
    running.wait_for_vibration("pd-0001", "sent")
    assert pendant("sim", "battery", "pd-0001", "3600", *data) == (0, "pd-0001: battery 3600 mV\n")
    code, output = pendant("sim", "state", "pd-0001", *data)
    assert code == 0
    assert "battery 3600 mV" in output and "vibration" in output and "alarm_raised 1-1" in output
    code, output = pendant("sim", "state", "pd-0001", "--json", *data)
    assert json.loads(output)["vibrations"][0]["pattern"] == "sent"


def test_errors_from_the_simulator_are_one_line(running: BackgroundSimHost, tmp_path: Path) -> None:
    code, output = pendant("sim", "state", "pd-0404", "--data-dir", str(tmp_path))
    assert code == 1
    assert output == "Error: no device 'pd-0404' on this simulator; devices: pd-0001\n"
    code, output = pendant("sim", "battery", "pd-0001", "9000", "--data-dir", str(tmp_path))
    assert code == 2  # usage error, caught before asking the simulator


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
    config.write_text(json.dumps(CONFIG))
    code, output = pendant(
        "sim", "run", "--config", str(config), "--firmware", str(firmware), "--data-dir", str(tmp_path)
    )
    assert code == 1
    expected = "Error: the firmware does not build: pendant/__init__.py line 1: SyntaxError: invalid syntax\n"
    assert output == expected


def start_simulator(tmp_path: Path) -> tuple[subprocess.Popen[str], int | None]:
    """`pendant sim run` as a real process with the stand-in firmware; returns it and the firmware pid."""
    config = tmp_path / "pd-0001.json"
    config.write_text(json.dumps(CONFIG))
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
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    firmware_pid = None
    while firmware_pid is None:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.1)
        code, output = pendant("sim", "list", "--json", "--data-dir", str(tmp_path))
        if code == 0:
            firmware_pid = json.loads(output)[0]["pid"]
    return process, firmware_pid


def test_run_until_ctrl_c(tmp_path: Path) -> None:
    process, firmware_pid = start_simulator(tmp_path)
    try:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out
    assert "pendant sim press pd-0001" in out and out.endswith("simulator stopped\n")
    assert not host_file(tmp_path).exists()
    assert not pid_alive(firmware_pid)


def test_a_killed_simulator_takes_its_firmware_along(tmp_path: Path) -> None:
    process, firmware_pid = start_simulator(tmp_path)
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while pid_alive(firmware_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(firmware_pid), "an orphaned firmware process outlived the simulator"
    code, output = pendant("sim", "list", "--data-dir", str(tmp_path))  # host.json is stale
    assert code == 3
