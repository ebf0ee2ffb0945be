"""Health over the database, driven by a controllable clock: what ingest stores becomes health events
(each with its timestamp), a webhook, and the fleet summary."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta

import pytest
from backend_samples import T0, alarm, tele, topic
from sqlmodel import Session, col, select

from pendant_backend import commands, configs, health, monitor, registry
from pendant_backend.db import session_scope
from pendant_backend.models import LOAN_STATES, Alarm, Device, DeviceUpdate, Notification, as_utc
from pendant_backend.models.devices import RECHECK
from pendant_backend.settings import Settings

SETTINGS = Settings(data_dir=".", db_url="", offline_after_missed=3)


def evaluate(engine, clock) -> list[tuple[str, str, str | None, str]]:
    found = monitor.evaluate(engine, now=clock(), settings=SETTINGS)
    return [(e.device_id, e.aspect, e.old, e.new) for e in found]


def status(online: bool, sess: int, boot: int = 12) -> bytes:
    if online:
        return json.dumps({"online": True, "boot": boot, "sess": sess, "fw": "0.1.0"}).encode()
    return json.dumps({"online": False, "boot": boot, "sess": sess}).encode()


def test_connectivity_transitions_by_the_clock(engine, ingest, clock) -> None:
    assert evaluate(engine, clock) == []  # never seen: nothing to report yet
    ingest.handle(topic("pd-0001", "status"), status(True, 40))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert ("pd-0001", "connectivity", "never_seen", "online") in evaluate(engine, clock)
    clock.advance(180 + 61)  # one heartbeat (180 s) missed, past the 60 s grace
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "late")]
    clock.advance(2 * 180)  # three missed
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "late", "offline")]
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "offline", "online")]


def test_a_will_is_offline_and_a_stale_will_is_ignored(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "status"), status(True, 41))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.advance(5)
    ingest.handle(topic("pd-0001", "status"), status(False, 40))  # the previous connection's will
    assert evaluate(engine, clock) == []
    ingest.handle(topic("pd-0001", "status"), status(False, 41))
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "offline")]


def test_every_change_is_stored_with_its_time_and_sent_to_the_webhook(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(batt=80, rssi=-70))
    evaluate(engine, clock)
    clock.advance(60)
    ingest.handle(topic("pd-0001", "tele"), tele(batt=4, chg=True, rssi=-110, out=5))
    changes = evaluate(engine, clock)
    assert changes == [
        ("pd-0001", "battery", "ok", "critical"),
        ("pd-0001", "charging", "no", "yes"),
        ("pd-0001", "weak_signal", "no", "yes"),
        ("pd-0001", "outbox_backlog", "no", "yes"),
    ]
    stored = monitor.health_events(engine, device_id="pd-0001")
    assert {e.at for e in stored[:4]} == {clock()}
    with Session(engine) as session:
        hooks = [
            json.loads(n.body) for n in session.exec(select(Notification).order_by(col(Notification.id)))
        ]
    assert hooks[-1]["event"] == "health" and hooks[-1]["case_ref"] == "case-1"
    assert [c["aspect"] for c in hooks[-1]["changes"]] == [
        "battery",
        "charging",
        "weak_signal",
        "outbox_backlog",
    ]


def test_hours_left_from_heartbeats(engine, ingest, clock) -> None:
    for level in (80, 78, 76, 74):
        ingest.handle(topic("pd-0001", "tele"), tele(batt=level, chg=False, rssi=-70))
        clock.advance(3600)
    evaluate(engine, clock)
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
    # 2 % an hour; 74 % an hour ago.
    assert device.health["hours_left"] == pytest.approx(36.0, abs=0.1)


def test_the_trend_reads_a_thinned_discharge_run_with_the_full_runs_figure(engine, ingest, clock) -> None:
    rng = random.Random(7)
    everything: list[health.BatterySample] = []

    def beat(batt: int, chg: bool) -> None:
        ingest.handle(topic("pd-0001", "tele"), tele(batt=batt, chg=chg, rssi=-70))
        everything.append(health.BatterySample(at=clock(), batt=batt, chg=chg))
        clock.advance(60)

    for minute in range(120):  # off the charger, then on it: none of this is the current run
        beat(70 - minute // 30, False)
    for _ in range(10):
        beat(90, True)
    for minute in range(900):  # 15 h off the charger, 1.5 % an hour with a percent of noise
        beat(round(95 - 1.5 * minute / 60 + rng.uniform(-1, 1)), False)
    limits = monitor.limits_for(SETTINGS)
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
        read = monitor.snapshot(session, device, now=clock(), settings=SETTINGS, limits=limits)
    history = list(read.battery_history)
    full_run = health.discharge_run(everything, clock(), limits)
    assert len(full_run) == 900
    assert len(history) <= monitor.HISTORY_POINTS + 2
    assert not any(sample.chg for sample in history)
    assert (history[0].at, history[-1].at) == (full_run[0].at, full_run[-1].at)
    full = health.hours_left(everything, clock(), limits)
    assert full is not None and full > 40
    assert health.hours_left(history, clock(), limits) == pytest.approx(full, rel=0.02)
    evaluate(engine, clock)
    with Session(engine) as session:
        stored = session.get(Device, "pd-0001").health["hours_left"]
    assert stored == pytest.approx(full, rel=0.02)
    beat(80, True)  # back on the charger: no run, no estimate
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
        again = monitor.snapshot(session, device, now=clock(), settings=SETTINGS, limits=limits)
    assert again.battery_history == []


def test_gnss_stale_after_a_day_without_a_fix(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, tst=None))
    evaluate(engine, clock)
    clock.advance(24 * 3600 + 1)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, loc=None))
    assert ("pd-0001", "gnss_stale", "no", "yes") in evaluate(engine, clock)


def test_an_alarm_s_fix_counts_against_gnss_stale(engine, ingest, clock) -> None:
    # The pendant's heartbeats have carried no fix for a day: gnss_stale.
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, tst=None))
    evaluate(engine, clock)
    clock.advance(24 * 3600 + 1)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, loc=None))
    assert ("pd-0001", "gnss_stale", "no", "yes") in evaluate(engine, clock)
    # Then an alarm comes with a GNSS fix taken 10 s before it was sent: the flag clears at once.
    ingest.handle(topic("pd-0001", "alarm"), alarm("12-3"))
    with Session(engine) as session:
        assert as_utc(session.get(Device, "pd-0001").last_fix_at) == clock() - timedelta(seconds=10)
    assert ("pd-0001", "gnss_stale", "yes", "no") in evaluate(engine, clock)
    # An alarm without a fix, and a resend with an older one, leave the newest fix as it is.
    clock.advance(60)
    ingest.handle(topic("pd-0001", "alarm"), alarm("12-4", loc=None))
    ingest.handle(topic("pd-0001", "alarm"), alarm("12-5", tst=1764403200 + 3600))  # a fix an hour old
    with Session(engine) as session:
        assert as_utc(session.get(Device, "pd-0001").last_fix_at) == clock() - timedelta(seconds=70)


def test_a_locate_answer_s_fix_counts_against_gnss_stale(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, tst=None))
    evaluate(engine, clock)
    clock.advance(24 * 3600 + 1)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70, loc=None))
    assert ("pd-0001", "gnss_stale", "no", "yes") in evaluate(engine, clock)
    sent = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="op1", now=clock())
    bad = {
        "id": sent.command_id,
        "ok": True,
        "loc": {"lat": 99, "lon": 4.9, "acc": 8, "tst": None, "src": "gnss"},
    }
    ingest.handle(topic("pd-0001", "cmd/res"), json.dumps(bad).encode())  # an answer whose position is bad
    assert evaluate(engine, clock) == []
    sent = commands.send(engine, device_id="pd-0001", cmd="locate", requested_by="op1", now=clock())
    good = {**bad, "id": sent.command_id, "loc": {**bad["loc"], "lat": 52.37}}
    ingest.handle(topic("pd-0001", "cmd/res"), json.dumps(good).encode())
    assert ("pd-0001", "gnss_stale", "yes", "no") in evaluate(engine, clock)


def test_config_and_firmware_drift(engine, ingest, clock) -> None:
    configs.set_config(engine, scope="fleet", changes={"heartbeat_s": 300}, author="it", now=clock())
    with Session(engine) as session:
        rev = session.get(Device, "pd-0001").config_rev
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=rev - 1, rssi=-70))
    assert ("pd-0001", "config_drift", None, "yes") in evaluate(engine, clock)
    ingest.handle(
        topic("pd-0001", "evt"), json.dumps({"evt": "config_applied", "tst": None, "rev": rev}).encode()
    )
    assert ("pd-0001", "config_drift", "yes", "no") in evaluate(engine, clock)
    ingest.handle(
        topic("pd-0001", "evt"),
        b'{"evt":"config_rejected","tst":null,"rev":9,"field":"sms","err":"bad number"}',
    )
    assert ("pd-0001", "config_drift", "no", "yes") in evaluate(engine, clock)
    registry.update_device(engine, device_id="pd-0001", changes=DeviceUpdate(firmware_version="0.2.0"))
    assert ("pd-0001", "firmware_drift", "no", "yes") in evaluate(engine, clock)


def test_the_heartbeat_interval_of_the_devices_config_sets_late(engine, ingest, clock) -> None:
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 600}, author="it", now=clock())
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.advance(180 + 61)
    assert evaluate(engine, clock) == []  # late only after 600 + 60 s
    clock.advance(600)
    assert evaluate(engine, clock) == [("pd-0001", "connectivity", "online", "late")]


def test_test_alarm_overdue_and_renewal_due(engine, ingest, clock) -> None:
    registry.set_renewal(engine, device_id="pd-0001", renewal_due=T0 + timedelta(days=40))
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    clock.now = T0 + timedelta(days=26)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert evaluate(engine, clock) == [("pd-0001", "renewal_due", "no", "yes")]
    clock.now = T0 + timedelta(days=31)
    ingest.handle(topic("pd-0001", "alarm"), alarm("7-1", kind="test", test=True))
    assert ("pd-0001", "test_overdue", "no", "yes") not in evaluate(engine, clock)
    clock.now = T0 + timedelta(days=62)
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    assert ("pd-0001", "test_overdue", "no", "yes") in evaluate(engine, clock)


def test_fleet_summary_counts(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    evaluate(engine, clock)
    summary = monitor.fleet_summary(engine)
    assert summary["connectivity"] == {"online": 1, "late": 0, "offline": 0, "never_seen": 1}
    assert summary["loan"] == {"issued": 2}
    assert summary["alarms"] == {"open": 1, "unacknowledged": 1}
    assert summary["monitored"] == summary["devices"] == 2


# ---- incremental health: the sweep looks at the changed and the due, never the whole fleet ----------


def sweep(engine, clock, changed=(), *, due: bool = True) -> monitor.Pass:
    return monitor.sweep(
        engine, now=clock(), settings=SETTINGS, changed=changed, due_until=clock() if due else None
    )


def found(done: monitor.Pass) -> list[tuple[str, str, str | None, str]]:
    return [(e.device_id, e.aspect, e.old, e.new) for e in done.events]


def due_at(engine, device_id: str):
    with Session(engine) as session:
        return session.get(Device, device_id).health_due_at


def test_a_pendant_that_falls_silent_goes_late_then_offline_with_no_message_at_all(
    engine, ingest, clock
) -> None:
    evaluate(engine, clock)  # the service's first tick: every monitored device, once
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    heard_at = clock()
    assert ("pd-0001", "connectivity", "never_seen", "online") in found(sweep(engine, clock))
    # Late just after one interval and its grace (180 + 60 s), offline after three (3 * 180 + 60 s).
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=240, microseconds=1)
    clock.advance(240)
    quiet = sweep(engine, clock)
    assert (found(quiet), quiet.looked_at) == ([], 0)  # not due yet: nothing is read
    clock.advance(30)
    late = sweep(engine, clock)
    assert (found(late), late.looked_at) == ([("pd-0001", "connectivity", "online", "late")], 1)
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=600, microseconds=1)
    clock.advance(600 - 270 + 30)
    assert found(sweep(engine, clock)) == [("pd-0001", "connectivity", "late", "offline")]
    # Offline: what is left to happen by the clock is its last fix going stale (a day), then the
    # monthly test alarm falling overdue; it is looked at then, and not in between.
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
    assert device.connectivity == "offline" and device.health["connectivity"] == "offline"
    assert due_at(engine, "pd-0001") == device.last_fix_at + timedelta(hours=24, microseconds=1)
    clock.advance(3600)
    assert sweep(engine, clock).looked_at == 0
    clock.now = device.last_fix_at + timedelta(hours=24, seconds=1)
    assert found(sweep(engine, clock)) == [("pd-0001", "gnss_stale", "no", "yes")]
    assert due_at(engine, "pd-0001") == T0 + timedelta(days=30, microseconds=1)


def test_the_rules_find_a_silent_pendant_offline_and_tell_the_webhook(engine, ingest, clock) -> None:
    from pendant_backend.service import HEALTH_SWEEP_S, Rules

    rules = Rules(engine, SETTINGS)
    rules.tick(clock())
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    rules.device_changed("pd-0001")
    rules.tick(clock())
    for _ in range(int((3 * 180 + 61) / HEALTH_SWEEP_S) + 1):
        clock.advance(HEALTH_SWEEP_S)
        rules.tick(clock())
    events = [(e.aspect, e.old, e.new) for e in reversed(monitor.health_events(engine, device_id="pd-0001"))]
    assert events == [
        ("connectivity", "never_seen", "online"),
        ("battery", "unknown", "ok"),
        ("connectivity", "online", "late"),
        ("connectivity", "late", "offline"),
    ]
    with Session(engine) as session:
        hooks = [
            json.loads(n.body) for n in session.exec(select(Notification).order_by(col(Notification.id)))
        ]
    assert [c["new"] for h in hooks if h["event"] == "health" for c in h["changes"]][-2:] == [
        "late",
        "offline",
    ]


def applied(rev: int) -> bytes:
    return json.dumps({"evt": "config_applied", "tst": None, "rev": rev}).encode()


def test_a_new_heartbeat_interval_holds_from_the_heartbeat_that_runs_it(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=0, rssi=-70))  # no config yet: the default 180 s
    heard_at = clock()
    evaluate(engine, clock)
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=240, microseconds=1)
    # A longer interval (rev 1): looked at once (nobody told the rules), and still held to 180 s.
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 900}, author="it", now=clock())
    assert due_at(engine, "pd-0001") == RECHECK
    assert sweep(engine, clock, due=False).looked_at == 1  # a RECHECK is looked at at every tick
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=240, microseconds=1)
    # It applies rev 1 and sends its next heartbeat on the old timer; from that one on, 900 s.
    clock.advance(170)
    ingest.handle(topic("pd-0001", "evt"), applied(1))
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=1, rssi=-70))
    heard_at = clock()
    sweep(engine, clock, due=False)
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=960, microseconds=1)
    clock.advance(241)
    assert found(sweep(engine, clock)) == []
    # A shorter one (rev 2) is not late at once: the pendant's next heartbeat comes on its 900 s timer.
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 60}, author="it", now=clock())
    assert found(sweep(engine, clock, due=False)) == [("pd-0001", "config_drift", "no", "yes")]
    assert due_at(engine, "pd-0001") == heard_at + timedelta(seconds=960, microseconds=1)
    clock.advance(900 - 241)
    ingest.handle(topic("pd-0001", "evt"), applied(2))
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=2, rssi=-70))
    assert found(sweep(engine, clock, due=False)) == [("pd-0001", "config_drift", "yes", "no")]
    clock.advance(121)
    assert found(sweep(engine, clock)) == [("pd-0001", "connectivity", "online", "late")]


def test_a_pendant_that_refuses_the_new_interval_stays_on_the_old_one(engine, ingest, clock) -> None:
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 1800}, author="it", now=clock())
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=1, rssi=-70))  # SP3 in force
    configs.set_config(engine, scope="pd-0001", changes={"heartbeat_s": 180}, author="it", now=clock())
    evaluate(engine, clock)
    rejected = {"evt": "config_rejected", "tst": None, "rev": 2, "field": "sms", "err": "bad number"}
    ingest.handle(topic("pd-0001", "evt"), json.dumps(rejected).encode())
    clock.advance(1800)
    ingest.handle(topic("pd-0001", "tele"), tele(cfg=1, rssi=-70))  # still rev 1, every 30 min
    evaluate(engine, clock)
    clock.advance(600)  # ten minutes: late for SP4, nothing for the SP3 it still runs
    assert ("pd-0001", "connectivity", "online", "late") not in evaluate(engine, clock)
    with Session(engine) as session:
        assert session.get(Device, "pd-0001").health["supervision"]["interval_in_force"] == 1800


def test_a_change_made_elsewhere_is_seen_at_the_next_tick(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    evaluate(engine, clock)
    registry.update_device(engine, device_id="pd-0001", changes=DeviceUpdate(firmware_version="0.2.0"))
    assert found(sweep(engine, clock, due=False)) == [("pd-0001", "firmware_drift", "no", "yes")]
    registry.set_loan_state(engine, device_id="pd-0002", state="returned")
    done = sweep(engine, clock, due=False)
    # No longer watched: looked at once, its health kept as it was, and nothing due any more.
    assert (found(done), done.looked_at, due_at(engine, "pd-0002")) == ([], 1, None)
    assert sweep(engine, clock).looked_at == 0


def test_a_device_that_changed_while_the_pass_looked_is_left_for_the_next_tick(engine, ingest, clock) -> None:
    ingest.handle(topic("pd-0001", "tele"), tele(rssi=-70))
    real_snapshots = monitor.snapshots

    def heartbeat_meanwhile(*args, **kwargs):
        result = real_snapshots(*args, **kwargs)
        clock.advance(1)
        ingest.handle(topic("pd-0001", "tele"), tele(batt=4, rssi=-70))
        return result

    monitor.snapshots = heartbeat_meanwhile
    try:
        first = sweep(engine, clock, ["pd-0001"])
    finally:
        monitor.snapshots = real_snapshots
    assert (found(first), first.busy) == ([], {"pd-0001"})
    assert due_at(engine, "pd-0001") == RECHECK
    # The next tick reads the newer heartbeat: one look, with the battery it reported.
    assert ("pd-0001", "battery", None, "critical") in found(sweep(engine, clock, due=False))


def test_sweeps_leave_nothing_for_a_full_evaluation_to_find(engine, ingest, clock) -> None:
    """The incremental state is the whole truth: after every pass, classifying the whole fleet again
    finds no change, over ten hours of pendants reporting, discharging, charging and falling silent."""
    rng = random.Random(11)
    ids = ["pd-0001", "pd-0002"]
    with session_scope(engine) as session:
        for n in range(3, 9):
            ids.append(f"pd-{n:04d}")
            session.add(
                Device(
                    device_id=ids[-1], loan_state="issued", issued_at=T0, renewal_due=T0 + timedelta(days=15)
                )
            )
    evaluate(engine, clock)
    levels = dict.fromkeys(ids, 90)
    silent_from = {device_id: rng.uniform(1, 8) * 3600 for device_id in ids[:4]}
    for step in range(10 * 60):
        clock.advance(60)
        changed = set()
        for device_id in ids:
            if silent_from.get(device_id, 1e9) < step * 60 or rng.random() > 60 / 180:
                continue
            levels[device_id] = max(levels[device_id] - rng.choice((0, 1, 1, 2)), 0)
            charging = step * 60 % (4 * 3600) < 1800 and device_id.endswith(("1", "5"))
            ingest.handle(
                topic(device_id, "tele"),
                tele(
                    batt=levels[device_id],
                    chg=charging,
                    rssi=rng.choice((-70, -110)),
                    out=rng.choice((0, 0, 4)),
                ),
            )
            changed.add(device_id)
        sweep(engine, clock, changed)
        if step % 10 == 0:
            with Session(engine) as session:
                before = {d.device_id: d.health for d in session.exec(select(Device))}
            assert monitor.evaluate(engine, now=clock(), settings=SETTINGS) == [], f"at step {step}"
            with Session(engine) as session:
                after = {d.device_id: d.health for d in session.exec(select(Device))}
            assert after == before, f"at step {step}"
    with Session(engine) as session:
        states = Counter(d.connectivity for d in session.exec(select(Device)))
    assert states["offline"] >= 4 and states["online"] >= 2  # the fleet did go through these states


# ---- the fleet summary from counts ----------------------------------------------------------------


def summary_from_every_row(engine) -> dict:
    """The summary as it was computed before the counts: every device row read and counted in Python."""
    with Session(engine) as session:
        devices = list(session.exec(select(Device)))
        alarms = list(session.exec(select(Alarm)))
    monitored = [d for d in devices if d.loan_state in ("provisioned", "issued") and d.revoked_at is None]
    summary = health.summarize(d.health or {"connectivity": d.connectivity} for d in monitored)
    summary["devices"] = len(devices)
    summary["monitored"] = len(monitored)
    summary["loan"] = dict(Counter(d.loan_state for d in devices))
    summary["recall"] = sum(d.recall for d in devices)
    summary["alarms"] = {
        "open": sum(a.state != "resolved" and not a.test for a in alarms),
        "unacknowledged": sum(a.state == "received" and not a.test for a in alarms),
    }
    return summary


def test_the_summary_from_counts_is_the_summary_of_every_row(engine, ingest, clock) -> None:
    rng = random.Random(4)
    with session_scope(engine) as session:
        for n in range(3, 60):
            session.add(
                Device(
                    device_id=f"pd-{n:04d}",
                    loan_state=rng.choice(LOAN_STATES),
                    issued_at=T0 - timedelta(days=rng.choice((1, 40))),
                    recall=rng.random() < 0.2,
                    revoked_at=T0 if rng.random() < 0.1 else None,
                    renewal_due=T0 + timedelta(days=rng.choice((3, 100))),
                )
            )
    for n in range(1, 60):
        if rng.random() < 0.7:
            device_id = f"pd-{n:04d}"
            ingest.handle(
                topic(device_id, "tele"),
                tele(
                    batt=rng.choice((3, 15, 80, None)),
                    chg=rng.random() < 0.3,
                    rssi=rng.choice((-70, -110)),
                    out=rng.choice((0, 5)),
                    loc=None if rng.random() < 0.3 else json.loads(tele())["loc"],
                ),
            )
            if rng.random() < 0.2:
                ingest.handle(topic(device_id, "status"), status(False, 1))
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0002", "alarm"), alarm("4-1", kind="test", test=True))
    evaluate(engine, clock)
    clock.advance(400)
    sweep(engine, clock)
    # Devices the rules have never classified count too (as never_seen, battery unknown, no flags).
    with session_scope(engine) as session:
        session.add(Device(device_id="pd-0100", loan_state="issued"))
        session.add(Device(device_id="pd-0101", loan_state="in_stock", recall=True))
    summary = monitor.fleet_summary(engine)
    assert summary == summary_from_every_row(engine)
    assert summary["monitored"] > 10 and sum(summary["flags"].values()) > 5 and summary["recall"] > 1
    assert len({k for k, v in summary["connectivity"].items() if v}) >= 3
    assert summary["alarms"] == {"open": 1, "unacknowledged": 1}
