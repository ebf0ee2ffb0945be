"""Benchmark: provisioning a fleet on the real broker (dynamic-security API) and database.

Prints, in one run:
- baseline: `--baseline` devices (default 100) one by one on a fresh broker (`provision_device` each:
  its own look-up message, its own create message, its own transaction), as provisioning was done
  before batches;
- the batched path (`provision_many`: `--batch` devices to a control message and to a transaction) for
  `--devices` (default 1,000) on another fresh broker: total, per device, and per batch as the fleet
  grows; the ratio to the baseline over the same first devices;
- where the time goes: the database's hash now and PBKDF2 (100,000 rounds, the hash before), and, at
  the final fleet size, one device alone in a control message against `--batch` devices in one: equal
  costs per device mean the broker saves its file once per command, not once per message;
- a check: 20 provisioned devices, chosen at random, connect with their config;
- offline (`pendant device provision --offline`): the same `--devices` on a third fresh broker, stopped,
  written straight into its dynamic-security file (one save per batch), then the broker started and 20
  of them, chosen at random, connecting. `--mode offline` runs only this part (10,000 devices through
  the running broker take many minutes).

Run: .venv/bin/python benchmarks/provision_fleet.py [--devices 1000] [--baseline 100] [--batch 50]
     [--offline-batch 500] [--mode both|online|offline] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend.accounts import (
    dynsec_call,
    dynsec_session,
    hash_password,
    provision_device,
    provision_many,
    revoke_device,
)
from pendant_backend.broker import Broker, new_password
from pendant_backend.db import make_engine
from pendant_backend.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402


def connects(settings: Settings, config: dict[str, Any]) -> bool:
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


@contextmanager
def fresh_broker(db_url: str | None) -> Iterator[tuple[Settings, Broker]]:
    """A broker and a database of their own in a temporary data folder, removed afterwards."""
    data = Path(tempfile.mkdtemp(prefix="pendant-bench-"))
    os.chmod(data, 0o711)
    settings = Settings.for_data_dir(data, mqtt_port=free_port(), mqtt_tls_port=free_port())
    if db_url:
        settings = dataclasses.replace(settings, db_url=db_url)
    broker = Broker(settings)
    broker.start()
    try:
        yield settings, broker
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


def ms(seconds: float, count: int) -> str:
    return f"{seconds / count * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=100, help="devices provisioned one by one")
    parser.add_argument("--batch", type=int, default=50, help="devices to a control message")
    parser.add_argument(
        "--offline-batch", type=int, default=500, help="devices to a save of the file, offline"
    )
    parser.add_argument(
        "--db-url",
        help="default: SQLite in each temporary data folder (PostgreSQL: drop "
        "its tables between runs yourself)",
    )
    parser.add_argument(
        "--mode",
        choices=("both", "online", "offline"),
        default="both",
        help="online: baseline and batches through the running broker; offline: with the broker stopped",
    )
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "devices": args.devices,
                "baseline": args.baseline,
                "batch": args.batch,
                "db": (args.db_url or "sqlite").split(":")[0],
                "mode": args.mode,
            }
        )
    )
    if args.mode != "offline":
        online(args)
    if args.mode != "online":
        offline(args)


def offline(args: argparse.Namespace) -> None:
    """Provision `--devices` with the broker stopped, then start it and check a sample connects."""
    with fresh_broker(args.db_url) as (settings, broker):
        broker.stop()
        engine = make_engine(settings.db_url)
        ids = [f"pd-{n:05d}" for n in range(args.devices)]
        configs: list[dict[str, Any]] = []
        started = time.perf_counter()
        for batch in provision_many(
            settings, ids, engine=engine, batch_size=args.offline_batch, offline=True
        ):
            configs.extend(r.config for r in batch if r.config is not None)
        total = time.perf_counter() - started
        engine.dispose()
        started = time.perf_counter()
        broker.start()
        start_s = time.perf_counter() - started
        sample = random.sample(configs, min(20, len(configs)))
        ok = sum(connects(settings, config) for config in sample)
        print(
            f"offline, broker stopped, {args.offline_batch} to a save: {len(configs)} devices in "
            f"{total:.1f} s, {ms(total, len(configs))} each; the broker then started in {start_s:.1f} s "
            f"with a {broker.dynsec_path.stat().st_size / 1e6:.1f} MB file; {ok}/{len(sample)} sampled "
            "devices connected"
        )


def online(args: argparse.Namespace) -> None:
    """The baseline one by one, then batches through the running broker."""
    with fresh_broker(args.db_url) as (settings, _):
        engine = make_engine(settings.db_url)
        started = time.perf_counter()
        for n in range(args.baseline):
            provision_device(settings, f"pd-{n:05d}", engine=engine)
        one_by_one = time.perf_counter() - started
        engine.dispose()
    print(
        f"baseline, one by one: {args.baseline} devices in {one_by_one:.1f} s, "
        f"{ms(one_by_one, args.baseline)} each"
    )

    with fresh_broker(args.db_url) as (settings, broker):
        engine = make_engine(settings.db_url)
        ids = [f"pd-{n:05d}" for n in range(args.devices)]
        configs: list[dict[str, Any]] = []
        per_batch: list[tuple[int, float]] = []  # (fleet size after it, seconds per device)
        started = last = time.perf_counter()
        at_baseline = None
        for batch in provision_many(settings, ids, engine=engine, batch_size=args.batch):
            now = time.perf_counter()
            per_batch.append((len(configs) + len(batch), (now - last) / len(batch)))
            last = now
            configs.extend(r.config for r in batch if r.config is not None)
            if at_baseline is None and len(configs) >= args.baseline:
                at_baseline = (now - started) / len(configs)
        total = time.perf_counter() - started
        print(
            f"batched, {args.batch} to a message: {len(configs)} devices in {total:.1f} s, "
            f"{ms(total, len(configs))} each"
        )
        for fleet, seconds in per_batch[:: max(1, len(per_batch) // 10)] + per_batch[-1:]:
            print(f"  batch ending at {fleet:>6} devices: {seconds * 1000:.1f} ms a device")
        if at_baseline is not None:
            print(
                f"first {args.baseline} devices: one by one {ms(one_by_one, args.baseline)} each, batched "
                f"{at_baseline * 1000:.1f} ms each: x{one_by_one / args.baseline / at_baseline:.1f}"
            )

        # At the final fleet size: one device alone in a message against a batch in one.
        extra = [f"px-{n:05d}" for n in range(args.batch + 1)]
        started = time.perf_counter()
        list(provision_many(settings, extra[:1], engine=engine))
        alone = time.perf_counter() - started
        started = time.perf_counter()
        list(provision_many(settings, extra[1:], engine=engine, batch_size=args.batch))
        together = time.perf_counter() - started
        print(
            f"at {len(configs)} devices: 1 device alone in a message {alone * 1000:.0f} ms; {args.batch} in "
            f"one message {ms(together, args.batch)} each (equal: the broker saves once per command)"
        )
        for device_id in extra:
            revoke_device(settings, device_id, engine=engine)

        started = time.perf_counter()
        with dynsec_session(settings) as session:
            for _ in range(100):
                dynsec_call(settings, [{"command": "getClient", "username": "nobody-here"}], session=session)
        round_trip = (time.perf_counter() - started) / 100
        passwords = [new_password() for _ in range(200)]
        started = time.perf_counter()
        for password in passwords:
            hash_password(password)
        fast = (time.perf_counter() - started) / len(passwords)
        started = time.perf_counter()
        for password in passwords[:20]:
            hashlib.pbkdf2_hmac("sha256", password.encode(), os.urandom(16), 100_000)
        slow = (time.perf_counter() - started) / 20
        print(
            f"bare control round trip {round_trip * 1000:.1f} ms; database hash now {fast * 1e6:.0f} us, "
            f"PBKDF2 x100,000 before {slow * 1000:.1f} ms"
        )

        sample = random.sample(configs, min(20, len(configs)))
        ok = sum(connects(settings, config) for config in sample)
        print(
            f"dynamic-security file: {broker.dynsec_path.stat().st_size / 1e6:.1f} MB; "
            f"{ok}/{len(sample)} sampled devices connected"
        )
        print(
            f"median per device over all batches: {statistics.median(s for _, s in per_batch) * 1000:.1f} ms"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
