"""Benchmark: one machine's broker and backend under a fleet of N pendants, at several N.

N simulated pendants are lightweight asyncio MQTT clients (gmqtt), spread over a few worker processes;
each has its own account, made by the project's provisioning (`accounts.provision_many`, offline, with
the broker stopped), and speaks the protocol of docs/protocol.md: MQTT 3.1.1, client id = user = device
id, clean_session 0, the will and the birth on `status`, subscriptions to `alarm/ack`, `config` and
`cmd`, heartbeats on `tele` at an accelerated interval (each one names a new uptime, as a real one does).
They connect to the loopback plain listener (the one the bench may use), or with `--tls` to the TLS
listener, verifying the project CA. The benchmark starts the project's broker (`pendant broker run`'s
code: pendant_backend.broker) and backend (BackendService, what `pendant backend run` runs) itself, in
processes of their own.


For each N it runs, on a fresh broker (its persistence file removed, so no session queues anything
for an absent backend):

1. baseline: the same heartbeat load to one plain subscriber (paho, QoS 1) with no backend: the
   broker's raw rate;
2. the backend starts and the pendants reconnect (their births are stored); the backend republishes
   every config to the new broker (the time until it has is printed); every pendant sends its first
   heartbeat since its boot (each one a battery "unknown" -> state change), and the benchmark waits
   until the backend is idle: the phases below measure a fleet that is running, not its start;
3. the fleet's own pace: N heartbeats per 180 s (sped up `--pace` times) while 10 pendants raise alarms
   (the real payload, resent until `alarm/ack` as the firmware does, on an accelerated backoff): what
   an alarm waits on a fleet that is not saturated;
4. saturation: the baseline's load again with the same alarms and, halfway, a burst of junk on device
   topics (not JSON, oversized, wrong types, the rejected examples of docs/protocol-examples/invalid/,
   and accounts the database does not know).

It prints: heartbeats persisted per second (rows counted in the database) against the broker's raw rate,
alarm publish -> `alarm/ack` p50/p99/max in both phases, the CPU and RSS of the backend, the broker
and the clients, the fleet summary's time (monitor.fleet_summary, during the load), the backend's CPU
per persisted message, the rejection counts per reason as the backend kept them, and whether every
valid alarm was stored and acked; then the issue's targets beside the figures. The saturating load is
offered at `--rate` messages per second whatever N is, above what the backend stores.

Provisioning is slow (about 64 ms per device before issue 11); `--data DIR` keeps the data folder (the
broker's accounts, the database, the pendants' passwords in a 0600 file) for the next run, which
provisions only what is missing (the passwords are kept in <data>/secrets, 0600). Never point it at a
real deployment's folder.

Run: .venv/bin/python benchmarks/fleet_scale.py [--sizes 1000,5000,10000] [--db sqlite|postgres]
     [--duration 20] [--rate 8000] [--pace 1] [--workers 2] [--ingest-workers 1] [--tls]
     [--data DIR] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import glob
import json
import logging
import multiprocessing
import os
import random
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from pendant_backend import alarms, monitor, pki
from pendant_backend.accounts import dynsec_call, dynsec_session, provision_many
from pendant_backend.broker import Broker, device_role_acls, device_role_name, load_secrets, new_password
from pendant_backend.db import make_engine
from pendant_backend.settings import Settings, read_private_json, write_private_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INVALID_EXAMPLES = REPO / "docs" / "protocol-examples" / "invalid"
PREFIX = "fs-"
ALARM_RAISERS = 10
GHOSTS = 3  # broker accounts with no device in the database
RAW_USER = "bench_raw"
OPERATOR = "fleet_scale benchmark"
FW = "0.1.0"
HEARTBEAT_S = 180  # the uptime a heartbeat stands for: each one is a new (boot, up)
ACK_WAIT_S = 2.0  # the firmware's ack_timeout_s (30 s) shortened, doubling up to ACK_WAIT_MAX_S
ACK_WAIT_MAX_S = 30.0
# The backend counts as idle (its start-up work done) below this share of a core for this many seconds.
IDLE_CPU_PCT, IDLE_SECONDS = 20.0, 5
# The heartbeat interval of a pendant in the field (docs/protocol.md), which --pace speeds up.
HEARTBEAT_S = 180.0
CONNECT_AT_ONCE = 100
TICKS = os.sysconf("SC_CLK_TCK")

# The targets (issue 11), checked at the largest N of the run.
TARGET_ALARM_P99_MS = 100.0
TARGET_PERSISTED_SQLITE = 5000.0
TARGET_RAW_SHARE = 0.70
TARGET_SUMMARY_MS = 200.0
TARGET_COST_GROWTH = 1.25  # "flat": the cost per message at the largest N within 25 % of the smallest


# ---- the processes' figures (/proc) -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_idle(pid: int, since: float, *, limit: float) -> float | None:
    """Wait until the process has used under IDLE_CPU_PCT of a core for IDLE_SECONDS in a row; the
    seconds from `since` until then, or None if it was still busy after `limit` seconds."""
    quiet = 0
    while time.monotonic() - since < limit:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        quiet = quiet + 1 if (cpu_seconds(pid) - before) * 100 < IDLE_CPU_PCT else 0
        if quiet >= IDLE_SECONDS:
            return time.monotonic() - since
    return None


def wait_for(done: Any, since: float, *, limit: float) -> float | None:
    """Poll `done()` twice a second; the seconds from `since` until it was true, or None after `limit`."""
    while time.monotonic() - since < limit:
        if done():
            return time.monotonic() - since
        time.sleep(0.5)
    return None


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) of a process in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def raise_open_files(needed: int) -> int:
    """Raise this process's open-files limit (children inherit it: Mosquitto, the workers) to at least
    `needed`; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            raise SystemExit(
                f"{needed} open files are needed but the hard limit is {hard}: raise it (ulimit -Hn, or "
                "run as root) or run smaller sizes"
            ) from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, min(hard, needed * 2)), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- the messages -------------------------------------------------------------------------------------


def topic(device_id: str, leaf: str) -> str:
    return f"pendant/v1/{device_id}/{leaf}"


