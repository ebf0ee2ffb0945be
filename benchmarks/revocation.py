"""Benchmark: from `revoke_device()` to the broker refusing the pendant, on the real broker.

For N trials: provision a device, connect it (MQTT 3.1.1, as the firmware), call `revoke_device()` and
measure (a) until the connected pendant is disconnected by the broker, (b) until a new connection with
its credentials is refused, and (c) the call itself. Baseline, in the same run: a bare round trip to the
dynamic-security API (`getClient`) on a fresh admin connection, which is what a revocation is made of.

Run: .venv/bin/python benchmarks/revocation.py [--trials 20]
"""

from __future__ import annotations

import argparse
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

from pendant_backend.accounts import dynsec_call, provision_device, revoke_device
from pendant_backend.broker import Broker
from pendant_backend.db import make_engine
from pendant_backend.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402


def pendant(settings: Settings, config: dict) -> tuple[paho.Client, threading.Event, threading.Event]:
    connected, dropped = threading.Event(), threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config["device_id"], clean_session=False)
    client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.on_disconnect = lambda c, u, f, rc, p: dropped.set()
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=60)
    client.loop_start()
    assert connected.wait(10)
    return client, connected, dropped


def refused(settings: Settings, config: dict) -> bool:
    answer: dict = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config["device_id"])
    client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
    client.on_connect = lambda c, u, f, rc, p: answer.setdefault("rc", rc)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    deadline = time.monotonic() + 10
    while "rc" not in answer and time.monotonic() < deadline:
        client.loop(0.01)
    client.disconnect()
    return "rc" in answer and answer["rc"].is_failure


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="pendant-bench-"))
    os.chmod(data, 0o711)
    settings = Settings.for_data_dir(data, mqtt_port=free_port())
    broker = Broker(settings)
    broker.start()
    try:
        engine = make_engine(settings.db_url)
        call_s, dropped_s, refused_s, baseline_s = [], [], [], []
        for n in range(args.trials):
            started = time.perf_counter()
            dynsec_call(settings, [{"command": "getClient", "username": "nobody-here"}])
            baseline_s.append(time.perf_counter() - started)

            config = provision_device(settings, f"pd-{n:04d}", engine=engine)
            client, _, dropped = pendant(settings, config)
            started = time.perf_counter()
            revoke_device(settings, config["device_id"], engine=engine)
            call_s.append(time.perf_counter() - started)
            assert dropped.wait(10), "the revoked pendant was not disconnected within 10 s"
            dropped_s.append(time.perf_counter() - started)
            client.disconnect()  # no automatic reconnect (its loop thread is stopped after the check)
            assert refused(settings, config), "the revoked pendant could connect again"
            refused_s.append(time.perf_counter() - started)
            client.loop_stop()
        print(f"{args.trials} revocations of a connected pendant")
        print(f"  revoke_device() returns:            {ms(call_s)}")
        print(f"  connected pendant disconnected:     {ms(dropped_s)}")
        print(f"  new connection refused (CONNACK):   {ms(refused_s)}")
        print(f"baseline: one dynsec round trip on a new admin connection: {ms(baseline_s)}")
        engine.dispose()
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
