"""Issue 3's behaviours as scenarios: the whole pendant (main.py and the .mpy build, as the bench deploys
it) on MicroPython within its heap budget (firmware_runner.HEAP), against mp/scenario_bench.py (a fake
A7670 and a scripted board).

All scenarios run at once in the background (they mostly wait on each other's timers, and one after the
other they would take minutes); each test then checks its own: the bench's verdict (`bench: done`, every
step held) and the pendant's log (no crash, no sign of a heap running short, the lines that tell what it
did)."""

import re

import pytest
from firmware_runner import HEAP, PendantRun, assert_no_memory_trouble, build, peak_heap, run_all

SCENARIOS = {
    # scenario: lines the pendant's log must have (regular expressions); the slowest first (they run in
    # groups, and a group lasts as long as its slowest)
    # The garbage it sends lands either between commands (dropped, logged) or inside a running command's
    # answer (taken as its lines): which one is a race, so only surviving it is checked here; dropping
    # unknown lines is checked deterministically by mp/test_atchan.py.
    "modem_hang": [r"mqtt: modem hung", r"modem: hung: power cycle"],
    "battery": [r"app: low battery \d+%", r"app: critical battery \d+%", r"app: switching off \(battery\)"],
    "press_ack_feedback": [r"alarm: raised \S+$", r"alarm: acked \S+ after \d+ ms$", r"alarm: resolved"],
    "no_ack_sms_then_call": [
        r"fallback: sms to \+31612345678$",
        r"fallback: calling 112$",
        r"fallback: 112 answered",
    ],
    "fallback_fails": [r"fallback: sms to \+31612345678: ", r"fallback: over "],
    "no_data_at_press": [r"alarm: no data path: fallback now", r"fallback: sms to "],
    "tls_refused": [
        r"mqtt: loading the CA into the modem as ca_[0-9a-f]{8}\.pem$",
        r"mqtt: the server's certificate is not from our CA, or is out of date \(TLS handshake failed, 32\)$",
        r"alarm: no data path: fallback now",
        r"fallback: sms to \+31612345678$",
        r"fallback: calling \+31699999999$",
    ],
    "callback_whitelist": [
        r"phone: not answering a call from an unknown number",
        r"phone: answering a call-back",
    ],
    "config_and_commands": [r"app: config_rejected 2", r"app: config_applied 3", r"app: command selftest"],
    "no_fix_cell": [r"alarm: raised \S+$"],
    "power_off": [r"app: power button", r"app: switching off \(button\)"],
    "power_off_silent_alarm": [r"app: power off refused: silent alarm"],
    "gesture": [r"alarm: raised \S+$"],
    "watchdog_reset": [r"alarm: published \S+$", r"alarm: acked \S+ after \d+ ms$"],
}
BOOTS = {"watchdog_reset": 2}  # scenarios that restart the pendant: how many times it must have started


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every scenario run, in two groups: name -> (pendant log, bench log, boots)."""
    build_dir = build(tmp_path_factory.mktemp("build"))
    names = list(SCENARIOS)
    size = (len(names) + 1) // 2
    out = {}
    for i in range(0, len(names), size):
        runs = {}
        for name in names[i : i + size]:
            runs[name] = PendantRun(build_dir, tmp_path_factory.mktemp(name), "scenario_bench.py", [name])
        run_all(list(runs.values()), 270)
        for name, run in runs.items():
            out[name] = (*run.logs(), run.boots)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name, results):
    log, bench, boots = results[name]
    report = f"pendant ({boots} boots):\n{log}\nbench:\n{bench}"
    assert "bench: done" in bench, report
    assert "Traceback" not in log, report
    assert_no_memory_trouble(log, report)
    assert boots == BOOTS.get(name, boots), report
    for line in SCENARIOS[name]:
        assert re.search(line, log, re.MULTILINE), f"no line like {line!r}\n{report}"
    print(f"{name}: peak heap {peak_heap(log)} bytes of {HEAP}")