def status_payload(online: bool, boot: int, sess: int) -> bytes:
    if online:
        return b'{"online":true,"boot":%d,"sess":%d,"fw":"%s"}' % (boot, sess, FW.encode())
    return b'{"online":false,"boot":%d,"sess":%d}' % (boot, sess)


def tele_payload(boot: int, up: int, cfg: int = 0) -> bytes:
    return (
        b'{"tst":%d,"boot":%d,"up":%d,"batt":87,"mv":3987,"chg":false,"rssi":-71,"reg":"home","rat":"LTE",'
        b'"loc":{"lat":52.373101,"lon":4.892203,"acc":8,"tst":%d,"src":"gnss"},"fw":"%s","cfg":%d,"out":0,'
        b'"heap":41216}' % (int(time.time()), boot, up, int(time.time()) - 60, FW.encode(), cfg)
    )


def alarm_payload(alarm_id: str) -> bytes:
    return (
        b'{"alarm_id":"%s","kind":"panic","tst":%d,"loc":{"lat":52.373101,"lon":4.892203,"acc":8,"tst":%d,'
        b'"src":"gnss"},"cell":null,"batt":87,"test":false}'
        % (alarm_id.encode(), int(time.time()), int(time.time()) - 30)
    )


def junk_kinds() -> list[tuple[str, str, bytes]]:
    """(name, topic leaf, payload) of every kind of junk in the burst: broken JSON, oversized, wrong types,
    and the alarms of docs/protocol-examples/invalid/ (rejected whole: no usable alarm_id)."""
    kinds = [
        ("tele not JSON", "tele", b'{"tst":1764403380,"boot":'),
        ("tele oversized", "tele", b'{"pad":"' + b"x" * 3000 + b'"}'),
        ("tele wrong type", "tele", tele_payload(1, 1).replace(b'"batt":87', b'"batt":"high"')),
        ("status not an object", "status", b"[true,1,2]"),
        ("evt not UTF-8", "evt", b'{"evt":"\xff\xfe"}'),
        ("alarm oversized", "alarm", alarm_payload("1-1")[:-1] + b',"pad":"' + b"y" * 3000 + b'"}'),
    ]
    for path in sorted(INVALID_EXAMPLES.glob("alarm-*.json")):
        kinds.append((f"alarm {path.stem}", "alarm", path.read_bytes().strip()))
    return kinds


# ---- the pendants (in the worker processes) -----------------------------------------------------------


@dataclasses.dataclass
class AlarmRecord:
    device_id: str
    alarm_id: str
    payload: bytes  # every resend is this same message, as the firmware's outbox keeps it
    sent: float
    acked: float | None = None
    sends: int = 1
    next_send: float = 0.0
    wait: float = ACK_WAIT_S


