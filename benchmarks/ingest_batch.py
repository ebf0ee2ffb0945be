"""Benchmark: batched ingest with alarms first, on the real broker and database.

20 simulated pendants (one paho client and account each) send heartbeats as fast as the broker takes
them while a 21st raises an alarm every 200 ms. Run once with the ingest batch size 1 (one heartbeat
per transaction: the path before issue 11) and once with the default batch, on fresh brokers and
databases. Prints, per run: heartbeats persisted per second (from the first to the last row), and
alarm publish -> `alarm/ack` latency p50/p99/max during the flood; then the ratios.

Run: .venv/bin/python benchmarks/ingest_batch.py [--beats 6000] [--batch 100] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from sqlalchemy import func
from sqlmodel import Session, select

from pendant_backend.accounts import provision_devices
from pendant_backend.broker import Broker
from pendant_backend.db import make_engine
from pendant_backend.models import Heartbeat
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "protocol-examples"
SENDERS = 20


def pendant(settings: Settings, config: dict) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config["device_id"])
    client.username_pw_set(config["mqtt"]["user"], config["mqtt"]["password"])
    client.max_inflight_messages_set(100)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    return client


def run(batch_size: int, beats: int, db_url: str | None) -> tuple[float, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="pendant-bench-"))
    os.chmod(folder, 0o711)
    settings = Settings.for_data_dir(folder, mqtt_port=free_port(), mqtt_tls_port=free_port())
    settings = dataclasses.replace(settings, db_url=db_url or f"sqlite:///{folder / 'pendant.db'}")
    broker = Broker(settings)
    broker.start()
    engine = make_engine(settings.db_url)
    try:
        configs = list(provision_devices(settings, [f"pd-{n:04d}" for n in range(SENDERS + 1)]))
        senders, alarmer = [pendant(settings, c) for c in configs[:SENDERS]], configs[SENDERS]
        acks: dict[str, float] = {}
        alarm_client = pendant(settings, alarmer)
        alarm_client.on_message = lambda c, u, m: acks.setdefault(
            json.loads(m.payload)["alarm_id"], time.monotonic()
        )
        alarm_client.subscribe(f"pendant/v1/{alarmer['device_id']}/alarm/ack", qos=1)
        tele, alarm = (json.loads((EXAMPLES / n).read_bytes()) for n in ("tele.json", "alarm.json"))
        with BackendService(settings, batch_size=batch_size) as backend:
            assert backend.wait_ready(20), "the backend did not subscribe"
            stop, sent_at = threading.Event(), {}

            def raise_alarms() -> None:
                n = 0
                while not stop.wait(0.2):
                    n += 1
                    alarm_id = f"1-{n}"
                    sent_at[alarm_id] = time.monotonic()
                    payload = json.dumps({**alarm, "alarm_id": alarm_id}).encode()
                    alarm_client.publish(f"pendant/v1/{alarmer['device_id']}/alarm", payload, qos=1)

            alarms = threading.Thread(target=raise_alarms)
            alarms.start()
            per_sender = beats // SENDERS
            for up in range(per_sender):
                for client, config in zip(senders, configs, strict=False):
                    body = json.dumps({**tele, "up": up}).encode()
                    client.publish(f"pendant/v1/{config['device_id']}/tele", body, qos=1)
            total = per_sender * SENDERS
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                with Session(engine) as session:
                    stored = session.exec(select(func.count()).select_from(Heartbeat)).one()
                    first, last = session.exec(
                        select(func.min(Heartbeat.received_at), func.max(Heartbeat.received_at))
                    ).one()
                if stored >= total:
                    break
                time.sleep(0.2)
            stop.set()
            alarms.join()
            time.sleep(1)  # the last alarms' acks
        rate = total / max((last - first).total_seconds(), 1e-3)
        latencies = [(acks[a] - t) * 1000 for a, t in sent_at.items() if a in acks]
        for client in [*senders, alarm_client]:
            client.disconnect()
            client.loop_stop()
        return rate, latencies
    finally:
        engine.dispose()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "no alarm acked"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    median = statistics.median(ordered)
    return f"p50 {median:.0f} ms, p99 {p99:.0f} ms, max {ordered[-1]:.0f} ms, n={len(ordered)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beats", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db-url", default=None)
    args = parser.parse_args()
    before_rate, before_alarms = run(1, args.beats, args.db_url)
    print(f"batch size 1:   {before_rate:7.0f} heartbeats/s stored; alarms: {describe(before_alarms)}")
    after_rate, after_alarms = run(args.batch, args.beats, args.db_url)
    print(f"batch size {args.batch}: {after_rate:7.0f} heartbeats/s stored; alarms: {describe(after_alarms)}")
    print(f"ratio: {after_rate / before_rate:.1f}x heartbeats per second")


if __name__ == "__main__":
    main()
