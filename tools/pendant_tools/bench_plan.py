"""The bench test as a checklist: steps as data, a runner that gives each a pass, fail or skip, and the
report (JSON, and a table for people). Pure: the steps' checks are functions handed in, so the runner is
tested without a pendant and `bench_steps` wires the real checks.

A step whose prerequisite did not pass is skipped (a SIM check means nothing when the modem does not
answer); the bench passes only when every step passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

PASS, FAIL, SKIP = "pass", "fail", "skip"
REPORT_KIND = "pendant-bench-report"
REPORT_VERSION = 1

C = TypeVar("C")


class StepFailed(Exception):
    """Raised by a check: the step failed, and the message says what was seen (one line)."""

    def __init__(self, detail: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.data = data or {}


@dataclass(frozen=True)
class Outcome:
    """What a passing check returns: a one-line detail and facts for the report."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step(Generic[C]):
    """One line of the checklist. `check(context)` returns an Outcome or raises StepFailed; `needs`
    names steps that must have passed first; `phase` groups steps that need the same pendant state
    (the runner calls `enter_phase` before the first step of each that is not skipped)."""

    key: str
    title: str
    check: Callable[[C], Outcome]
    needs: tuple[str, ...] = ()
    phase: str = "repl"


@dataclass(frozen=True)
class StepResult:
    """How one step went."""

    key: str
    title: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


def run_plan(
    steps: Iterable[Step[C]],
    context: C,
    *,
    enter_phase: Callable[[str], None] | None = None,
    on_start: Callable[[Step[C]], None] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    errors: tuple[type[BaseException], ...] = (),
) -> list[StepResult]:
    """Run the steps in order. A check that raises StepFailed fails its step; one of `errors` (e.g. the
    pendant stopped answering) fails it too, with the error's message; anything else is a bug and
    propagates. A failing `enter_phase` fails every step of that phase."""
    results: dict[str, StepResult] = {}
    ordered: list[StepResult] = []
    entered: str | None = None  # the phase the pendant is in
    phase_error: str | None = None  # why entering it failed
    for step in steps:
        if on_start is not None:
            on_start(step)
        started = time.monotonic()
        missing = [need for need in step.needs if need not in results or results[need].status != PASS]
        if missing:
            names = ", ".join(results[need].title if need in results else need for need in missing)
            result = StepResult(step.key, step.title, SKIP, f"not run: needs {names}", 0.0)
        else:
            if step.phase != entered:
                # Entered on its first step that can run: a phase whose steps are all skipped costs nothing.
                entered, phase_error = step.phase, None
                if enter_phase is not None:
                    try:
                        enter_phase(step.phase)
                    except (StepFailed, *errors) as exc:
                        phase_error = str(exc)
            if phase_error is not None:
                result = StepResult(step.key, step.title, FAIL, phase_error, 0.0)
            else:
                try:
                    outcome = step.check(context)
                    status, detail, data = PASS, outcome.detail, outcome.data
                except StepFailed as failed:
                    status, detail, data = FAIL, str(failed), failed.data
                except errors as exc:
                    status, detail, data = FAIL, str(exc), {}
                seconds = round(time.monotonic() - started, 3)
                result = StepResult(step.key, step.title, status, detail, seconds, data)
        results[step.key] = result
        ordered.append(result)
        if on_result is not None:
            on_result(result)
    return ordered


def passed(results: Iterable[StepResult]) -> bool:
    """True when every step passed (a skipped step is not a pass)."""
    return all(result.status == PASS for result in results)


def build_report(results: list[StepResult], facts: dict[str, Any]) -> dict[str, Any]:
    """The report document: what was tested (`facts`: device, hardware ids, firmware, settings, who and
    when), every step, and the verdict."""
    counts = {status: sum(1 for r in results if r.status == status) for status in (PASS, FAIL, SKIP)}
    return {
        "kind": REPORT_KIND,
        "version": REPORT_VERSION,
        **facts,
        "steps": [asdict(result) for result in results],
        "passed": passed(results),
        "counts": {"passed": counts[PASS], "failed": counts[FAIL], "skipped": counts[SKIP]},
    }


def render_table(report: dict[str, Any]) -> str:
    """The report as a table for people: one line per step, then the verdict."""
    marks = {PASS: "PASS", FAIL: "FAIL", SKIP: "skip"}
    rows = [
        (f"{index}.", step["title"], marks[step["status"]], step["detail"])
        for index, step in enumerate(report["steps"], 1)
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    about = {key: report.get(key) or "?" for key in ("device_id", "imei", "port", "firmware", "technician")}
    lines = [
        f"Bench test of {about['device_id']} (IMEI {about['imei']}) on {about['port']}, firmware "
        f"{about['firmware']}, by {about['technician']} at {report.get('started_at') or '?'}",
        "",
    ]
    for number, title, mark, detail in rows:
        lines.append(f"{number:<{widths[0]}} {title:<{widths[1]}}  {mark:<{widths[2]}}  {detail}".rstrip())
    counts = report["counts"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines += [
        "",
        f"{verdict}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped",
    ]
    return "\n".join(lines)
