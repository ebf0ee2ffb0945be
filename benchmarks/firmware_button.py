"""Benchmark: button to publish command on the MicroPython unix port, with a baseline from the same run.

The pendant firmware (its heap budget, .mpy as the bench deploys it, the sim board) runs against
tests/firmware/mp/scenario_bench.py (a fake A7670 and a scripted board over TCP). The bench holds the
panic button N times; for each press it measures the time from the moment the hold reached press_ms
(2000 ms after `BTN 1`) to the arrival of the alarm's `AT+CMQTTPUB` at the modem: the firmware's own
share of a panic alarm's latency (a real modem and network add the rest).

Baseline, in the same run: a bare MicroPython program under the same heap and the same bench (written
below, `BARE`) that polls the button every 20 ms as the firmware does and, once held for 2000 ms, writes
the same TOPIC/PAYLOAD/PUB sequence straight away: no outbox on flash, no scheduler, no session. The
difference is what the firmware's safety (the alarm on flash first, the task structure) costs.

Also printed: the firmware's peak heap over the run (`mem: peak` lines) and the total .mpy size.

Run: .venv/bin/python benchmarks/firmware_button.py [--presses 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support (free ports)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "firmware"))
from firmware_runner import HEAP, PendantRun, build, run_all  # noqa: E402

BARE = """
import json, socket, select
from time import sleep_ms, ticks_ms, ticks_diff
with open("sim.json") as f:
    ports = json.load(f)
def connect(address):
    s = socket.socket()
    s.connect(socket.getaddrinfo(address[0], address[1])[0][-1])
    return s
modem = connect(ports["modem"])
io = connect(ports["io"])
io.write(b"HELLO bare 0\\n")
poll = select.poll()
poll.register(io, select.POLLIN)
def until(token):
    got = b""
    while token not in got:
        got += modem.read(1)
def command(line, data=None):
    modem.write(line + b"\\r")
    if data is not None:
        until(b">")
        modem.write(data)
    until(b"OK")
topic = b"pendant/v1/pd-0001/alarm"
n = 0
held = None
pending = b""
while True:
    if poll.poll(20):
        pending += io.recv(64)
        while b"\\n" in pending:
            line, pending = pending.split(b"\\n", 1)
            if line == b"BTN 1":
                held = ticks_ms()
            elif line == b"BTN 0":
                held = None
    if held is not None and ticks_diff(ticks_ms(), held) >= 2000:
        held = None
        n += 1
        payload = b'{"alarm_id":"1-%d","kind":"panic","tst":null,"loc":null,"cell":null,"batt":null,' % n
        payload += b'"test":false}'
        command(b"AT+CMQTTTOPIC=0,%d" % len(topic), topic)
        command(b"AT+CMQTTPAYLOAD=0,%d" % len(payload), payload)
        command(b"AT+CMQTTPUB=0,1,30")
"""


def measure(build_dir: Path, folder: Path, scenario: str, main_py: str | None, presses: int):
    os.environ["BENCH_PRESSES"] = str(presses)
    run = PendantRun(build_dir, folder, "scenario_bench.py", [scenario])
    if main_py is not None:
        (folder / "main.py").write_text(main_py)
    run_all([run], 60 + presses * 10)
    pendant, bench = run.logs()
    times = [int(ms) for ms in re.findall(r"^bench: button_ms (-?\d+)$", bench, re.MULTILINE)]
    if len(times) != presses:
        sys.exit(
            f"{scenario}: {len(times)} of {presses} presses measured\npendant:\n{pendant}\nbench:\n{bench}"
        )
    peaks = [int(p) for p in re.findall(r" mem: peak (\d+) ", pendant)]
    return times, max(peaks) if peaks else None


def describe(name: str, times: list[int]) -> str:
    times = sorted(times)
    return (
        f"{name:9s} median {statistics.median(times):6.1f} ms   min {times[0]:4d}   "
        f"p90 {times[int(len(times) * 0.9) - 1]:4d}   max {times[-1]:4d}   (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="firmware-button-") as tmp:
        root = Path(tmp)
        build_dir = build(root / "build")
        mpy = sum(p.stat().st_size for p in (build_dir / "pendant").rglob("*.mpy"))
        print(f"button -> AT+CMQTTPUB on the unix port, {args.presses} presses each, heap {HEAP}", flush=True)
        firmware, peak = measure(build_dir, root / "firmware", "button_timing", None, args.presses)
        bare, _ = measure(build_dir, root / "bare", "button_timing_bare", BARE, args.presses)
    print(describe("firmware", firmware))
    print(describe("baseline", bare))
    print(f"firmware - baseline, medians: {statistics.median(firmware) - statistics.median(bare):.1f} ms")
    print(f"firmware peak heap: {peak} bytes of {HEAP}; firmware .mpy total: {mpy} bytes")


if __name__ == "__main__":
    main()
