"""Benchmark: how many virtual pendants one machine runs at once, and what each one costs.

For each count N (in steps), starts N virtual pendants with the real firmware on the project's broker
(one provisioned account each), waits until every one holds its MQTT connection, lets them run for a
settle window, and measures:

- memory of the `micropython` processes: RSS, and PSS (the fair share: the interpreter's code is shared
  between processes), per pendant;
- memory of the bench process (modem simulators, board channels, paho threads), growth per pendant;
- CPU per pendant over the window (firmware processes plus the bench's share), in % of one core;
- that the pendants still work at that count: one of them is pressed and must publish its alarm.

Baseline, in the same run: an idle `micropython -X heapsize=64K` process (what the unix port costs doing
nothing) and the bench process before any pendant starts. The machine's limit is estimated from the
per-pendant figures against the machine's RAM and cores, and the largest N actually run is reported.

Run: .venv/bin/python benchmarks/sim_scale.py [--counts 1,10,25] [--settle 20] [--firmware DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.settings import Settings
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_hardware.virtual_pendant import find_micropython

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine() -> tuple[int, int]:
    """(available memory in kB, cores)."""
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1])
    return available, os.cpu_count() or 1


def idle_interpreter(settle: float) -> tuple[int, int, float]:
    """Baseline: RSS, PSS (kB) and CPU % of an idle unix-port interpreter with the pendant's heap."""
    process = subprocess.Popen(
        [find_micropython(), "-X", "heapsize=64K", "-c", "import time\nwhile True: time.sleep(1)"]
    )
    try:
        time.sleep(1)
        before = cpu_seconds(process.pid)
        time.sleep(settle)
        cpu = (cpu_seconds(process.pid) - before) / settle * 100
        rss, pss = memory_kb(process.pid)
        return rss, pss, cpu
    finally:
        process.kill()
        process.wait()


def run_step(count: int, accounts: list[dict], data_dir: Path, firmware: Path | None, settle: float) -> dict:
    configs = accounts[:count]
    bench_before = memory_kb(os.getpid())[0]
    started = time.monotonic()
    with BackgroundSimHost(data_dir, configs, firmware_dir=firmware) as sim:
        for config in configs:
            sim.wait_for_mqtt(config["device_id"], timeout=120 + count)
        online_s = time.monotonic() - started
        pids = [sim.pendant(config["device_id"]).pid for config in configs]
        pids = [pid for pid in pids if pid is not None]
        mine = os.getpid()
        cpu_before = sum(cpu_seconds(pid) for pid in pids) + cpu_seconds(mine)
        time.sleep(settle)
        cpu = (sum(cpu_seconds(pid) for pid in pids) + cpu_seconds(mine) - cpu_before) / settle * 100
        memories = [memory_kb(pid) for pid in pids]
        bench_after = memory_kb(mine)[0]
        device = configs[-1]["device_id"]
        seen = len(sim.pendant(device).events)
        sim.press(device, 2500)
        sim.wait_for_event(device, "alarm_published", after=seen, timeout=60)
        alive = sum(1 for config in configs if sim.pendant(config["device_id"]).mqtt_connected)
    return {
        "count": count,
        "processes": len(pids),
        "online_s": online_s,
        "alive": alive,
        "rss_kb": sum(rss for rss, _ in memories) / max(1, len(memories)),
        "pss_kb": sum(pss for _, pss in memories) / max(1, len(memories)),
        "bench_kb": (bench_after - bench_before) / count,
        "cpu_pct": cpu / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,10,25", help="pendant counts to run, comma-separated")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of steady running to measure")
    parser.add_argument("--firmware", type=Path, default=None, help="firmware folder (default: firmware/)")
    args = parser.parse_args()
    counts = [int(part) for part in args.counts.split(",")]
    available_kb, cores = machine()
    idle_rss, idle_pss, idle_cpu = idle_interpreter(min(args.settle, 10))
    data_dir = Path(tempfile.mkdtemp(prefix="pendant-scale-"))
    os.chmod(data_dir, 0o711)
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port())
    broker = Broker(settings)
    broker.start()
    results = []
    try:
        accounts = [provision_device(settings, f"pd-{number:04d}") for number in range(1, max(counts) + 1)]
        for count in counts:
            print(f"running {count} pendants ...", flush=True)
            results.append(run_step(count, accounts, data_dir, args.firmware, args.settle))
            shutil.rmtree(data_dir / "sim", ignore_errors=True)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(f"machine: {cores} cores, {available_kb / 1024:.0f} MB available")
    print(
        f"baseline: idle micropython -X heapsize=64K: RSS {idle_rss} kB, PSS {idle_pss} kB, "
        f"CPU {idle_cpu:.2f} %"
    )
    print("count  online after  alive  RSS/pendant  PSS/pendant  bench/pendant  CPU/pendant (% of a core)")
    for row in results:
        print(
            f"{row['count']:5d}  {row['online_s']:10.1f} s  {row['alive']:5d}  {row['rss_kb']:8.0f} kB"
            f"  {row['pss_kb']:8.0f} kB  {row['bench_kb']:10.0f} kB  {row['cpu_pct']:8.2f}"
        )
    last = results[-1]
    per_pendant_kb = last["pss_kb"] + max(last["bench_kb"], 0)
    by_memory = int(available_kb / per_pendant_kb)
    by_cpu = int(cores * 100 / last["cpu_pct"]) if last["cpu_pct"] > 0 else by_memory
    print(
        f"estimate: memory allows {by_memory} pendants ({per_pendant_kb:.0f} kB each), CPU allows {by_cpu} "
        f"({last['cpu_pct']:.2f} % of a core each); largest run here: {last['count']} "
        f"(x{last['pss_kb'] / idle_pss:.1f} the idle interpreter's PSS)"
    )


if __name__ == "__main__":
    main()
