"""The firmware on the real MicroPython unix port, within the pendant's heap budget (firmware_runner.HEAP).

- every script tests/firmware/mp/test_*.py becomes a pytest case, run with `micropython -X heapsize=128K`
  against the firmware compiled with mpy-cross, as it is deployed (the script and its helpers are compiled
  too and imported: compiling .py source at run time costs heap the pendant does not have); the light
  scripts also run as source against firmware/ on MICROPYPATH. A case fails with the script's output.
- every firmware .py file must compile with mpy-cross.
- the whole pendant (main.py, .mpy build, sim board) runs within the budget against a scripted bench
  (mp/fake_bench.py): button presses -> alarms published -> acked, through a dropped connection after
  each and the retained config after every subscribe; and an unacked alarm is resent after a reboot.
"""

import re
import subprocess

import pytest
from firmware_runner import (
    EXAMPLES,
    FIRMWARE,
    HEAP,
    MP,
    ROOT,
    PendantRun,
    assert_no_memory_trouble,
    build,
    compile_module,
    run_all,
    tool,
)

# Scripts light enough to run against firmware source: compiling .py at import costs heap that the
# deployed .mpy files do not, so the scripts that load the whole stack run on the .mpy build only.
SOURCE_OK = {"test_atparse.py", "test_button.py"}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """firmware/pendant as the bench deploys it, and the test helpers, compiled to .mpy."""
    return build(tmp_path_factory.mktemp("mpy"))


def _run(args, path, cwd, timeout=120):
    env = dict(__import__("os").environ, MICROPYPATH=path, PENDANT_EXAMPLES=str(EXAMPLES))
    return subprocess.run(
        [tool("micropython"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


CASES = [(script.name, "mpy") for script in sorted(MP.glob("test_*.py"))]
CASES += [(name, "source") for name, _ in CASES if name in SOURCE_OK]


@pytest.mark.parametrize(("script", "firmware"), CASES, ids=[f"{s[:-3]}-{m}" for s, m in CASES])
def test_script(script, firmware, build_dir, tmp_path):
    if firmware == "mpy":
        result = _run(
            ["-X", f"heapsize={HEAP}", "-c", f"import {script[:-3]}"], f".frozen:{build_dir}", tmp_path
        )
    else:
        result = _run(["-X", f"heapsize={HEAP}", str(MP / script)], f".frozen:{FIRMWARE}:{MP}", tmp_path)
    output = result.stdout + result.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not summary or summary.group(2) != "0" or summary.group(1) == "0":
        pytest.fail(f"{script} on MicroPython ({firmware}, heap {HEAP}) failed:\n{output}", pytrace=False)


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    failures = []
    for source in sorted(FIRMWARE.glob("**/*.py")):
        code, text = compile_module(source, tmp_path / "out.mpy", source.name)
        if code != 0:
            failures.append(f"{source.relative_to(ROOT)}: {text}")
    assert not failures, "\n".join(failures)


def _pendant_with_bench(build_dir, flash, presses, ack, expect, chaos=0):
    """Run mp/fake_bench.py and the pendant until the bench ends; return (pendant log, bench log)."""
    run = PendantRun(
        build_dir, flash, "fake_bench.py", [str(presses), str(int(ack)), str(expect), str(chaos)]
    )
    run_all([run], 120)
    return run.logs()


def _peak(log):
    peaks = [int(p) for p in re.findall(r" mem: peak (\d+) free \d+", log)]
    assert peaks, "no mem: line in:\n" + log
    return max(peaks)


def test_alarms_are_acked_through_reconnects_within_the_heap_budget(build_dir, tmp_path):
    # The connection drops after every alarm; the retained config comes after every subscribe.
    log, bench = _pendant_with_bench(build_dir, tmp_path / "flash", presses=3, ack=True, expect=3, chaos=1)
    report = f"pendant:\n{log}\nbench:\n{bench}"
    assert "bench: all 3 alarms acked" in bench, report
    boot = re.search(r"state: boot counter (\d+)", log).group(1)  # a new pendant's is random
    # Three presses, three distinct alarms of this boot.
    raised = re.findall(rf"^\d+ alarm: raised ({boot}-\d+)$", log, re.MULTILINE)
    assert len(raised) == len(set(raised)) == 3, report
    for alarm_id in raised:
        for line in (f"alarm: published {alarm_id}", f"alarm: acked {alarm_id} after"):
            assert re.search(rf"^\d+ {line}", log, re.MULTILINE), f"missing '{line}'\n{report}"
    assert log.count("app: config_applied 1") == 1 and "/evt" in bench, report  # once, not at every reconnect
    assert "mqtt: connection lost" in log and "mqtt: connected sess 4" in log, report
    assert "Traceback" not in log, report
    assert_no_memory_trouble(log, report)
    assert "io got VIB sent" in bench and "io got VIB received" in bench, report
    assert not list((tmp_path / "flash" / "outbox").iterdir()), "acked alarms stay in the outbox"
    print(f"peak heap in use: {_peak(log)} bytes of {HEAP}")


def test_unacked_alarm_is_resent_after_a_reboot_within_the_heap_budget(build_dir, tmp_path):
    flash = tmp_path / "flash"
    log, bench = _pendant_with_bench(build_dir, flash, presses=1, ack=False, expect=1)
    boot = int(re.search(r"state: boot counter (\d+)", log).group(1))
    alarm_id = f"{boot}-1"
    assert f"alarm: published {alarm_id}" in log, f"pendant:\n{log}\nbench:\n{bench}"
    assert [p.name for p in (flash / "outbox").iterdir()] == ["00000001.msg"], log
    (flash / "pendant.log").unlink()
    log, bench = _pendant_with_bench(
        build_dir, flash, presses=0, ack=True, expect=1
    )  # the reboot: same flash
    report = f"pendant:\n{log}\nbench:\n{bench}"
    assert f"state: boot counter {boot + 1}" in log, report
    assert re.search(rf"^\d+ alarm: published {alarm_id}$", log, re.MULTILINE), report
    assert re.search(rf"^\d+ alarm: acked {alarm_id} after \d+ ms$", log, re.MULTILINE), report
    assert not list((flash / "outbox").iterdir()), report
    assert "Traceback" not in log, report
    assert_no_memory_trouble(log, report)
