"""benchmarks/fleet_scale.py at a tiny fleet, so that it does not rot: it runs on the real broker,
backend (the main process and an ingest-only worker) and SQLite, prints its figures, and every alarm its
pendants raised was stored and acked while the junk burst was counted by reason. No speed is asserted
(the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet_scale.py"


@pytest.mark.broker
def test_the_fleet_benchmark_runs_at_five_pendants(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "5", "--duration", "4", "--rate", "40", "--junk", "2",
         "--ack-wait", "60", "--drain", "30", "--ingest-workers", "2", "--data", str(tmp_path / "data"),
         "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for line in (
        "raw/s  persisted/s",
        "every valid alarm of both phases stored and acked: yes",
        "targets at N=5",
        "backend in 2 process(es)",
    ):
        assert line in run.stdout, run.stdout
    (result,) = json.loads(figures.read_text())["results"]
    assert result["alarms"] > 0
    assert result["alarms_acked"] == result["alarms_stored"] == result["alarms"]
    # The phase at the fleet's own pace raised alarms too, and every one was stored and acked.
    paced = result["paced"]
    assert paced["alarms"] > 0
    assert paced["alarms_acked"] == paced["alarms_stored"] == paced["alarms"]
    assert result["raw_per_s"] > 0 and result["persisted_per_s"] > 0
    # The start was over before the phases: the configs back on the new broker, the first heartbeats
    # stored and classified.
    assert result["configs_back_s"] is not None and result["first_beats_s"] is not None, result
    assert result["backlog_left"] == 0
    # The burst's junk was rejected by reason (counted by whichever worker took it), the unknown
    # accounts' messages among it.
    for reason in ("bad_json", "oversize", "unknown_device"):
        assert result["rejections"].get(reason, 0) > 0, result["rejections"]
