"""Benchmark: provisioning a fleet on the real broker (dynamic-security API) and database.

Prints, for N devices (default 1,000):
- the whole run through `provision_devices` (one admin connection; per device: look-up, role, client,
  PBKDF2 hash, database row, audit event, first config queued), total and per device;
- baseline, in the same run: the broker's bare round trip (`getClient` of an unknown name) N times on the
  same connection, and the password hash alone N times: what the rest of provisioning adds;
- a check: 20 provisioned devices, chosen at random, connect with their config.

Run: .venv/bin/python benchmarks/provision_fleet.py [--devices 1000] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend.accounts import dynsec_call, dynsec_session, hash_password, provision_devices
from pendant_backend.broker import Broker, new_password
from pendant_backend.db import make_engine
from pendant_backend.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402


def connects(settings: Settings, config: dict) -> bool:
    result = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config["device_id"])
    client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    return "rc" in result and not result["rc"].is_failure


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--db-url", help="default: SQLite in the temporary data folder")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="pendant-bench-"))
    os.chmod(data, 0o711)
    settings = Settings.for_data_dir(data, mqtt_port=free_port())
    if args.db_url:
        settings = dataclasses.replace(settings, db_url=args.db_url)
    broker = Broker(settings)
    broker.start()
    try:
        engine = make_engine(settings.db_url)
        ids = [f"pd-{n:05d}" for n in range(args.devices)]

        started = time.perf_counter()
        with dynsec_session(settings) as session:
            for _ in ids:
                dynsec_call(settings, [{"command": "getClient", "username": "nobody-here"}], session=session)
        round_trips = time.perf_counter() - started

        started = time.perf_counter()
        for _ in ids:
            hash_password(new_password())
        hashing = time.perf_counter() - started

        configs, per_device = [], []
        started = time.perf_counter()
        last = started
        for config in provision_devices(settings, ids, engine=engine):
            now = time.perf_counter()
            per_device.append(now - last)
            last = now
            configs.append(config)
        total = time.perf_counter() - started

        sample = random.sample(configs, min(20, len(configs)))
        ok = sum(connects(settings, config) for config in sample)
        dynsec_size = broker.dynsec_path.stat().st_size
        print(json.dumps({"devices": len(configs), "db": settings.db_url.split(":")[0]}))
        print(
            f"provision {len(configs)} devices: {total:.1f} s total, "
            f"{total / len(configs) * 1000:.1f} ms each"
        )
        print(
            f"  per device: median {statistics.median(per_device) * 1000:.1f} ms, first 100 "
            f"{statistics.median(per_device[:100]) * 1000:.1f} ms, last 100 "
            f"{statistics.median(per_device[-100:]) * 1000:.1f} ms"
        )
        print(
            f"baseline: bare dynsec round trip x{len(ids)}: {round_trips:.1f} s "
            f"({round_trips / len(ids) * 1000:.1f} ms each)"
        )
        print(f"baseline: PBKDF2 hash x{len(ids)}: {hashing:.1f} s ({hashing / len(ids) * 1000:.1f} ms each)")
        print(f"provisioning / (round trip + hash): x{total / (round_trips + hashing):.1f}")
        print(
            f"dynamic-security file: {dynsec_size / 1024:.0f} KB; "
            f"{ok}/{len(sample)} sampled devices connected"
        )
        engine.dispose()
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
