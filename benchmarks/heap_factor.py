"""Measure: how much more heap the same objects and code take on the 64-bit unix port than on a 32-bit
MicroPython (the ESP32's word size), the factor behind the firmware's budget of `-X heapsize=128K`.

One MicroPython script (PROBE, below) runs on both: it keeps N objects of each kind alive and reads the
heap they take from the heap in use before and after (gc.mem_alloc() after a collection each time: the
WebAssembly port grows its heap as needed, which moves gc.mem_free() but not what is in use), then
imports the firmware (`pendant.app`, which imports every module, from the .mpy build the bench deploys)
and reads what the loaded code takes: its bytecode, functions and classes, its modules' globals and the
names it interns (the names a port has built in already are not interned again, so this part also
depends on the port). On the 64-bit side it runs on the unix port of the venv; on the 32-bit side on the
WebAssembly port (`@micropython/micropython-webassembly-pyscript`, a 32-bit MicroPython with the same
object layout and GC as the ESP32 port: 4-byte words, 16-byte GC blocks), driven by
heap_factor_32bit.mjs. Install that once:

    npm install --prefix /tmp/mp32 @micropython/micropython-webassembly-pyscript@1.27.0

Run: .venv/bin/python benchmarks/heap_factor.py [--npm-prefix /tmp/mp32] [--peak BYTES]
With --peak (a `mem: peak` of the unix port), it also prints what that peak comes to on 32 bits. Without
node or the package it prints the 64-bit figures and the 32-bit ones the layout gives (every word and
GC block half the size), and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hardware"))
from pendant_hardware.flash import deploy_firmware  # noqa: E402

HERE = Path(__file__).resolve().parent
N = 400

# Runs on MicroPython (both ports). Prints one JSON line: bytes per object of each kind, bytes of the
# firmware's loaded code, and the word size.
PROBE = (
    f"N = {N}\n"
    + """
import gc, json, sys


class Small:
    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c


KINDS = (
    ("2-tuple", lambda i: (i, i)),
    ("2-list", lambda i: [i, i]),
    ("2-entry dict", lambda i: {"a": i, "b": i}),
    ("instance, 3 attributes", lambda i: Small(i, i, i)),
    ("8-char str", lambda i: "%08d" % i),
    ("8-byte bytes", lambda i: ("%08d" % i).encode()),
)


def cost(make, n):
    keep = [None] * n
    gc.collect()
    before = gc.mem_alloc()
    for i in range(n):
        keep[i] = make(i)
    gc.collect()
    return (gc.mem_alloc() - before) / n


out = {"word": 8 if sys.maxsize > 2**32 else 4, "objects": {}}
for name, make in KINDS:
    out["objects"][name] = cost(make, N)
import asyncio  # the firmware's first import; frozen on both ports, so only its objects count

gc.collect()
before = gc.mem_alloc()
import pendant.app

gc.collect()
out["code"] = gc.mem_alloc() - before
print(json.dumps(out))
"""
)


def on_unix_port(build: Path, script: Path) -> dict:
    micropython = shutil.which("micropython", path=str(Path(sys.executable).parent)) or "micropython"
    env = dict(os.environ, MICROPYPATH=f".frozen:{build}")
    result = subprocess.run(
        [micropython, "-X", "heapsize=1M", str(script)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def on_32_bits(build: Path, script: Path, prefix: Path) -> dict | None:
    package = (
        prefix / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
    )
    node = shutil.which("node")
    if node is None or not package.exists():
        return None
    result = subprocess.run(
        [node, str(HERE / "heap_factor_32bit.mjs"), str(package), str(build), str(script)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--npm-prefix", type=Path, default=Path("/tmp/mp32"), help="where npm installed it")
    parser.add_argument("--peak", type=int, help="a `mem: peak` of the unix port, to translate to 32 bits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heap-factor-") as scratch:
        build = Path(scratch) / "flash"
        files = deploy_firmware(build, ROOT / "firmware")
        mpy = sum(path.stat().st_size for path in files if path.suffix == ".mpy")
        script = Path(scratch) / "probe.py"
        script.write_text(PROBE)
        wide = on_unix_port(build, script)
        narrow = on_32_bits(build, script, args.npm_prefix)
    measured = narrow is not None
    if not measured:
        print("no 32-bit MicroPython here (node, or the npm package, missing): the 32-bit column is the")
        print("layout's (half of every word and GC block), not measured")
        narrow = {"word": 4, "objects": {k: v / 2 for k, v in wide["objects"].items()}, "code": None}
    print(f"bytes per object, {N} of each kept alive (gc.mem_alloc deltas)")
    print(f"{'kind':<24} {'64-bit unix':>12} {'32-bit':>8} {'ratio':>6}")
    for name, size in wide["objects"].items():
        small = narrow["objects"][name]
        print(f"{name:<24} {size:>12.1f} {small:>8.1f} {size / small:>6.2f}")
    total_wide = sum(wide["objects"].values())
    total_narrow = sum(narrow["objects"].values())
    print(f"{'all of them':<24} {total_wide:>12.1f} {total_narrow:>8.1f} {total_wide / total_narrow:>6.2f}")
    modules = len([path for path in files if path.suffix == ".mpy"])
    print(f"the firmware's code, all {modules} modules ({mpy} bytes of .mpy) loaded:")
    if narrow["code"]:
        ratio = wide["code"] / narrow["code"]
        print(f"{'loaded code':<24} {wide['code']:>12} {narrow['code']:>8} {ratio:>6.2f}")
    else:
        print(f"{'loaded code':<24} {wide['code']:>12} {'-':>8}")
    if args.peak and narrow["code"]:
        objects = args.peak - wide["code"]
        estimate = narrow["code"] + objects * total_narrow / total_wide
        print(
            f"a peak of {args.peak} bytes on the unix port: {wide['code']} of code and {objects} of objects;"
            f" on 32 bits about {estimate:.0f} bytes ({estimate / 1024:.0f} KB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
