"""The firmware on the real MicroPython unix port, within the pendant's 64 KB heap.

- every script tests/firmware/mp/test_*.py becomes a pytest case, run with `micropython -X heapsize=64K`
  against the firmware compiled with mpy-cross, as it is deployed (the script and its helpers are compiled
  too and imported: compiling .py source at run time costs heap the pendant does not have); the light
  scripts also run as source against firmware/ on MICROPYPATH. A case fails with the script's output.
- every firmware .py file must compile with mpy-cross.
- the whole pendant (main.py, .mpy build, sim board) runs under 64 KB against a scripted bench
  (mp/fake_bench.py): button presses -> alarms published -> acked, through a dropped connection after
  each and the retained config after every subscribe; and an unacked alarm is resent after a reboot.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
MP = Path(__file__).resolve().parent / "mp"
EXAMPLES = ROOT / "docs" / "protocol-examples"
HEAP = "64K"
# Scripts light enough to run against firmware source: compiling .py at import costs heap that the
# deployed .mpy files do not, so the scripts that load the whole stack run on the .mpy build only.
SOURCE_OK = {"test_atparse.py", "test_contract.py", "test_storage.py", "test_button.py"}


def _tool(name):
    """A tool installed next to this Python (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH: install the test extras")
    return found


def _compile(source, target, name):
    target.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [_tool("mpy-cross"), "-s", name, "-o", str(target), str(source)], capture_output=True, text=True
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """firmware/pendant and the test helpers compiled to .mpy, as on the pendant's flash."""
    out = tmp_path_factory.mktemp("mpy")
    for source in FIRMWARE.glob("pendant/**/*.py"):
        name = source.relative_to(FIRMWARE).as_posix()
        code, text = _compile(source, out / name.replace(".py", ".mpy"), name)
        assert code == 0, text
    for helper in MP.glob("*.py"):
        code, text = _compile(helper, out / helper.name.replace(".py", ".mpy"), helper.name)
        assert code == 0, text
    return out


def _run(args, path, cwd, timeout=120):
    env = dict(os.environ, MICROPYPATH=path, PENDANT_EXAMPLES=str(EXAMPLES))
    return subprocess.run(
        [_tool("micropython"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


CASES = [(script.name, "mpy") for script in sorted(MP.glob("test_*.py"))]
CASES += [(name, "source") for name, _ in CASES if name in SOURCE_OK]


@pytest.mark.parametrize(("script", "firmware"), CASES, ids=[f"{s[:-3]}-{m}" for s, m in CASES])
def test_script(script, firmware, build, tmp_path):
    if firmware == "mpy":
        result = _run(["-X", f"heapsize={HEAP}", "-c", f"import {script[:-3]}"], f".frozen:{build}", tmp_path)
    else:
        result = _run(["-X", f"heapsize={HEAP}", str(MP / script)], f".frozen:{FIRMWARE}:{MP}", tmp_path)
    output = result.stdout + result.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not summary or summary.group(2) != "0" or summary.group(1) == "0":
        pytest.fail(f"{script} on MicroPython ({firmware}, heap {HEAP}) failed:\n{output}", pytrace=False)


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    failures = []
    for source in sorted(FIRMWARE.glob("**/*.py")):
        code, text = _compile(source, tmp_path / "out.mpy", source.name)
        if code != 0:
            failures.append(f"{source.relative_to(ROOT)}: {text}")
    assert not failures, "\n".join(failures)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flash(build, folder):
    """A pendant's flash folder: main.py (source), pendant/*.mpy, config.json, sim.json."""
    folder.mkdir(exist_ok=True)
    shutil.copy(FIRMWARE / "main.py", folder / "main.py")
    shutil.copytree(build / "pendant", folder / "pendant", dirs_exist_ok=True)
    shutil.copy(EXAMPLES / "device-config.json", folder / "config.json")
    ports = {"modem": ["127.0.0.1", _free_port()], "io": ["127.0.0.1", _free_port()]}
    (folder / "sim.json").write_text(json.dumps(ports))
    return ports


def _pendant_with_bench(build, flash, presses, ack, expect, chaos=0):
    """Run the bench script and the pendant until the bench ends; return (pendant log, bench log)."""
    ports = _flash(build, flash)
    numbers = (ports["modem"][1], ports["io"][1], presses, int(ack), expect, chaos)
    args = [str(MP / "fake_bench.py"), *[str(n) for n in numbers]]
    env = dict(os.environ, MICROPYPATH=f".frozen:{build}")
    bench = subprocess.Popen(
        [_tool("micropython"), *args], cwd=MP, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert bench.stdout.readline().strip() == "bench: listening"
        env = dict(os.environ, MICROPYPATH=".frozen")
        pendant = subprocess.Popen(
            [_tool("micropython"), "-X", f"heapsize={HEAP}", "main.py"],
            cwd=flash,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            bench_log = bench.stdout.readline() + bench.communicate(timeout=90)[0]
        finally:
            pendant.terminate()
            pendant_log = pendant.communicate(timeout=10)[0]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    return pendant_log, bench_log


def _peak(log):
    peaks = [int(p) for p in re.findall(r" mem: peak (\d+) free \d+", log)]
    assert peaks, "no mem: line in:\n" + log
    return max(peaks)


def test_alarms_are_acked_through_reconnects_within_64k(build, tmp_path):
    # The connection drops after every alarm; the retained config comes after every subscribe.
    log, bench = _pendant_with_bench(build, tmp_path / "flash", presses=3, ack=True, expect=3, chaos=1)
    report = f"pendant:\n{log}\nbench:\n{bench}"
    assert "bench: all 3 alarms acked" in bench, report
    for alarm_id in ("1-1", "1-2", "1-3"):
        for line in (
            f"alarm: raised {alarm_id}",
            f"alarm: published {alarm_id}",
            f"alarm: acked {alarm_id} after",
        ):
            assert re.search(rf"^\d+ {line}", log, re.MULTILINE), f"missing '{line}'\n{report}"
    assert log.count("app: config_applied 1") == 1 and "/evt" in bench, report  # once, not at every reconnect
    assert "mqtt: connection lost" in log and "mqtt: connected sess 4" in log, report
    assert "MemoryError" not in log and "Traceback" not in log, report
    assert "io got VIB sent" in bench and "io got VIB received" in bench, report
    assert not list((tmp_path / "flash" / "outbox").iterdir()), "acked alarms stay in the outbox"
    print(f"peak heap in use: {_peak(log)} bytes of {HEAP}")


def test_unacked_alarm_is_resent_after_a_reboot_within_64k(build, tmp_path):
    flash = tmp_path / "flash"
    log, bench = _pendant_with_bench(build, flash, presses=1, ack=False, expect=1)
    assert "alarm: published 1-1" in log, f"pendant:\n{log}\nbench:\n{bench}"
    assert [p.name for p in (flash / "outbox").iterdir()] == ["00000001.msg"], log
    log, bench = _pendant_with_bench(build, flash, presses=0, ack=True, expect=1)  # the reboot: same flash
    report = f"pendant:\n{log}\nbench:\n{bench}"
    assert "state: boot counter 2" in log, report
    assert re.search(r"^\d+ alarm: published 1-1$", log, re.MULTILINE), report
    assert re.search(r"^\d+ alarm: acked 1-1 after \d+ ms$", log, re.MULTILINE), report
    assert not list((flash / "outbox").iterdir()), report
    assert "MemoryError" not in log and "Traceback" not in log, report
