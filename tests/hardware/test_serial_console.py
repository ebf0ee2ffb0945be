"""A virtual pendant's console on a pseudo-terminal, as a USB serial port: pyserial sees the firmware's
output, Ctrl-C drops it into the REPL, Ctrl-D soft-reboots it, and mpremote lists, copies and runs code
with the pendant's flash folder as its filesystem."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.virtual_pendant import VirtualPendant

from hw_helpers import fake_pendant

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


@pytest.fixture
def pendant(bench_loop: LoopThread, tmp_path: Path) -> Iterator[VirtualPendant]:
    device = fake_pendant(bench_loop, tmp_path / "pd-0001", boot_delay_s=0.2)
    bench_loop.run(device.start())
    bench_loop.run(device.wait_for_line("modem: imei", timeout=30))
    yield device
    bench_loop.run(device.stop())


def read_until(port: serial.Serial, marker: bytes, timeout: float = 15.0) -> bytes:
    """Everything from the port up to and including `marker`; AssertionError with what came otherwise."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} from the pendant within {timeout} s; got {data[-300:]!r}")
        data += port.read(port.in_waiting or 1)
    return data


def mpremote(pty: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mpremote connect <pty> <args>`; fail the test with its output when it fails."""
    result = subprocess.run([MPREMOTE, "connect", pty, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"mpremote {' '.join(args)} failed: {result.stdout}{result.stderr}"
    return result


def test_the_pty_is_a_serial_port_that_shows_the_firmware(
    pendant: VirtualPendant, bench_loop: LoopThread
) -> None:
    assert pendant.pty is not None and pendant.pty.startswith("/dev/pts/")
    with serial.Serial(pendant.pty, 115200, timeout=0.2) as port:
        port.reset_input_buffer()
        bench_loop.run(pendant.press(100))
        read_until(port, b"alarm: raised 1-1")  # the fake firmware prints this on a press
    assert "alarm: raised 1-1" in pendant.console_log.read_text()  # and the console log has it too


def test_ctrl_c_interrupts_into_the_repl_and_ctrl_d_soft_reboots(
    pendant: VirtualPendant, bench_loop: LoopThread
) -> None:
    boots = pendant.boots
    with serial.Serial(pendant.pty, 115200, timeout=0.2) as port:
        port.write(b"\x03")
        seen = read_until(port, b">>> ")
        assert b"KeyboardInterrupt" in seen
        assert pendant.mode == "repl"
        port.write(b"import os\r")
        read_until(port, b">>> ")
        port.write(b"print(6 * 7, os.getcwd(), sorted(os.listdir('/')))\r")
        line = read_until(port, b">>> ")
        assert b"42 / ['config.json', 'main.py', 'pendant', 'sim.json']" in line  # / is the flash folder
        port.write(b"\x04")  # Ctrl-D at the friendly REPL: soft reboot, main.py runs again
        read_until(port, b"MPY: soft reboot\r\n")
    bench_loop.run(pendant.wait_for_mode("firmware"))
    bench_loop.run(pendant.wait_for_line(f"[bench] boot {boots + 1}"))
    assert pendant.mqtt_connected is False and pendant.boots == boots + 1
    log = pendant.console_log.read_text()
    assert "[bench] interrupted: REPL" in log and "MPY: soft reboot" in log


def test_a_ctrl_c_while_the_repl_runs_code_interrupts_only_that_code(
    pendant: VirtualPendant, bench_loop: LoopThread
) -> None:
    with serial.Serial(pendant.pty, 115200, timeout=0.2) as port:
        port.write(b"\x03")
        read_until(port, b">>> ")
        port.write(b"import time\r")
        read_until(port, b">>> ")
        port.write(b"while True: time.sleep(0.05)\r\r")
        read_until(port, b"... \r\n")
        time.sleep(0.3)  # let the loop start
        port.write(b"\x03")
        seen = read_until(port, b">>> ")
        assert b"KeyboardInterrupt" in seen
        port.write(b"\x03")  # at the prompt Ctrl-C only cancels the line: the REPL stays
        read_until(port, b">>> ")
        port.write(b"print('still here')\r")
        assert b"still here" in read_until(port, b">>> ")
    assert pendant.mode == "repl"


def test_mpremote_lists_copies_and_runs_code(
    pendant: VirtualPendant, bench_loop: LoopThread, tmp_path: Path
) -> None:
    listing = mpremote(pendant.pty, "fs", "ls").stdout
    for name in ("main.py", "config.json", "sim.json", "pendant/"):
        assert name in listing
    size = (pendant.flash_dir / "config.json").stat().st_size
    assert f"{size:>12} config.json" in listing  # with its size, as a board lists it
    source = tmp_path / "hello.py"
    source.write_text("GREETING = 'hello from the bench'\n")
    mpremote(pendant.pty, "cp", str(source), ":hello.py")
    assert (pendant.flash_dir / "hello.py").read_text() == source.read_text()  # landed in the flash folder
    ran = mpremote(pendant.pty, "exec", "import hello; print(hello.GREETING)")
    assert ran.stdout.strip() == "hello from the bench"
    copied_back = tmp_path / "config-copy.json"
    mpremote(pendant.pty, "cp", ":config.json", str(copied_back))
    assert copied_back.read_bytes() == (pendant.flash_dir / "config.json").read_bytes()
    assert pendant.mode == "repl"  # mpremote leaves the board at the REPL, as a real one
    before = pendant.boots
    mpremote(pendant.pty, "reset")  # machine.reset(): the firmware boots again
    bench_loop.run(pendant.wait_for_mode("firmware"))
    bench_loop.run(pendant.wait_for_line(f"[bench] boot {before + 1}"))


def test_nothing_reaches_outside_the_flash_folder(pendant: VirtualPendant, tmp_path: Path) -> None:
    mpremote(pendant.pty, "exec", "f = open('/escape.txt', 'w'); f.write('x'); f.close()")
    assert (pendant.flash_dir / "escape.txt").exists()
    assert not Path("/escape.txt").exists()


def test_typing_while_no_interpreter_runs_is_kept(pendant: VirtualPendant, bench_loop: LoopThread) -> None:
    with serial.Serial(pendant.pty, 115200, timeout=0.2) as port:
        port.write(b"\x03")
        read_until(port, b">>> ")
        # Soft reboot into the firmware, then at once Ctrl-C and a line for the REPL that follows.
        port.write(b"\x04")
        read_until(port, b"MPY: soft reboot")
        port.write(b"\x03")
        read_until(port, b">>> ")
        port.write(b"print('typed ahead')\r")
        assert b"typed ahead" in read_until(port, b">>> ")


def rebooting_main(life_s: float) -> str:
    """A main.py that soft-reboots after `life_s` (as a firmware without a config.json might)."""
    return f"import time\nprint('no config.json: rebooting')\ntime.sleep({life_s})\nraise SystemExit(0)\n"


@pytest.fixture
def rebooting_pendant(
    request: pytest.FixtureRequest, bench_loop: LoopThread, tmp_path: Path
) -> Iterator[VirtualPendant]:
    """A pendant whose firmware soft-reboots, living `request.param` seconds each boot."""
    firmware = tmp_path / "firmware"
    (firmware / "pendant").mkdir(parents=True)
    (firmware / "pendant" / "__init__.py").write_text("")
    (firmware / "main.py").write_text(rebooting_main(request.param))
    device = fake_pendant(bench_loop, tmp_path / "pd-0001", firmware, boot_delay_s=0.2)
    bench_loop.run(device.start())
    yield device
    bench_loop.run(device.stop())


@pytest.mark.parametrize(
    ("rebooting_pendant", "delay_s"),
    [(0.15, delay) for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)] + [(0.0, 0.0), (0.0, 0.02)],
    indirect=["rebooting_pendant"],
)
def test_one_ctrl_c_into_a_rebooting_firmware_reaches_the_repl(
    rebooting_pendant: VirtualPendant, delay_s: float
) -> None:
    # One Ctrl-C at some moment of the firmware's short life (0.15 s, or as short as a process can be):
    # while it runs, while it exits for the soft reboot, or between two processes. It must end at the REPL.
    with serial.Serial(rebooting_pendant.pty, 115200, timeout=0.2) as port:
        for _ in range(2):  # the second boot: the console is past the first start-up
            read_until(port, b"no config.json: rebooting")
        time.sleep(delay_s)  # where in the boot cycle the Ctrl-C lands; the assertion waits on the prompt
        port.write(b"\x03")
        read_until(port, b">>> ", timeout=20)
        port.write(b"print('at the prompt')\r")
        assert b"at the prompt" in read_until(port, b">>> ")
    assert rebooting_pendant.mode == "repl"
