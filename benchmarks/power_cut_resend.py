"""Benchmark: how soon a pendant whose power was cut sends its open alarm again (issue 12, item 6).

Runs `--pendants` virtual pendants with the real firmware on the project's broker (no backend: nothing
acks an alarm, so it stays open across the cut) and makes `--trials` trials, a round of them at once on
all pendants (as the bench run in the issue did with 8). A trial: hold the panic button; cut the power
`--window` ms (uniform, seeded) after the firmware logs `alarm: raised`, or with `--when asleep` once the
alarm is published and the firmware has let the modem sleep (DTR high); then time from the cut until
the alarm reaches the broker from the boot after it. Prints each trial's time and whether DTR was high
at the cut, and how many came within `--bound` seconds. Not part of CI (a minute or more per round).

Run: .venv/bin/python benchmarks/power_cut_resend.py [--pendants 4] [--trials 20] [--window 20,200]
     [--when raise|asleep] [--starts-off] [--firmware DIR] [--bound 15]

`--starts-off`: the modem stays off when the board gets power, until the firmware's PWRKEY pulse, as on
the real T-A7670E (the bench otherwise starts it itself, as if the firmware had pulsed PWRKEY at once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.settings import Settings
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_host import BackgroundSimHost

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "hardware")]
from power_cut_trial import AlarmWatch, Cut, cut_after_raise, cut_while_asleep  # noqa: E402

from support import free_port  # noqa: E402

BOOT_S = 180  # every pendant online, with several on a loaded 2-core machine


def window(text: str) -> tuple[float, float]:
    """`20,200` (ms) -> (0.02, 0.2) seconds."""
    low, high = (int(part) for part in text.split(","))
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError("the window is LOW,HIGH in ms with 0 <= LOW <= HIGH")
    return low / 1000, high / 1000


def run_round(
    sim: BackgroundSimHost, devices: list[str], args: argparse.Namespace, rng: random.Random
) -> list[Cut]:
    """One trial on each of `devices` at once; returns the cuts."""
    delays = [rng.uniform(*args.window) for _ in devices]

    async def trials() -> list[Cut]:
        pendants = [sim.pendant(device) for device in devices]
        if args.when == "asleep":
            return list(await asyncio.gather(*(cut_while_asleep(pendant) for pendant in pendants)))
        return list(
            await asyncio.gather(
                *(cut_after_raise(pendant, delay) for pendant, delay in zip(pendants, delays, strict=True))
            )
        )

    return sim.call(trials(), timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pendants", type=int, default=4, help="pendants run at once (one trial each per round)"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--window", type=window, default=(0.02, 0.2), help="cut LOW,HIGH ms after the raise")
    parser.add_argument("--when", choices=("raise", "asleep"), default="raise")
    parser.add_argument("--starts-off", action="store_true", help="the modem waits for PWRKEY at power-up")
    parser.add_argument("--bound", type=float, default=15.0, help="seconds from the cut the resend must take")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--firmware", type=Path, default=None, help="firmware folder (default: firmware/)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="pendant-cut-"))
    os.chmod(data_dir, 0o711)  # the broker's user must be able to enter it
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port())
    broker = Broker(settings)
    secrets = broker.start()
    modem = None
    if args.starts_off:
        modem = lambda device: ModemSettings.for_device(device, starts_powered=False)  # noqa: E731
    times: list[float | None] = []
    try:
        configs = [provision_device(settings, f"pd-{n:04d}") for n in range(1, args.pendants + 1)]
        devices = [config["device_id"] for config in configs]
        watch = AlarmWatch(settings.mqtt_port, (secrets.backend_username, secrets.backend_password))
        options = {"firmware_dir": args.firmware, "modem_settings": modem}
        with BackgroundSimHost(data_dir, configs, **options) as sim:
            number = 0
            while number < args.trials:
                for device in devices:
                    sim.wait_for_mqtt(device, timeout=BOOT_S)
                time.sleep(3)  # let the pendants settle (and, between rounds, resend what is open)
                chosen = devices[: args.trials - number]
                cuts = run_round(sim, chosen, args, rng)
                for device, cut in zip(chosen, cuts, strict=True):
                    number += 1
                    resend_s = watch.resend_after(cut, max(args.bound * 4, 120))
                    times.append(resend_s)
                    shown = "not resent" if resend_s is None else f"{resend_s:5.1f} s"
                    print(
                        f"trial {number:2d}  {device}  alarm {cut.alarm_id:<14}  DTR high at the cut: "
                        f"{'yes' if cut.dtr_high else 'no '}  resent after {shown}",
                        flush=True,
                    )
        watch.close()
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    within = [value for value in times if value is not None and value <= args.bound]
    known = [value for value in times if value is not None]
    print(
        f"\n{len(within)}/{len(times)} resent within {args.bound:g} s of the cut"
        + (
            f"; min {min(known):.1f} s, median {sorted(known)[len(known) // 2]:.1f} s, max {max(known):.1f} s"
            if known
            else ""
        )
    )
    sys.exit(0 if len(within) == len(times) else 1)


if __name__ == "__main__":
    main()
