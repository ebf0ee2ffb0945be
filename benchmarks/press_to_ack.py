"""Benchmark: time from a panic-button press to the backend's ack at the pendant, on real parts.

The real firmware (MicroPython unix port, 128K heap, .mpy) -> simulated A7670 -> Mosquitto -> backend ->
SQLite -> alarm/ack -> pendant. Prints, for N presses:

- firmware: from the moment the firmware raises the alarm (the button held for press_ms) to the moment it
  reads the matching alarm/ack (its own `alarm: acked <id> after <ms> ms` line);
- bench: from the end of the press_ms hold, as the bench timed the button, to the `VIB received` line the
  board received (what the victim feels);
- baseline, in the same run: the same alarm/ack round trip from a plain paho client on the same broker and
  backend, without firmware or modem; the ratios say what the pendant path adds.
- the firmware's peak heap (`mem: peak` lines) over the run.

The pendant connects over plain MQTT (the loopback listener the bench may use). With --tls a second
pendant connects as provisioning sets it up, over TLS to the broker's TLS listener, verifying the project
CA through the simulated modem (a real handshake); the presses alternate between the two, so both meet
the same load, and the TLS figures are printed against the plain ones (median, max, ratio).

Run: .venv/bin/python benchmarks/press_to_ack.py [--presses 20] [--tls]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend.accounts import provision_device
from pendant_backend.broker import Broker
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_hardware.virtual_pendant import HEAP_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402

PRESS_MS = 2500
HOLD_MS = 2000  # the firmware's default press_ms: the alarm is raised when the hold reaches it
RELEASE_S = 1.0
PLAIN, TLS = "pd-0001", "pd-0002"


def pendant_round_trips(
    sim: BackgroundSimHost, devices: list[str], presses: int
) -> dict[str, tuple[list[int], list[float]]]:
    """`presses` presses on each device, taking turns; each device's (firmware ms, bench ms)."""
    times: dict[str, tuple[list[int], list[float]]] = {device: ([], []) for device in devices}
    for number in range(presses):
        for device in devices:
            pendant = sim.pendant(device)
            events, vibrations = len(pendant.events), len(pendant.vibrations)
            started = time.time()
            sim.press(device, PRESS_MS)
            acked = sim.wait_for_event(device, "alarm_acked", after=events, timeout=60)
            received = sim.wait_for_vibration(device, "received", after=_board_index(sim, device, vibrations))
            firmware_ms, bench_ms = times[device]
            firmware_ms.append(acked.ms)
            bench_ms.append((received.t - started) * 1000 - HOLD_MS)
            print(
                f"  press {number + 1:2d} {device}: firmware {acked.ms} ms, bench {bench_ms[-1]:.0f} ms",
                flush=True,
            )
            time.sleep(RELEASE_S)
    return times


def plain_config(config: dict, settings: Settings) -> dict:
    """The device's config, over plain MQTT to the loopback listener instead of TLS (the bench's way)."""
    mqtt = {**config["mqtt"], "host": settings.mqtt_host, "port": settings.mqtt_port, "tls": False}
    mqtt.pop("ca", None)
    return {**{key: value for key, value in config.items() if key != "files"}, "mqtt": mqtt}


def _board_index(sim: BackgroundSimHost, device: str, vibrations_before: int) -> int:
    """Index in the board's event list of the first vibration after `vibrations_before` vibrations."""
    events = sim.pendant(device).board.events
    seen = 0
    for index, event in enumerate(events):
        if event.kind == "VIB":
            if seen == vibrations_before:
                return index
            seen += 1
    return len(events)


def baseline_round_trips(config: dict, presses: int) -> list[float]:
    """The same alarm -> alarm/ack round trip from a plain MQTT client using the device's account
    (`config`: over plain MQTT, plain_config's)."""
    device, mqtt = config["device_id"], config["mqtt"]
    acks: dict[str, threading.Event] = {}
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv311, clean_session=False
    )
    client.username_pw_set(mqtt["user"], mqtt["password"])

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        alarm_id = json.loads(message.payload)["alarm_id"]
        if alarm_id in acks:
            acks[alarm_id].set()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(mqtt["host"], mqtt["port"])
    client.loop_start()
    client.subscribe(f"pendant/v1/{device}/alarm/ack", qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("the baseline client could not subscribe")
    times = []
    for number in range(presses):
        alarm_id = f"999999-{number + 1}"
        acks[alarm_id] = threading.Event()
        payload = {
            "alarm_id": alarm_id,
            "kind": "test",
            "tst": int(time.time()),
            "loc": None,
            "cell": None,
            "batt": 90,
            "test": True,
        }
        started = time.perf_counter()
        client.publish(f"pendant/v1/{device}/alarm", json.dumps(payload, separators=(",", ":")), qos=1)
        if not acks[alarm_id].wait(30):
            raise RuntimeError(f"no ack for the baseline alarm {alarm_id}")
        times.append((time.perf_counter() - started) * 1000)
    client.loop_stop()
    client.disconnect()
    return times


def summary(name: str, values: list[float], baseline: float | None = None) -> str:
    median = statistics.median(values)
    text = f"{name:<14} median {median:7.1f} ms   max {max(values):7.1f} ms   (n={len(values)})"
    if baseline:
        text += f"   median x{median / baseline:.1f} of baseline"
    return text


def tls_against_plain(name: str, tls: list[float], plain: list[float]) -> str:
    """One line: the TLS pendant's median and max against the plain one's."""
    ratio = statistics.median(tls) / statistics.median(plain)
    return (
        f"{name:<14} TLS median {statistics.median(tls):7.1f} ms, max {max(tls):7.1f} ms; plain median "
        f"{statistics.median(plain):7.1f} ms, max {max(plain):7.1f} ms; median x{ratio:.2f}, "
        f"max x{max(tls) / max(plain):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--tls", action="store_true", help="also a pendant over TLS, compared with plain")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="pendant-bench-"))
    os.chmod(data_dir, 0o711)
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port(), mqtt_tls_port=free_port())
    broker = Broker(settings)
    broker.start()
    try:
        plain = plain_config(provision_device(settings, PLAIN), settings)
        configs = [plain] + ([provision_device(settings, TLS)] if args.tls else [])
        devices = [config["device_id"] for config in configs]
        baseline_config = plain_config(provision_device(settings, "pd-baseline"), settings)
        with BackendService(settings) as backend, BackgroundSimHost(data_dir, configs) as sim:
            if not backend.wait_ready(15):
                raise RuntimeError("the backend did not connect")
            for device in devices:
                sim.wait_for_mqtt(device, timeout=90)
            time.sleep(5)  # let the firmware take its first GNSS fix, as a worn pendant has
            print(f"{args.presses} presses on each of {', '.join(devices)}:")
            times = pendant_round_trips(sim, devices, args.presses)
            baseline_ms = baseline_round_trips(baseline_config, args.presses)
            peaks = [event.peak for d in devices for event in sim.pendant(d).events if event.kind == "mem"]
        base = statistics.median(baseline_ms)
        print()
        print(summary("baseline", baseline_ms))
        for device in devices:
            over = "TLS" if device == TLS else "plain"
            print(summary(f"firmware {over}", times[device][0], base))
            print(summary(f"bench {over}", times[device][1], base))
        if args.tls:
            print()
            for index, name in enumerate(("firmware", "bench")):
                print(tls_against_plain(name, times[TLS][index], times[PLAIN][index]))
        print(f"firmware peak heap: {max(peaks)} bytes of {HEAP_SIZE} ({len(peaks)} mem lines)")
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
