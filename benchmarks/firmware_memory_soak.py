"""Soak: the scenarios that load the firmware's heap most, run again and again within its budget.

The pendant firmware (.mpy as the bench deploys it, the sim board, `-X heapsize=` tests/firmware/
firmware_runner.HEAP) runs against tests/firmware/mp/scenario_bench.py, as tests/firmware/
test_scenarios.py runs it. Each of the worst scenarios (modem_hang, fallback_fails,
config_and_commands) runs N times in a row (default 30); a run passes when the bench says `bench: done`,
the pendant's log has no traceback and no sign of a heap running short (a MemoryError, `short of
memory`, `out of memory`, a memory reboot). A scenario stops at its first failure, whose logs are kept.
Printed per scenario: the runs passed, and the peak heap (`mem: peak` lines) over all its runs. The
scenarios run side by side, one run of each per round (as test_scenarios.py runs them in groups).

`--all` runs every scenario of test_scenarios.py once instead and prints the peak heap of each.

Run: .venv/bin/python benchmarks/firmware_memory_soak.py [--runs 30] [--all]
Not part of CI. The logs of a failed run are kept (the folder is printed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support (free ports)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "firmware"))
from firmware_runner import HEAP, PendantRun, build, peak_heap, run_all  # noqa: E402
from test_scenarios import BOOTS, SCENARIOS  # noqa: E402

from pendant_hardware.console_log import memory_trouble  # noqa: E402

WORST = ("modem_hang", "fallback_fails", "config_and_commands")
TIMEOUT_S = 270  # as test_scenarios.py gives each group


def verdict(run: PendantRun, name: str) -> str | None:
    """Why a finished run of scenario `name` failed, or None when it passed."""
    log, bench = run.logs()
    if "bench: done" not in bench:
        failed = [line for line in bench.splitlines() if "bench: FAIL" in line]
        return failed[0] if failed else "the bench did not finish"
    if "Traceback" in log:
        return "a traceback in the pendant's log"
    trouble = memory_trouble(log.splitlines())
    if trouble:
        return f"short of memory: {trouble[0]}"
    if name in BOOTS and run.boots != BOOTS[name]:
        return f"{run.boots} boots, not {BOOTS[name]}"
    return None


def soak(build_dir: Path, work: Path, names: tuple[str, ...], runs: int) -> bool:
    """Run each scenario `runs` times, all scenarios still going at once in each round (they mostly wait
    on timers), a scenario stopping at its first failure; print a line per scenario. True if all passed."""
    passed = dict.fromkeys(names, 0)
    peaks = dict.fromkeys(names, 0)
    failed: dict[str, str] = {}
    started = time.monotonic()
    for i in range(runs):
        going = [name for name in names if name not in failed]
        if not going:
            break
        round_runs = {
            name: PendantRun(build_dir, work / f"{name}-{i}", "scenario_bench.py", [name]) for name in going
        }
        run_all(list(round_runs.values()), TIMEOUT_S)
        for name, run in round_runs.items():
            peaks[name] = max(peaks[name], peak_heap(run.logs()[0]))
            why = verdict(run, name)
            if why:
                failed[name] = f"run {i + 1}: {why} (logs in {run.folder})"
            else:
                passed[name] += 1
        print(f"  round {i + 1} done after {time.monotonic() - started:.0f} s", flush=True)
    for name in names:
        line = f"{name}: {passed[name]}/{runs} runs passed, peak heap {peaks[name]} bytes of {HEAP}"
        print(line + (f"; failed {failed[name]}" if name in failed else ""), flush=True)
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each worst scenario (default 30)")
    parser.add_argument("--all", action="store_true", help="every scenario once, with its peak heap")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pendant-soak-"))
    build_dir = build(work / "build")
    if args.all:
        print(f"every scenario once, heap {HEAP}", flush=True)
        names = tuple(SCENARIOS)
        half = (len(names) + 1) // 2  # in two groups, as test_scenarios.py runs them
        ok = soak(build_dir, work, names[:half], 1) & soak(build_dir, work, names[half:], 1)
    else:
        print(f"{args.runs} runs of each of {', '.join(WORST)}, heap {HEAP}", flush=True)
        ok = soak(build_dir, work, WORST, args.runs)
    if ok:
        shutil.rmtree(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