class SimulatedPendant:
    """One pendant's MQTT session, as the firmware holds it (connect.py): will, clean_session 0, the
    three subscriptions, the birth; heartbeats and alarms on demand."""

    def __init__(self, device_id: str, password: str, boot: int, on_ack: Any) -> None:
        import gmqtt

        self.device_id, self.password, self.boot = device_id, password, boot
        self.up = 0
        # The revision of the config in force: the retained config's `rev`, as the firmware applies it.
        self.cfg = 0
        self.sess = int(time.time())
        self.client: Any = None
        self._gmqtt = gmqtt
        self._on_ack = on_ack
        self.acks = 0

    async def connect(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        gmqtt = self._gmqtt
        self.sess += 1
        will = gmqtt.Message(
            topic(self.device_id, "status"), status_payload(False, self.boot, self.sess), qos=1
        )
        client = gmqtt.Client(self.device_id, clean_session=False, will_message=will)
        client.set_auth_credentials(self.device_id, self.password)
        client.on_message = self._message
        await client.connect(host, port, ssl=tls or False, keepalive=60, version=gmqtt.constants.MQTTv311)
        client.subscribe(
            [
                gmqtt.Subscription(topic(self.device_id, leaf), qos=1)
                for leaf in ("alarm/ack", "config", "cmd")
            ]
        )
        client.publish(topic(self.device_id, "status"), status_payload(True, self.boot, self.sess), qos=1)
        self.client = client

    def _message(self, client: Any, name: str, payload: bytes, qos: int, properties: Any) -> int:
        if name.endswith("/config"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.cfg = max(self.cfg, int(json.loads(payload)["rev"]))
        elif name.endswith("/alarm/ack"):
            self.acks += 1
            # A malformed ack is counted all the same: it is the backend's bug, not the pendant's.
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._on_ack(self.device_id, json.loads(payload)["alarm_id"], time.monotonic())
        return 0

    def publish(self, leaf: str, payload: bytes) -> bool:
        if self.client is None or not self.client.is_connected:
            return False
        self.client.publish(topic(self.device_id, leaf), payload, qos=1)
        return True

    def heartbeat(self) -> bool:
        self.up += HEARTBEAT_S
        return self.publish("tele", tele_payload(self.boot, self.up, self.cfg))

    async def disconnect(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            # A connection that drops on the way is what we wanted anyway.
            with contextlib.suppress(TimeoutError, OSError, RuntimeError):
                await asyncio.wait_for(client.disconnect(), 5)


class WorkerFleet:
    """The pendants of one worker process, driven by commands from the benchmark over a pipe."""

    def __init__(self, accounts: list[dict[str, Any]], options: dict[str, Any]) -> None:
        self.options = options
        self.alarms: dict[tuple[str, str], AlarmRecord] = {}
        boot = options["boot"]
        self.pendants = [
            SimulatedPendant(a["device_id"], a["password"], boot, self._acked)
            for a in accounts
            if not a.get("ghost")
        ]
        self.ghosts = [
            SimulatedPendant(a["device_id"], a["password"], boot, self._acked)
            for a in accounts
            if a.get("ghost")
        ]
        self.raisers = [p for p, a in zip(self.pendants, accounts, strict=False) if a.get("raiser")]
        # The raisers are latency probes and send no heartbeats: with an alarm a second each, their open
        # alarms would take a trail point from every heartbeat with a fix, dozens a heartbeat by the end of
        # a phase, a load that depends on how long the phase ran and that no field sees.
        self.beaters = [p for p in self.pendants if p not in self.raisers]
        self.heartbeats = 0
        # Each raiser's alarm counter, across the phases: every phase's alarms are new alarms.
        self._seq = {p.device_id: 0 for p in self.raisers}
        self._load: asyncio.Task[None] | None = None
        self._raising: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def _acked(self, device_id: str, alarm_id: str, at: float) -> None:
        record = self.alarms.get((device_id, alarm_id))
        if record is not None and record.acked is None:
            record.acked = at

    async def connect(self) -> dict[str, Any]:
        tls = None
        if self.options["tls"]:
            tls = ssl.create_default_context(cafile=self.options["ca"])
        host, port = self.options["host"], self.options["port"]
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)
        failures: list[str] = []

        async def one(pendant: SimulatedPendant) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(pendant.connect(host, port, tls), 60)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                    failures.append(f"{pendant.device_id}: {type(exc).__name__}: {exc}")

        started = time.monotonic()
        await asyncio.gather(*(one(p) for p in self.pendants + self.ghosts))
        return {"seconds": time.monotonic() - started, "failed": len(failures), "failures": failures[:5]}

    async def disconnect(self) -> dict[str, Any]:
        await asyncio.gather(*(p.disconnect() for p in self.pendants + self.ghosts))
        return {}

    def start(self, rate: float, alarms: bool, alarm_every: float) -> dict[str, Any]:
        self._stop.clear()
        self.heartbeats = 0
        self._load = asyncio.ensure_future(self._heartbeats(rate))
        if alarms and self.raisers:
            self._raising = asyncio.ensure_future(self._raise_alarms(alarm_every))
        return {}

    async def beat_all(self, rate: float) -> dict[str, Any]:
        """One heartbeat from every pendant but the raisers, `rate` a second in all: the fleet's first
        interval after the births, each heartbeat a pendant's first reading since its boot."""
        sent, started = 0, time.monotonic()
        for pendant in self.beaters:
            while sent >= rate * (time.monotonic() - started):
                await asyncio.sleep(0.01)
            if pendant.heartbeat():
                sent += 1
        return {"heartbeats": sent}

    async def _heartbeats(self, rate: float) -> None:
        """Offer `rate` heartbeats a second in all, round robin over the pendants but the raisers, in 10 ms
        ticks."""
        beaters = self.beaters
        if not beaters or rate <= 0:
            return
        started, turn = time.monotonic(), random.randrange(len(beaters))
        while not self._stop.is_set():
            due = int(rate * (time.monotonic() - started)) - self.heartbeats
            for _ in range(min(due, max(1, int(rate / 20)))):
                turn = (turn + 1) % len(beaters)
                if beaters[turn].heartbeat():
                    self.heartbeats += 1
            await asyncio.sleep(0.01)

    async def _raise_alarms(self, every: float) -> None:
        """Each raiser raises a new alarm every `every` seconds (staggered); every alarm without its ack is
        sent again after ACK_WAIT_S, then after twice the wait before (firmware/pendant/alarm.py)."""
        seq = self._seq
        nxt = {
            p.device_id: time.monotonic() + every * i / len(self.raisers) for i, p in enumerate(self.raisers)
        }
        while not self._stop.is_set():
            now = time.monotonic()
            for pendant in self.raisers:
                if now >= nxt[pendant.device_id]:
                    nxt[pendant.device_id] = now + every
                    seq[pendant.device_id] += 1
                    alarm_id = f"{pendant.boot}-{seq[pendant.device_id]}"
                    record = AlarmRecord(
                        pendant.device_id, alarm_id, alarm_payload(alarm_id), time.monotonic()
                    )
                    record.next_send = record.sent + record.wait
                    self.alarms[(pendant.device_id, alarm_id)] = record
                    pendant.publish("alarm", record.payload)
            self._resend(now)
            await asyncio.sleep(0.005)

    def _resend(self, now: float) -> None:
        by_id = {p.device_id: p for p in self.raisers}
        for record in self.alarms.values():
            if record.acked is None and now >= record.next_send:
                if by_id[record.device_id].publish("alarm", record.payload):
                    record.sends += 1
                record.wait = min(record.wait * 2, ACK_WAIT_MAX_S)
                record.next_send = now + record.wait

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        # Cancelled as well: a loop asleep now would otherwise wake after the next start() has cleared
        # the event and go on beside the new one (a phase raised twice the alarms it should).
        for task in (self._load, self._raising):
            if task is not None:
                task.cancel()
        self._load = self._raising = None
        return {"heartbeats": self.heartbeats}

    async def wait_acks(self, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while any(r.acked is None for r in self.alarms.values()) and time.monotonic() < deadline:
            self._resend(time.monotonic())
            await asyncio.sleep(0.05)
        fields = ("device_id", "alarm_id", "sent", "acked", "sends")
        phase, self.alarms = self.alarms, {}
        return {"alarms": [{f: getattr(r, f) for f in fields} for r in phase.values()]}

    def junk(self, copies: int) -> dict[str, Any]:
        """The burst: every kind of junk `copies` times, from the raisers first (on their alarm topic,
        between valid alarms), then other pendants; and valid messages from the unknown accounts."""
        sent: dict[str, int] = {}
        senders = self.raisers + [p for p in self.pendants if p not in self.raisers]
        if senders:
            turn = 0
            for _ in range(copies):
                for name, leaf, payload in junk_kinds():
                    if senders[turn % len(senders)].publish(leaf, payload):
                        sent[name] = sent.get(name, 0) + 1
                    turn += 1
        for ghost in self.ghosts:
            ghost.up += HEARTBEAT_S
            if ghost.publish("tele", tele_payload(ghost.boot, ghost.up, ghost.cfg)):
                sent["unknown device tele"] = sent.get("unknown device tele", 0) + 1
        return {"sent": sent}


def worker_main(conn: Connection, accounts: list[dict[str, Any]], options: dict[str, Any]) -> None:
    """A worker process: its share of the pendants, one asyncio loop, commands from `conn`."""
    # Refusals and drops are counted and reported; gmqtt's own lines would only repeat them.
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(_serve_worker(conn, accounts, options))


async def _serve_worker(conn: Connection, accounts: list[dict[str, Any]], options: dict[str, Any]) -> None:
    fleet = WorkerFleet(accounts, options)
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            await fleet.disconnect()
            conn.send({})
            return
        if command == "connect":
            result = await fleet.connect()
        elif command == "disconnect":
            result = await fleet.disconnect()
        elif command == "start":
            result = fleet.start(**args)
        elif command == "beat_all":
            result = await fleet.beat_all(**args)
        elif command == "junk":
            result = fleet.junk(**args)
        elif command == "stop":
            result = fleet.stop()
        elif command == "acks":
            result = await fleet.wait_acks(**args)
        else:
            raise ValueError(f"unknown command {command!r}")
        conn.send(result)


class Workers:
    """The worker processes, told the same command together."""

    def __init__(self, accounts: list[dict[str, Any]], count: int, options: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes = []
        for index in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(theirs, accounts[index::count], options), name=f"pendants-{index}"
            )
            process.start()
            self.conns.append(mine)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def call(self, command: str, timeout: float = 600.0, **args: Any) -> list[dict[str, Any]]:
        for conn in self.conns:
            conn.send((command, args))
        results = []
        for conn, process in zip(self.conns, self.processes, strict=True):
            if not conn.poll(timeout):
                raise RuntimeError(
                    f"the worker {process.name} did not answer {command!r} within {timeout:.0f} s"
                )
            results.append(conn.recv())
        return results

    def close(self) -> None:
        for conn, process in zip(self.conns, self.processes, strict=True):
            if process.is_alive():
                try:
                    conn.send(("exit", {}))
                    conn.poll(30)
                except (OSError, EOFError):
                    pass
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


# ---- the plain subscriber (the baseline) and the backend, each in a process of its own ----------------


def raw_subscriber_main(conn: Connection, host: str, port: int, password: str) -> None:
    """One plain MQTT 5 subscriber to every pendant's `tele` at QoS 1 (paho, as the backend's link);
    answers each request with (messages so far, monotonic time)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    received = [0]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=RAW_USER, protocol=paho.MQTTv5)
    client.username_pw_set(RAW_USER, password)
    client.max_inflight_messages_set(100)

    def on_message(c: Any, u: Any, message: Any) -> None:
        received[0] += 1

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, properties: Any) -> None:
        c.subscribe("pendant/v1/+/tele", qos=1)

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, codes, p: conn.send(("subscribed", [str(x) for x in codes]))
    client.connect(host, port, clean_start=True)
    client.loop_start()
    try:
        while conn.recv() != "exit":
            conn.send((received[0], time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()


def backend_main(conn: Connection, settings: Settings, log_path: str, worker: str) -> None:
    """The backend, as `pendant backend run` runs it (or, for a worker other than "main", as
    `pendant backend run --ingest-only --worker NAME` does), until told to stop; then it answers with
    the rejection counts it kept."""
    from pendant_backend.service import BackendService

    logging.basicConfig(
        filename=log_path, level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s"
    )
    service = BackendService(settings, ingest_only=worker != "main", worker=worker)
    service.start()
    conn.send(("ready", service.wait_ready(120)))
    conn.recv()
    ingest = service.ingest
    counts = dict(getattr(ingest, "invalid_counts", {}) or {})
    service.stop()
    conn.send(("counts", counts))


class Backends:
    """The backend's processes: the main one (alarms, rules, its share of the rest) and `count - 1`
    ingest-only workers on the same shared subscription, each started once the one before is ready."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.processes: list[ChildProcess] = []
        try:
            for index in range(count):
                worker = "main" if index == 0 else f"bench-{index + 1}"
                log_path = settings.data_dir / ("backend.log" if index == 0 else f"backend-{worker}.log")
                child = ChildProcess(backend_main, settings, str(log_path), worker, name=f"backend {worker}")
                self.processes.append(child)
                if child.ask(timeout=180) != ("ready", True):
                    raise RuntimeError(f"the backend {worker} did not connect; see {log_path}")
        except BaseException:
            self.kill()
            raise

    @property
    def main_pid(self) -> int:
        return self.processes[0].pid

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(child.pid) for child in self.processes)

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) of all of them together."""
        figures = [memory_mb(child.pid) for child in self.processes]
        return sum(f[0] for f in figures), sum(f[1] for f in figures)

    def stop(self) -> dict[str, int]:
        """Stop the workers, then the main one; the rejection counts of all of them."""
        counts: list[dict[str, int]] = []
        for child in reversed(self.processes):
            child.conn.send("stop")
            reply = child.ask(timeout=120)
            counts.append(reply[1] if reply[0] == "counts" else {})
            child.close()
        self.processes = []
        return merge_counts(counts)

    def kill(self) -> None:
        for child in reversed(self.processes):
            with contextlib.suppress(OSError):
                child.conn.send("stop")
            child.close(30)
        self.processes = []


class ChildProcess:
    """A spawned process and our end of its pipe."""

    def __init__(self, target: Any, *args: Any, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=target, args=(theirs, *args), name=name)
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def ask(self, message: Any = None, timeout: float = 120.0) -> Any:
        if message is not None:
            self.conn.send(message)
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.process.name} did not answer within {timeout:.0f} s")
        return self.conn.recv()

    def close(self, timeout: float = 60.0) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# ---- the data folder: database, broker accounts, the pendants' passwords ------------------------------


class Postgres:
    """A private PostgreSQL server (Debian's) in <data>/postgres on a free loopback port, as the tests
    start one (tests/conftest.py), but with fsync on, as production runs it."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl)")
        self.bindir = Path(found[-1]).parent
        self.root, self.data = root, root / "data"
        self.port = free_port()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True)

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        if not self.data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=50"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'pendant'").fetchone():
                c.execute("CREATE DATABASE pendant")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/pendant"

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


