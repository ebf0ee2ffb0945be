"""The bench checklist runner on its own: pass/fail/skip per step, prerequisites, phases, the report and
its table. The real steps are tested against a virtual pendant in test_bench.py."""

from __future__ import annotations

import pytest

from pendant_tools.bench_plan import (
    FAIL,
    PASS,
    SKIP,
    Outcome,
    Step,
    StepFailed,
    build_report,
    passed,
    render_table,
    run_plan,
)


class Lost(Exception):
    """Stands for 'the pendant stopped answering'."""


def ok(detail: str) -> object:
    return lambda context: Outcome(detail, {"seen": detail})


def fails(detail: str) -> object:
    def check(context: object) -> Outcome:
        raise StepFailed(detail, {"why": detail})

    return check


def test_results_follow_the_plan_with_prerequisites_skipping() -> None:
    steps = [
        Step("modem", "Modem answers", fails("no answer to AT")),
        Step("sim", "SIM present", ok("ICCID 8931"), needs=("modem",)),
        Step("battery", "Battery plausible", ok("3950 mV")),
        Step("signal", "Signal", ok("-73 dBm"), needs=("modem", "battery")),
    ]
    results = run_plan(steps, context=None)
    assert [(r.key, r.status) for r in results] == [
        ("modem", FAIL),
        ("sim", SKIP),
        ("battery", PASS),
        ("signal", SKIP),
    ]
    assert results[0].detail == "no answer to AT" and results[0].data == {"why": "no answer to AT"}
    assert results[1].detail == "not run: needs Modem answers"
    assert results[2].data == {"seen": "3950 mV"}
    assert not passed(results)
    assert passed(results[2:3])


def test_known_errors_fail_the_step_and_bugs_propagate() -> None:
    def lost(context: object) -> Outcome:
        raise Lost("the pendant stopped answering")

    results = run_plan([Step("a", "A", lost), Step("b", "B", ok("fine"))], None, errors=(Lost,))
    assert [(r.status, r.detail) for r in results] == [
        (FAIL, "the pendant stopped answering"),
        (PASS, "fine"),
    ]

    def bug(context: object) -> Outcome:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        run_plan([Step("a", "A", bug)], None, errors=(Lost,))


def test_phases_are_entered_once_each_and_a_failed_entry_fails_its_steps() -> None:
    entered: list[str] = []

    def enter(phase: str) -> None:
        entered.append(phase)
        if phase == "online":
            raise StepFailed("the pendant did not come online within 60 s")

    steps = [
        Step("a", "A", ok("a")),
        Step("b", "B", ok("b")),
        Step("c", "C", ok("c"), phase="online"),
        Step("d", "D", ok("d"), phase="online"),
    ]
    seen: list[str] = []
    results = run_plan(
        steps, None, enter_phase=enter, on_start=lambda step: seen.append(step.key), errors=(Lost,)
    )
    assert entered == ["repl", "online"]
    assert seen == ["a", "b", "c", "d"]
    assert [(r.status, r.detail) for r in results[2:]] == [
        (FAIL, "the pendant did not come online within 60 s")
    ] * 2


def test_report_and_table() -> None:
    results = run_plan(
        [
            Step("gnss", "GNSS fix within 10 s", fails("no fix after 10 s")),
            Step("bat", "Battery", ok("3950 mV")),
        ],
        None,
    )
    report = build_report(results, {"device_id": "pd-0001", "imei": "869731050000010", "port": "/dev/pts/3"})
    assert report["kind"] == "pendant-bench-report" and report["version"] == 1
    assert report["passed"] is False
    assert report["counts"] == {"passed": 1, "failed": 1, "skipped": 0}
    assert [step["status"] for step in report["steps"]] == [FAIL, PASS]
    table = render_table(report).splitlines()
    assert table[0].startswith("Bench test of pd-0001 (IMEI 869731050000010) on /dev/pts/3")
    assert table[2] == "1. GNSS fix within 10 s  FAIL  no fix after 10 s"
    assert table[3] == "2. Battery               PASS  3950 mV"
    assert table[-1] == "FAILED: 1 passed, 1 failed, 0 skipped"
