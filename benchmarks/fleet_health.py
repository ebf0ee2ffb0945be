"""Benchmark: fleet health and the fleet summary at 1,000, 5,000 and 10,000 pendants.

For each N, builds a database of N issued pendants with a heartbeat history (every 180 s over
`--history-h` hours; most report, some fell silent hours ago, some were never seen), classifies them
once, then moves the clock by one sweep interval (30 s), during which the pendants due to report send a
heartbeat (about N/6), and times, new against old in the same run and on the same database:

- the pass the rules run every 30 s: new `monitor.sweep` (the changed devices and those due, read in
  bulk) against the old algorithm (`BASELINE_evaluate`: every monitored device, two heartbeat queries
  and one transaction each);
- the full pass the service runs once at start (new `monitor.evaluate` against the old one);
- `fleet_summary()`: new (one GROUP BY) against the old (`BASELINE_fleet_summary`: every row), and
  checks that both give the same dict.

`BASELINE_*` below is the algorithm of pendant_backend.monitor before issue 11, kept here only as the
baseline.

Run: .venv/bin/python benchmarks/fleet_health.py [--counts 1000,5000,10000] [--history-h 6]
     [--db-url postgresql://...]  (default: SQLite in a temporary folder)
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, insert, text, update
from sqlmodel import Session, col, func, select

from pendant_backend import health, monitor, notify
from pendant_backend.db import make_engine, session_scope
from pendant_backend.models import Alarm, Device, HealthEvent, Heartbeat, as_utc
from pendant_backend.models.devices import RECHECK
from pendant_backend.settings import Settings

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BEAT_S = 180
SETTINGS = Settings(data_dir=".", db_url="")


# ---- the old algorithm, the baseline only ----------------------------------------------------------


def BASELINE_snapshot(session: Session, device: Device, *, now: datetime, limits: health.Limits):  # noqa: N802
    config = device.config_doc or {}
    latest = session.exec(
        select(Heartbeat)
        .where(Heartbeat.device_id == device.device_id)
        .order_by(col(Heartbeat.received_at).desc(), col(Heartbeat.id).desc())
        .limit(1)
    ).first()
    history = []
    if latest is not None:
        since = now - timedelta(hours=limits.discharge_window_h)
        rows = session.exec(
            select(Heartbeat.received_at, Heartbeat.batt, Heartbeat.chg).where(
                Heartbeat.device_id == device.device_id,
                Heartbeat.received_at >= since,
                col(Heartbeat.batt).is_not(None),
            )
        )
        history = [health.BatterySample(at=as_utc(at), batt=batt, chg=chg) for at, batt, chg in rows]
    return health.Snapshot(
        last_seen_at=as_utc(device.last_seen_at),
        online=device.online,
        heartbeat_s=int(config.get("heartbeat_s", 180)),
        last_heartbeat_at=as_utc(device.last_heartbeat_at),
        batt=latest.batt if latest else None,
        chg=latest.chg if latest else False,
        rssi=latest.rssi if latest else None,
        batt_low=int(config.get("batt_low", 20)),
        batt_critical=int(config.get("batt_critical", 5)),
        last_fix_at=as_utc(device.last_fix_at),
        out=latest.out if latest else 0,
        fw=device.fw,
        expected_fw=device.firmware_version or None,
        config_rev=device.config_rev,
        config_applied_rev=device.config_applied_rev,
        config_error=device.config_error,
        loan_state=device.loan_state,
        issued_at=as_utc(device.issued_at),
        last_test_alarm_at=as_utc(device.last_test_alarm_at),
        renewal_due=as_utc(device.renewal_due),
        battery_history=history,
    )


def BASELINE_evaluate(engine: Engine, *, now: datetime) -> int:  # noqa: N802
    """Every monitored device, one at a time, one transaction each. Returns the events stored."""
    limits = monitor.limits_for(SETTINGS)
    with Session(engine) as session:
        ids = list(
            session.exec(
                select(Device.device_id).where(
                    col(Device.loan_state).in_(monitor.MONITORED_LOAN_STATES),
                    col(Device.revoked_at).is_(None),
                )
            )
        )
    stored = 0
    for device_id in ids:
        with session_scope(engine) as session:
            device = session.get(Device, device_id, with_for_update=True)
            result = health.classify(BASELINE_snapshot(session, device, now=now, limits=limits), now, limits)
            aspects = result.aspects()
            previous = device.health or {}
            found = health.changes({k: v for k, v in previous.items() if k in aspects}, aspects)
            old_hours, new_hours = previous.get("hours_left"), result.as_dict()["hours_left"]
            moved = (old_hours is None) != (new_hours is None) or (
                old_hours is not None and abs(old_hours - new_hours) >= 0.5
            )
            if not found and not moved and device.health is not None:
                continue
            # The baseline writes what the old code wrote; the new columns follow so that later passes
            # of the new code see a consistent row.
            device.health = {**aspects, "hours_left": new_hours}
            device.connectivity = result.connectivity
            device.battery, device.health_flags = aspects["battery"], health.flag_bits(aspects)
            if found:
                device.health_changed_at = now
                for aspect, old, new in found:
                    session.add(HealthEvent(device_id=device_id, at=now, aspect=aspect, old=old, new=new))
                    stored += 1
                notify.enqueue(
                    session, event="health", now=now, device_id=device_id, body={"health": device.health}
                )
            session.add(device)
    return stored


def BASELINE_fleet_summary(engine: Engine) -> dict[str, Any]:  # noqa: N802
    with Session(engine) as session:
        devices = list(session.exec(select(Device)))
        open_alarms = session.exec(
            select(func.count())
            .select_from(Alarm)
            .where(Alarm.state != "resolved", col(Alarm.test).is_(False))
        ).one()
        unacknowledged = session.exec(
            select(func.count())
            .select_from(Alarm)
            .where(Alarm.state == "received", col(Alarm.test).is_(False))
        ).one()
    monitored = [d for d in devices if d.loan_state in monitor.MONITORED_LOAN_STATES and d.revoked_at is None]
    summary: dict[str, Any] = health.summarize(
        d.health or {"connectivity": d.connectivity} for d in monitored
    )
    summary["devices"] = len(devices)
    summary["monitored"] = len(monitored)
    summary["loan"] = dict(Counter(d.loan_state for d in devices))
    summary["recall"] = sum(d.recall for d in devices)
    summary["alarms"] = {"open": open_alarms, "unacknowledged": unacknowledged}
    return summary


# ---- the fleet -------------------------------------------------------------------------------------


def heartbeat(device_id: str, at: datetime, *, batt: int, chg: bool, up: int) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "received_at": at,
        "device_time": int(at.timestamp()),
        "boot": 1,
        "up": up,
        "batt": batt,
        "mv": 3900,
        "chg": chg,
        "rssi": -70,
        "reg": "home",
        "rat": "lte",
        "fw": "0.1.0",
        "cfg": 1,
        "out": 0,
        "heap": 40000,
    }


def build(engine: Engine, n: int, history_h: float, rng: random.Random) -> dict[str, dict[str, Any]]:
    """N issued pendants and their heartbeats up to NOW; returns what each one does next."""
    devices, beats, plan = [], [], {}
    for i in range(n):
        device_id = f"pd-{i:05d}"
        kind = rng.choices(("reports", "silent", "never"), (90, 7, 3))[0]
        last = None
        level = rng.randint(30, 100)
        if kind != "never":
            stop = NOW - (timedelta(hours=rng.uniform(1, history_h)) if kind == "silent" else timedelta())
            at = NOW - timedelta(hours=history_h) + timedelta(seconds=rng.uniform(0, BEAT_S))
            up = 0
            while at <= stop:
                level = max(level - (rng.random() < 0.05), 0)
                beats.append(heartbeat(device_id, at, batt=level, chg=False, up=up))
                last, at, up = at, at + timedelta(seconds=BEAT_S), up + BEAT_S
        devices.append(
            {
                "device_id": device_id,
                "loan_state": "issued",
                "case_ref": f"case-{i}",
                "issued_at": NOW - timedelta(days=rng.uniform(1, 60)),
                "renewal_due": NOW + timedelta(days=rng.uniform(1, 100)),
                "recall": rng.random() < 0.01,
                "first_seen_at": last,
                "last_seen_at": last,
                "last_heartbeat_at": last,
                "last_fix_at": last,
                "online": True if last else None,
                "fw": "0.1.0",
                "config_rev": 1,
                "config_applied_rev": 1,
                "config_doc": {"heartbeat_s": BEAT_S},
                "connectivity": "never_seen",
                "battery": "unknown",
                "health_flags": 0,
                "health_due_at": RECHECK,
            }
        )
        plan[device_id] = {"kind": kind, "last": last, "level": level, "up": up if last else 0}
    with engine.begin() as connection:
        connection.execute(insert(Device.__table__), devices)
        for start in range(0, len(beats), 20_000):
            connection.execute(insert(Heartbeat.__table__), beats[start : start + 20_000])
    return plan


def report_in(engine: Engine, plan: dict[str, dict[str, Any]], now: datetime) -> set[str]:
    """The heartbeats that come in during one sweep interval, stored as ingest stores them (a device
    row touched, so due at once). Returns the devices that changed."""
    changed, beats, touched = set(), [], []
    for device_id, state in plan.items():
        last = state["last"]
        if state["kind"] != "reports" or last is None or last + timedelta(seconds=BEAT_S) > now:
            continue
        at = last + timedelta(seconds=BEAT_S)
        state["up"] += BEAT_S
        beats.append(heartbeat(device_id, at, batt=state["level"], chg=False, up=state["up"]))
        touched.append({"b_id": device_id, "b_at": at})
        state["last"] = at
        changed.add(device_id)
    if beats:
        table = Device.__table__
        with engine.begin() as connection:
            connection.execute(insert(Heartbeat.__table__), beats)
            connection.execute(
                update(table)
                .where(table.c.device_id == bindparam("b_id"))
                .values(
                    last_seen_at=bindparam("b_at"),
                    last_heartbeat_at=bindparam("b_at"),
                    last_fix_at=bindparam("b_at"),
                    health_due_at=RECHECK,
                ),
                touched,
            )
    return changed


def timed(fn, repeat: int = 1) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_one(db_url: str, n: int, history_h: float) -> dict[str, Any]:
    engine = make_engine(db_url)
    rng = random.Random(n)
    started = time.perf_counter()
    plan = build(engine, n, history_h, rng)
    with engine.connect() as connection:
        beats = connection.execute(text("SELECT count(*) FROM heartbeats")).scalar()
    built_s = time.perf_counter() - started
    # The first classification of every pendant (an event or two each), then both full passes on the
    # classified fleet, where neither has anything to write.
    first_s, _ = timed(lambda: monitor.evaluate(engine, now=NOW, settings=SETTINGS))
    old_full_s, _ = timed(lambda: BASELINE_evaluate(engine, now=NOW))
    new_full_s, _ = timed(lambda: monitor.evaluate(engine, now=NOW, settings=SETTINGS))
    now = NOW + timedelta(seconds=monitor_sweep_s())
    changed = report_in(engine, plan, now)
    with Session(engine) as session:
        due_now = session.exec(
            select(func.count()).select_from(Device).where(col(Device.health_due_at) <= now)
        ).one()
    new_pass_s, done = timed(
        lambda: monitor.sweep(engine, now=now, settings=SETTINGS, changed=changed, due_until=now)
    )
    # The old pass at the same moment, on the same rows (it finds what the new pass already stored).
    old_pass_s, _ = timed(lambda: BASELINE_evaluate(engine, now=now))
    new_summary_s, new_summary = timed(lambda: monitor.fleet_summary(engine), repeat=5)
    old_summary_s, old_summary = timed(lambda: BASELINE_fleet_summary(engine), repeat=5)
    engine.dispose()
    return {
        "n": n,
        "heartbeats": beats,
        "built_s": built_s,
        "changed": len(changed),
        "due": due_now,
        "looked_at": done.looked_at,
        "events": len(done.events),
        "new_pass": new_pass_s,
        "old_pass": old_pass_s,
        "first": first_s,
        "new_full": new_full_s,
        "old_full": old_full_s,
        "new_summary": new_summary_s,
        "old_summary": old_summary_s,
        "same_summary": new_summary == old_summary,
    }


def monitor_sweep_s() -> float:
    from pendant_backend.service import HEALTH_SWEEP_S

    return HEALTH_SWEEP_S


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,5000,10000")
    parser.add_argument("--history-h", type=float, default=6.0, help="hours of heartbeats per pendant")
    parser.add_argument(
        "--db-url", help="an empty PostgreSQL database (default: SQLite in a temporary folder)"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    results = []
    for n in counts:
        folder = Path(tempfile.mkdtemp(prefix="pendant-fleet-health-"))
        try:
            if args.db_url:
                engine = make_engine(args.db_url)
                with engine.begin() as connection:
                    for table in ("health_events", "notifications", "heartbeats", "devices"):
                        connection.execute(text(f"DELETE FROM {table}"))
                engine.dispose()
            db_url = args.db_url or f"sqlite:///{folder / 'pendant.db'}"
            result = run_one(db_url, n, args.history_h)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(result)
        print(
            f"N={n}: {result['heartbeats']:,} heartbeats (built in {result['built_s']:.1f} s); in the 30 s "
            f"pass {result['changed']} changed, {result['due']} due, {result['looked_at']} looked at, "
            f"{result['events']} events; summaries equal: {result['same_summary']}",
            flush=True,
        )
    print()
    print(
        "| N | pass every 30 s: new | old | old/new | full pass: new | old | old/new "
        "| fleet_summary: new | old | old/new | first classification (new) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cells = [
            f"{r['n']:,}",
            *figures(r["new_pass"], r["old_pass"], "{:.0f} ms"),
            *figures(r["new_full"], r["old_full"], "{:.0f} ms"),
            *figures(r["new_summary"], r["old_summary"], "{:.1f} ms"),
            f"{r['first'] * 1000:.0f} ms",
        ]
        print("| " + " | ".join(cells) + " |")


def figures(new: float, old: float, shape: str) -> list[str]:
    return [shape.format(new * 1000), shape.format(old * 1000), f"x{old / new:.1f}"]


if __name__ == "__main__":
    main()