def fleet_accounts(settings: Settings, engine: Engine, count: int, path: Path) -> list[dict[str, Any]]:
    """`count` provisioned pendants (device id and password), provisioning those `path` lacks with
        the project's own code; `path` (0600, in the private secrets folder: writing it makes its folder
    0700, which the broker's user must not find on the data folder) keeps the passwords for the next run."""
    known: list[dict[str, Any]] = read_private_json(path)["pendants"] if path.exists() else []
    missing = [f"{PREFIX}{n:05d}" for n in range(len(known), count)]
    if missing:
        print(f"provisioning {len(missing)} pendants offline (pendant device provision --offline) ...")
        started = time.monotonic()
        for batch in provision_many(settings, missing, engine=engine, offline=True):
            known.extend(
                {"device_id": r.device_id, "password": r.config["mqtt"]["password"]}
                for r in batch
                if r.config is not None
            )
            write_private_json(path, {"pendants": known})
            done = len(known) - (count - len(missing))
            print(f"  {done}/{len(missing)} in {time.monotonic() - started:.0f} s", flush=True)
        elapsed = time.monotonic() - started
        print(f"provisioned {len(missing)} in {elapsed:.1f} s ({elapsed / len(missing) * 1000:.1f} ms each)")
    return known[:count]


def bench_accounts(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    """The baseline's subscriber account and the unknown-device accounts (broker accounts with a device
    role but no row in the database), with new passwords at every run: nothing of theirs is kept."""
    raw_password = new_password()
    ghosts = [
        {"device_id": f"fs-ghost-{n}", "password": new_password(), "ghost": True} for n in range(GHOSTS)
    ]
    commands: list[dict[str, Any]] = [
        {"command": "deleteClient", "username": RAW_USER},
        {"command": "deleteRole", "rolename": RAW_USER},
        {
            "command": "createRole",
            "rolename": RAW_USER,
            "acls": [
                {"acltype": "subscribeLiteral", "topic": "pendant/v1/+/tele", "allow": True},
                {"acltype": "publishClientReceive", "topic": "pendant/v1/+/tele", "allow": True},
            ],
        },
        {
            "command": "createClient",
            "username": RAW_USER,
            "password": raw_password,
            "roles": [{"rolename": RAW_USER}],
        },
    ]
    for ghost in ghosts:
        device_id, role = ghost["device_id"], device_role_name(ghost["device_id"])
        commands += [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": role},
            {"command": "createRole", "rolename": role, "acls": device_role_acls(device_id)},
            {
                "command": "createClient",
                "username": device_id,
                "password": ghost["password"],
                "clientid": device_id,
                "roles": [{"rolename": role}],
            },
        ]
    with dynsec_session(settings) as session:
        responses = dynsec_call(settings, commands, session=session)
    for command, response in zip(commands, responses, strict=True):
        if command["command"].startswith("create") and "error" in response:
            raise SystemExit(f"the broker refused {command['command']}: {response['error']}")
    return raw_password, ghosts


# ---- one size --------------------------------------------------------------------------------------


def count_rows(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


def heartbeat_mark(engine: Engine) -> int:
    return count_rows(engine, "SELECT coalesce(max(id), 0) FROM heartbeats")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else float("nan")


def close_bench_alarms(engine: Engine) -> int:
    """Acknowledge and resolve (as an operator would, with the project's code) every open alarm of the
    benchmark's pendants, so that alarms left open by one run are not escalated through the next."""
    opened = text("SELECT id, state FROM alarms WHERE state != 'resolved' AND device_id LIKE :prefix")
    with engine.connect() as connection:
        rows = list(connection.execute(opened, {"prefix": PREFIX + "%"}))
    for pk, state in rows:
        if state == "received":
            alarms.acknowledge_alarm(engine, ref=str(pk), operator=OPERATOR)
        alarms.resolve_alarm(engine, ref=str(pk), operator=OPERATOR, resolution="test", note="fleet_scale.py")
    return len(rows)


def fresh_broker(settings: Settings) -> Broker:
    """The broker, started without its persistence file: no session from before queues anything."""
    # The broker's user must pass through the data folder (the CA key's folder is private on its own).
    os.chmod(settings.data_dir, 0o711)
    broker = Broker(settings)
    (broker.persistence_dir / "mosquitto.db").unlink(missing_ok=True)
    broker.start(timeout=60)
    return broker


def run_size(
    n: int,
    settings: Settings,
    engine: Engine,
    accounts: list[dict[str, Any]],
    args: argparse.Namespace,
    boot: int,
) -> dict[str, Any]:
    """Baseline, then the backend, at N pendants; the figures of both as a dict."""
    result: dict[str, Any] = {"n": n}
    window = args.duration
    warmup = min(5.0, window / 4)
    broker = fresh_broker(settings)
    workers: Workers | None = None
    backend: Backends | None = None
    try:
        raw_password, ghosts = bench_accounts(settings)
        fleet = [dict(a) for a in accounts[:n]]
        for a in fleet[: raisers_of(n)]:
            a["raiser"] = True
        options = {
            "host": settings.mqtt_host if not args.tls else settings.mqtt_public_host,
            "port": settings.mqtt_port if not args.tls else settings.mqtt_tls_port,
            "tls": args.tls,
            "ca": str(pki.ca_file(settings)),
            "boot": boot,
        }
        workers = Workers(fleet + ghosts, min(args.workers, n), options)

        # 1. The baseline: one plain subscriber, no backend.
        raw = ChildProcess(
            raw_subscriber_main, settings.mqtt_host, settings.mqtt_port, raw_password, name="raw"
        )
        raw.ask(timeout=30)
        connected = workers.call("connect")
        result["connect_s"] = max(c["seconds"] for c in connected)
        result["connect_failed"] = sum(c["failed"] for c in connected)
        for c in connected:
            for failure in c["failures"]:
                print(f"  connect failed: {failure}")
        workers.call("start", rate=args.rate / len(workers.conns), alarms=False, alarm_every=args.alarm_every)
        time.sleep(warmup)
        (count0, t0), cpu0 = raw.ask("count"), sum(cpu_seconds(p) for p in workers.pids)
        time.sleep(window - warmup)
        (count1, t1), cpu1 = raw.ask("count"), sum(cpu_seconds(p) for p in workers.pids)
        offered = sum(s["heartbeats"] for s in workers.call("stop"))
        raw.conn.send("exit")
        raw.close()
        result["raw_per_s"] = (count1 - count0) / (t1 - t0)
        result["raw_offered_per_s"] = offered / window
        result["raw_clients_cpu_pct"] = (cpu1 - cpu0) / (t1 - t0) * 100
        workers.call("disconnect")

        # 2. The backend: births, then the same load with alarms and a junk burst.
        recovered_sql = "SELECT coalesce(max(seq), 0) FROM audit_events WHERE kind = 'broker_recovered'"
        recovered_mark = count_rows(engine, recovered_sql)
        backend = Backends(settings, args.ingest_workers)
        mark = heartbeat_mark(engine)
        started = time.monotonic()
        connected = workers.call("connect")
        result["connect_failed"] += sum(c["failed"] for c in connected)
        ids = [a["device_id"] for a in fleet]
        online_sql = "SELECT count(*) FROM devices WHERE online = :yes AND device_id IN :ids"
        births = None
        while time.monotonic() - started < args.settle:
            if count_rows_in(engine, online_sql, ids) >= n:
                births = time.monotonic() - started
                break
            time.sleep(0.5)
        result["births_stored_s"] = births
        # The broker is new: the backend republishes every config (recovery.CONFIGS_PER_S, paced so as
        # not to hold alarms up) and records it in the audit chain when the broker holds them all.
        result["configs_back_s"] = wait_for(
            lambda: count_rows(engine, recovered_sql) > recovered_mark, started, limit=args.settle
        )
        # The fleet's first interval: each pendant's first heartbeat since its boot moves its battery
        # from "unknown" to a state, a health event each. The phases measure a fleet that is running.
        beats_started = time.monotonic()
        first = sum(w["heartbeats"] for w in workers.call("beat_all", rate=args.rate / len(workers.conns)))
        since_mark = "SELECT count(*) FROM heartbeats WHERE id > :mark"
        wait_for(lambda: count_rows(engine, since_mark, mark=mark) >= first, beats_started, limit=args.settle)
        # Its start-up work (classifying every device, the births, the first heartbeats) must be over
        # before the fleet's pace is measured, or the phase measures that.
        result["first_beats_s"] = wait_idle(backend.main_pid, beats_started, limit=args.settle)
        result["backend_idle_s"] = time.monotonic() - started

        # 2a. The fleet's own pace: N heartbeats per interval (sped up by --pace), with the alarms.
        paced = n / HEARTBEAT_S * args.pace
        result["paced_offered_per_s"] = paced
        workers.call("start", rate=paced / len(workers.conns), alarms=True, alarm_every=args.alarm_every)
        p0 = time.monotonic(), backend.cpu_seconds()
        time.sleep(window)
        p1 = time.monotonic(), backend.cpu_seconds()
        first += sum(s["heartbeats"] for s in workers.call("stop"))
        result["paced_backend_cpu_pct"] = (p1[1] - p0[1]) / (p1[0] - p0[0]) * 100
        replies = workers.call("acks", timeout=args.ack_wait + 60, within=args.ack_wait)
        paced_alarms = [a for reply in replies for a in reply["alarms"]]
        result["paced"] = alarm_figures(engine, paced_alarms)

        # 2b. Saturation: the baseline's load, with the alarms and, halfway, the junk burst.
        workers.call("start", rate=args.rate / len(workers.conns), alarms=True, alarm_every=args.alarm_every)
        load_started = time.monotonic()
        time.sleep(warmup)
        b0 = heartbeat_mark(engine), time.monotonic(), backend.cpu_seconds(), cpu_seconds(broker.pid or 0)
        c0 = sum(cpu_seconds(p) for p in workers.pids)
        profiler = start_profile(args.profile, n, backend.main_pid, window - warmup)
        time.sleep(max(0.0, window / 2 - warmup))
        copies = -(-args.junk // len(workers.conns))  # the burst's copies, shared by the workers
        junk = [w["sent"] for w in workers.call("junk", copies=copies)]
        time.sleep(max(0.0, load_started + window * 0.75 - time.monotonic()))
        summary_ms = []
        for _ in range(3):
            before = time.perf_counter()
            monitor.fleet_summary(engine)
            summary_ms.append((time.perf_counter() - before) * 1000)
        time.sleep(max(0.0, load_started + window - time.monotonic()))
        b1 = heartbeat_mark(engine), time.monotonic(), backend.cpu_seconds(), cpu_seconds(broker.pid or 0)
        c1 = sum(cpu_seconds(p) for p in workers.pids)
        result["backend_rss_mb"], result["backend_peak_mb"] = backend.memory_mb()
        result["broker_rss_mb"] = memory_mb(broker.pid or 0)[0]
        sent = sum(s["heartbeats"] for s in workers.call("stop"))
        persisted_window = count_rows(
            engine, "SELECT count(*) FROM heartbeats WHERE id > :a AND id <= :b", a=b0[0], b=b1[0]
        )
        seconds = b1[1] - b0[1]
        result["persisted_per_s"] = persisted_window / seconds
        result["offered_per_s"] = sent / window
        result["backend_cpu_pct"] = (b1[2] - b0[2]) / seconds * 100
        result["broker_cpu_pct"] = (b1[3] - b0[3]) / seconds * 100
        result["clients_cpu_pct"] = (c1 - c0) / seconds * 100
        result["cost_us"] = (b1[2] - b0[2]) / persisted_window * 1e6 if persisted_window else None
        result["summary_ms"] = summary_ms
        if profiler is not None:
            profiler.wait(timeout=120)

        # 3. The alarms' acks, and the heartbeats the backend had not stored yet.
        replies = workers.call("acks", timeout=args.ack_wait + 60, within=args.ack_wait)
        raised = [a for reply in replies for a in reply["alarms"]]
        drained = time.monotonic()
        # Every heartbeat since the births: the first ones, the paced phase's and the saturation's.
        stored_all = count_rows(engine, since_mark, mark=mark)
        while stored_all < first + sent and time.monotonic() - drained < args.drain:
            time.sleep(1)
            stored_all = count_rows(engine, since_mark, mark=mark)
        result["backlog_left"] = max(0, first + sent - stored_all)
        result["drain_s"] = time.monotonic() - drained
        result["rejections"] = backend.stop()
        backend = None
        # Each pendant reports the retained config's revision in its heartbeats, as the firmware does.
        behind_sql = (
            "SELECT count(*) FROM devices WHERE config_applied_rev IS DISTINCT FROM config_rev "
            "AND device_id IN :ids"
        )
        beaters = [a["device_id"] for a in fleet if not a.get("raiser")]
        result["config_behind"] = count_rows_in(engine, behind_sql, beaters)
        close_bench_alarms(engine)
        result.update(alarm_figures(engine, raised))
        result["junk_sent"] = merge_counts(junk)
        return result
    finally:
        if backend is not None:
            backend.kill()
        if workers is not None:
            workers.close()
        broker.stop(timeout=60)


def start_profile(folder: Path | None, n: int, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy, sampling the backend's main process over the saturation window into <folder>/backend-N.txt
    (py-spy's raw format: one stack and its sample count per line), when asked."""
    if folder is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"backend-{n}.txt"
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "50"]
    command += ["--format", "raw", "--threads", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def raisers_of(n: int) -> int:
    """How many of N pendants raise alarms: ALARM_RAISERS, and at most half of a small fleet, so that
    the rest send the heartbeats."""
    return min(ALARM_RAISERS, max(1, n // 2))


def count_rows_in(engine: Engine, sql: str, ids: list[str]) -> int:
    """`sql` with `:ids` bound to a list, in chunks (SQLite allows only so many parameters)."""
    from sqlalchemy import bindparam

    total = 0
    statement = text(sql).bindparams(bindparam("ids", expanding=True))
    with engine.connect() as connection:
        for start in range(0, len(ids), 500):
            total += int(
                connection.execute(statement, {"yes": True, "ids": ids[start : start + 500]}).scalar_one()
            )
    return total


def merge_counts(parts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def alarm_figures(engine: Engine, alarms: list[dict[str, Any]]) -> dict[str, Any]:
    """Latencies from the first publish to the first ack, and which alarms the database holds."""
    from sqlalchemy import bindparam

    latencies = [(a["acked"] - a["sent"]) * 1000 for a in alarms if a["acked"] is not None]
    stored: set[tuple[str, str]] = set()
    devices = sorted({a["device_id"] for a in alarms})
    if devices:
        statement = text("SELECT device_id, alarm_id FROM alarms WHERE device_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        with engine.connect() as connection:
            stored = {(d, i) for d, i in connection.execute(statement, {"ids": devices})}
    return {
        "alarms": len(alarms),
        "alarms_acked": len(latencies),
        "alarms_stored": sum((a["device_id"], a["alarm_id"]) in stored for a in alarms),
        "alarm_resends": sum(a["sends"] - 1 for a in alarms),
        "alarm_p50_ms": statistics.median(latencies) if latencies else None,
        "alarm_p99_ms": percentile(latencies, 0.99) if latencies else None,
        "alarm_max_ms": max(latencies) if latencies else None,
    }


# ---- the report -------------------------------------------------------------------------------------


def show(value: float | None, form: str = "{:.0f}") -> str:
    return "-" if value is None else form.format(value)


def print_report(results: list[dict[str, Any]], db: str, args: argparse.Namespace) -> None:
    print()
    print(
        f"database {db}; {'TLS' if args.tls else 'loopback plain'} listener; heartbeats offered at "
        f"{args.rate:.0f}/s for {args.duration:.0f} s; {raisers_of(results[-1]['n'])} pendants raise an "
        f"alarm every {args.alarm_every:g} s; clients in {args.workers} worker processes; backend in "
        f"{args.ingest_workers} process(es); {os.cpu_count()} cores"
    )
    print(
        "      N  connect  births | raw/s  persisted/s  share | alarm p50   p99   max ms  acked/sent  stored"
        " | backend CPU%  RSS MB  us/msg | broker CPU%  RSS MB | clients CPU% | summary ms"
    )
    for r in results:
        share = r["persisted_per_s"] / r["raw_per_s"] if r["raw_per_s"] else 0.0
        print(
            f"{r['n']:7d}  {r['connect_s']:6.1f}s {show(r['births_stored_s'], '{:5.1f}s'):>7} |"
            f" {r['raw_per_s']:5.0f}  {r['persisted_per_s']:11.0f}  {share:5.0%} |"
            f" {show(r['alarm_p50_ms'], '{:9.1f}')} {show(r['alarm_p99_ms'], '{:5.1f}')}"
            f" {show(r['alarm_max_ms'], '{:6.0f}')}  {r['alarms_acked']:5d}/{r['alarms']:<5d}"
            f" {r['alarms_stored']:6d} |"
            f" {r['backend_cpu_pct']:12.0f} {r['backend_rss_mb']:7.0f} {show(r['cost_us'], '{:7.0f}')} |"
            f" {r['broker_cpu_pct']:11.0f} {r['broker_rss_mb']:7.0f} | {r['clients_cpu_pct']:12.0f} |"
            f" {max(r['summary_ms']):10.1f}"
        )
    print(
        f"at the fleet's own pace (N heartbeats per {HEARTBEAT_S:.0f} s, x{args.pace:g}), "
        "with the same alarms:"
    )
    print(
        "      N  configs back  first beats  idle after | offered/s | alarm p50   p99   max ms  acked/sent"
        "  stored | backend CPU%"
    )
    for r in results:
        a = r["paced"]
        print(
            f"{r['n']:7d}  {show(r['configs_back_s'], '{:11.1f}s'):>12}"
            f"  {show(r['first_beats_s'], '{:10.1f}s'):>11}"
            f"  {show(r['backend_idle_s'], '{:9.1f}s'):>10} | {r['paced_offered_per_s']:9.0f} |"
            f" {show(a['alarm_p50_ms'], '{:9.1f}')} {show(a['alarm_p99_ms'], '{:5.1f}')}"
            f" {show(a['alarm_max_ms'], '{:6.0f}')}  {a['alarms_acked']:5d}/{a['alarms']:<5d}"
            f" {a['alarms_stored']:6d} | {r['paced_backend_cpu_pct']:12.0f}"
        )
    for r in results:
        print(
            f"N={r['n']}: offered {r['offered_per_s']:.0f}/s with the backend "
            f"({r['raw_offered_per_s']:.0f}/s in the baseline); heartbeats not stored "
            f"{r['drain_s']:.0f} s after the load: {r['backlog_left']}; "
            f"alarm resends {r['alarm_resends']}; connect failures {r['connect_failed']}; "
            f"pendants (but the raisers) reporting an older config than the database's: {r['config_behind']}"
        )
        print(f"  junk sent: {json.dumps(r['junk_sent'], sort_keys=True)}")
        print(f"  rejections the backend counted: {json.dumps(r['rejections'], sort_keys=True)}")
        if r["backlog_left"]:
            print("  (junk behind the heartbeats it had not stored yet was not counted before it stopped)")
        valid = r["alarms"] + r["paced"]["alarms"]
        stored = r["alarms_stored"] + r["paced"]["alarms_stored"]
        acked = r["alarms_acked"] + r["paced"]["alarms_acked"]
        verdict = "yes" if stored == valid and acked == valid else "NO"
        print(
            f"  every valid alarm of both phases stored and acked: {verdict} "
            f"({stored} stored, {acked} acked of {valid})"
        )
    last, first = results[-1], results[0]
    print(f"targets at N={last['n']} (issue 11):")
    paced_p99 = last["paced"]["alarm_p99_ms"]
    targets = [
        (
            f"alarm p99 <= 100 ms at the fleet's pace (x{args.pace:g})",
            paced_p99 is not None and paced_p99 <= TARGET_ALARM_P99_MS,
            f"{show(paced_p99, '{:.1f}')} ms",
        ),
        (
            "alarm p99 <= 100 ms under saturation",
            last["alarm_p99_ms"] is not None and last["alarm_p99_ms"] <= TARGET_ALARM_P99_MS,
            f"{show(last['alarm_p99_ms'], '{:.1f}')} ms",
        ),
        (
            f"heartbeats persisted >= {raw_share_text()} of the broker's raw rate",
            last["raw_per_s"] > 0 and last["persisted_per_s"] >= TARGET_RAW_SHARE * last["raw_per_s"],
            f"{last['persisted_per_s']:.0f}/s of {last['raw_per_s']:.0f}/s",
        ),
        (
            "fleet summary <= 200 ms",
            max(last["summary_ms"]) <= TARGET_SUMMARY_MS,
            f"{max(last['summary_ms']):.1f} ms",
        ),
    ]
    if db == "sqlite":
        targets.insert(
            1,
            (
                "heartbeats persisted >= 5,000/s on SQLite",
                last["persisted_per_s"] >= TARGET_PERSISTED_SQLITE,
                f"{last['persisted_per_s']:.0f}/s",
            ),
        )
    if len(results) > 1 and first["cost_us"] and last["cost_us"]:
        growth = last["cost_us"] / first["cost_us"]
        targets.append(
            (
                f"cost per message flat from N={first['n']} (within 25 %)",
                growth <= TARGET_COST_GROWTH,
                f"{first['cost_us']:.0f} -> {last['cost_us']:.0f} us (x{growth:.2f})",
            )
        )
    for name, met, figure in targets:
        print(f"  {'met    ' if met else 'NOT MET'}  {name}: {figure}")


def raw_share_text() -> str:
    return f"{TARGET_RAW_SHARE:.0%}"


# ---- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="pendant counts, comma-separated")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per phase")
    parser.add_argument("--rate", type=float, default=8000.0, help="heartbeats offered per second, in all")
    parser.add_argument("--alarm-every", type=float, default=1.0, help="seconds between a raiser's alarms")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="the paced phase's speed-up of the fleet's real heartbeat rate (N per 180 s)",
    )
    parser.add_argument("--junk", type=int, default=20, help="copies of each kind of junk in the burst")
    parser.add_argument("--workers", type=int, default=2, help="processes the pendants are spread over")
    parser.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="backend processes: the main one, and the rest ingest-only workers on its shared subscription",
    )
    parser.add_argument("--tls", action="store_true", help="pendants use the TLS listener (default: plain)")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait for the births")
    parser.add_argument("--ack-wait", type=float, default=60.0, help="seconds to wait for the last acks")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the backlog")
    parser.add_argument("--data", type=Path, help="data folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        help="folder for a py-spy profile of the backend over each saturation window (needs py-spy)",
    )
    args = parser.parse_args()
    sizes = sorted(int(part) for part in args.sizes.split(","))
    # The limit is per process: Mosquitto holds a socket per pendant, each client worker its share.
    limit = raise_open_files(max(sizes) + 1000)
    print(f"open files allowed: {limit} (Mosquitto and the workers inherit it)")

    data = args.data.resolve() if args.data else Path(tempfile.mkdtemp(prefix="pendant-fleet-"))
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o711)
    postgres = Postgres(data / "postgres") if args.db == "postgres" else None
    settings = Settings.for_data_dir(data, mqtt_port=free_port())
    results: list[dict[str, Any]] = []
    try:
        if postgres is not None:
            settings = dataclasses.replace(settings, db_url=postgres.start())
        engine = make_engine(settings.db_url)
        if left := close_bench_alarms(engine):
            print(f"resolved {left} alarms an earlier run left open")
        # The first start writes the broker's files; the accounts then go into them with it stopped.
        fresh_broker(settings).stop(timeout=60)
        load_secrets(settings)
        accounts = fleet_accounts(
            settings, engine, max(sizes), settings.secrets_dir / "fleet-scale-pendants.json"
        )
        boot = int(time.time())
        for index, n in enumerate(sizes):
            print(f"N={n}: baseline, then the backend ...", flush=True)
            results.append(run_size(n, settings, engine, accounts, args, boot + index))
        engine.dispose()
    finally:
        if postgres is not None:
            postgres.stop()
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)
    print_report(results, args.db, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "db": args.db,
                    "args": vars(args) | {"data": str(args.data), "json": str(args.json)},
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
