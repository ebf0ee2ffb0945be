// The 32-bit side of benchmarks/heap_factor.py: runs its probe script on the WebAssembly port of
// MicroPython (a 32-bit build), with the firmware's .mpy build copied into the port's file system.
//
//     node heap_factor_32bit.mjs <path of micropython.mjs> <flash folder with pendant/*.mpy> <probe.py>
//
// Prints what the probe prints (one JSON line).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [modulePath, flash, probe] = process.argv.slice(2);
const { loadMicroPython } = await import(modulePath);
const mp = await loadMicroPython({ stdout: (line) => process.stdout.write(line + "\n") });

// The firmware package as the bench deploys it, under /flash (on sys.path below).
function copy(from, to) {
  mp.FS.mkdir(to);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      copy(join(from, entry.name), `${to}/${entry.name}`);
    } else if (entry.name.endsWith(".mpy")) {
      mp.FS.writeFile(`${to}/${entry.name}`, readFileSync(join(from, entry.name)));
    }
  }
}
mp.FS.mkdir("/flash");
copy(join(flash, "pendant"), "/flash/pendant");
mp.runPython("import sys\nsys.path.insert(0, '/flash')");
mp.runPython(readFileSync(probe, "utf8"));
