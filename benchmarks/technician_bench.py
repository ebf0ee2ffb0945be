"""Benchmark: time to provision and to bench-test one virtual pendant, on real parts.

Per run, a pendant fresh from the factory (MicroPython and the bench's build of the firmware on its
flash, no config.json) on the bench simulator, the project's Mosquitto and the backend service; with
--returned, one back from an earlier holder (a config.json whose credentials the broker refuses):

- deploy: `deploy` of this repository's firmware (the technician's step before provisioning);
- provision: `provision_pendant` (identify through the REPL, register, credentials, write config.json,
  reboot, first heartbeat stored by the backend), with its stages;
- bench: `run_bench` with every step (the button pressed and the questions answered by the script as soon
  as they come), with each step's time.

Baseline in the same run: a pendant that already has its config and the deployed firmware, from its
reset to its first heartbeat in the backend (what the last stage of provisioning and the online phase
of the bench wait for).

With --reports, one more run with the modem's GNSS fault injected, and the report table of a passing and
of that failing run.

Run: .venv/bin/python benchmarks/technician_bench.py [--runs 3] [--heap 64K] [--reports] [--returned]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.db import engine_for
from pendant_backend.models import utc_now
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_hardware.virtual_pendant import HEAP_SIZE
from pendant_tools.bench_plan import render_table
from pendant_tools.bench_steps import BenchOptions, run_bench
from pendant_tools.deploying import deploy
from pendant_tools.probes import BUTTON_PROMPT
from pendant_tools.provisioning import provision_pendant, wait_for_heartbeat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402


class ScriptedTechnician:
    """Presses the button as soon as the pendant waits for it; says yes to what it is asked."""

    def __init__(self, sim: BackgroundSimHost, device: str) -> None:
        self.sim, self.device = sim, device

    def instruct(self, message: str) -> None:
        after = self.sim.pendant(self.device).line_count

        def press() -> None:
            self.sim.wait_for_line(self.device, BUTTON_PROMPT, after=after, timeout=120)
            self.sim.press(self.device, 300)

        threading.Thread(target=press, daemon=True).start()

    def confirm(self, question: str) -> bool:
        return True


def stale_config(settings: Settings, device: str) -> dict[str, Any]:
    """A config.json whose password the broker does not know (an earlier holder's, revoked)."""
    mqtt = {"host": settings.mqtt_host, "port": settings.mqtt_port, "user": device, "password": "-"}
    return {"device_id": device, "mqtt": {**mqtt, "tls": False, "keepalive": 60}, "apn": "internet"}


def wait_mode(sim: BackgroundSimHost, device: str) -> str:
    deadline = time.monotonic() + 120
    while sim.pendant(device).pty is None or sim.state(device)["mode"] not in ("firmware", "repl"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{device} did not boot")
        time.sleep(0.05)
    port = sim.pendant(device).pty
    assert port is not None
    return port


def one_run(
    settings: Settings, number: int, heap: str, *, returned: bool, fault: str | None = None
) -> dict[str, Any]:
    device = f"pd-{number:04d}"
    engine = engine_for(settings)
    with BackgroundSimHost(settings.data_dir, [stale_config(settings, device)], heap_size=heap) as sim:
        if not returned:
            (settings.data_dir / f"sim/{device}/flash/config.json").unlink()
            sim.reset(device)
        port = wait_mode(sim, device)
        if fault:
            sim.inject_fault(device, fault)
        started = time.perf_counter()
        deployed = deploy(port)
        deploy_s = time.perf_counter() - started
        started = time.perf_counter()
        provisioned = provision_pendant(port, settings, device_id=device, actor="technician:benchmark")
        provision_s = time.perf_counter() - started
        steps: dict[str, float] = {}
        started = time.perf_counter()
        result = run_bench(
            port,
            settings,
            technician=ScriptedTechnician(sim, device),
            options=BenchOptions(test_number="+31612345678", gnss_timeout=10 if fault else 120),
            actor="technician:benchmark",
            engine=engine,
            on_result=lambda step: steps.__setitem__(step.key, step.seconds),
        )
        bench_s = time.perf_counter() - started
    failed = [s["key"] for s in result.report["steps"] if s["status"] != "pass"]
    return {
        "deploy": deploy_s,
        "copied": len(deployed.copied),
        "provision": provision_s,
        "stages": provisioned.seconds,
        "bench": bench_s,
        "steps": steps,
        "failed": failed,
        "table": render_table(result.report),
        "stored": result.stored,
    }


def baseline_boot(settings: Settings, number: int, heap: str) -> float:
    """A provisioned pendant with the deployed firmware: from its reset to its first heartbeat stored."""
    device = f"pd-{number:04d}"
    config = provision_device(settings, device)
    with BackgroundSimHost(settings.data_dir, [config], heap_size=heap) as sim:
        deploy(wait_mode(sim, device), reboot=False)
        started, at = time.perf_counter(), utc_now()
        sim.reset(device)
        wait_for_heartbeat(engine_for(settings), device, after=at, timeout=120)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--heap", default=HEAP_SIZE, help="MicroPython heap of the virtual pendants")
    parser.add_argument(
        "--reports", action="store_true", help="also a run with no GNSS fix; print both reports"
    )
    parser.add_argument(
        "--returned", action="store_true", help="pendants with an earlier holder's config.json"
    )
    args = parser.parse_args()
    # SIGTERM (timeout, kill) stops it as Ctrl-C does: the broker and the pendants are stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    data = Path(tempfile.mkdtemp(prefix="bench-technician-"))
    os.chmod(data, 0o711)
    settings = Settings.for_data_dir(data, mqtt_port=free_port())
    broker = Broker(settings)
    broker.start()
    service = BackendService(settings)
    service.start()
    try:
        assert service.wait_ready(10)
        baseline = [baseline_boot(settings, 900 + i, args.heap) for i in range(args.runs)]
        runs = [one_run(settings, 1 + i, args.heap, returned=args.returned) for i in range(args.runs)]
        faulty = (
            one_run(settings, 100, args.heap, returned=args.returned, fault="gnss_no_fix")
            if args.reports
            else None
        )
    finally:
        service.stop()
        broker.kill()
        shutil.rmtree(data, ignore_errors=True)
    boot = statistics.median(baseline)
    kind = "with an earlier holder's config.json" if args.returned else "fresh from the factory"
    print(f"{args.runs} runs, virtual pendants {kind}, with a {args.heap} heap")
    print(
        f"baseline: a provisioned pendant from its reset to its first heartbeat stored: median {boot:.1f} s"
    )
    deployed = statistics.median(r["deploy"] for r in runs)
    print(f"deploy the firmware: median {deployed:.1f} s ({runs[0]['copied']} files copied)")
    provision = statistics.median(r["provision"] for r in runs)
    stages = {k: statistics.median(r["stages"][k] for r in runs) for k in runs[0]["stages"]}
    print(
        f"provision one pendant: median {provision:.1f} s (x{provision / boot:.2f} baseline); "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
    )
    bench = statistics.median(r["bench"] for r in runs)
    steps = {k: statistics.median(r["steps"][k] for r in runs) for k in runs[0]["steps"]}
    print(f"bench-test one pendant: median {bench:.1f} s (x{bench / boot:.2f} baseline)")
    print("   " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    print(f"steps not passed: {[r['failed'] for r in runs]}")
    if faulty is not None:
        for title, run in (("a passing run", runs[-1]), ("a run with the GNSS fault injected", faulty)):
            print(f"\n--- the bench report of {title} (stored: {run['stored']})\n{run['table']}")


if __name__ == "__main__":
    main()
