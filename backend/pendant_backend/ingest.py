"""Stores what arrives from the pendants (an alarm once, whatever the duplicates) and says what to answer.

`Ingest.handle(topic, payload)` validates and stores one message in its own transaction and returns an
`Outcome` with the replies to publish; `Ingest.handle_batch(messages)` stores many heartbeats, statuses,
events and command results in one transaction (the per-device state once per device, the heartbeat rows
in one bulk insert), in arrival order, and falls back to `handle()` one by one if that transaction fails.
It knows nothing of MQTT. An invalid message is logged with its topic, counted by reason and answered
with nothing. A failure to store an alarm raises, so that the caller
leaves the message on the broker; a failure on any other topic is logged and counted, never raised.

An alarm is rejected only when it cannot be stored and acked (not JSON, not an object, no usable
`alarm_id`: pendant_backend.payloads.parse_alarm). A field of it that breaks the protocol is set aside:
the alarm is stored without it (the payload keeps it as sent), flagged (`Alarm.location_invalid`, ...),
acked, and each field counted as `set_aside:<field>:<reason>` and logged by name, never by value. A
resend whose fix differs from what the alarm holds adds that fix to the alarm's trail.

A message from a device id the database does not know is rejected (`unknown_device`), except an alarm:
the broker authenticated the sender, so the alarm is stored and acked all the same (losing it would be
worse), and counted and logged as `unknown_device_alarm`.

A pendant's `fallback` report (what its SMS and calls did) is kept on its alarm. A report that comes
before its alarm (the alarm failed to store, or this backend refused it) makes a placeholder alarm in the
queue at once: the pendant told us an alarm exists, and the alarm fills the placeholder in when it
arrives. A `cmd/res` is stored with the command it answers (pendant_backend.commands).

A heartbeat is named by its device, boot counter and uptime: one stored already (a redelivery after the
commit but before the PUBACK, or a QoS 1 resend) is a duplicate and changes nothing.

The log never carries a position or a phone number: logs travel to less protected systems than the
database.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, and_, bindparam, case, func, or_, tuple_, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pendant_backend import alarms, audit, chain, commands, health, logs, notify, payloads
from pendant_backend.bulk import Bulk
from pendant_backend.db import session_scope
from pendant_backend.models import (
    SET_ASIDE_FLAGS,
    Alarm,
    AlarmLocation,
    Device,
    Heartbeat,
    as_utc,
    utc_now,
)
from pendant_backend.models.devices import RECHECK
from pendant_backend.payloads import InvalidPayload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """A message to publish in answer (QoS 1, never retained)."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Outcome:
    """What became of one message."""

    topic: str
    leaf: str | None = None
    device_id: str | None = None
    replies: tuple[Reply, ...] = ()
    # A protocol violation: one of payloads.REASONS. Nothing was stored and nothing is answered.
    invalid: str | None = None
    # Something failed while handling a valid non-alarm message (logged, counted as "handler_error").
    error: str | None = None
    # For an alarm: stored now (True) or already stored before (False).
    new: bool = False
    # For a heartbeat: stored before (a redelivery or a resend), so nothing changed.
    duplicate: bool = False


# The columns that name one heartbeat of one pendant (the unique index uq_heartbeats_device_boot_up).
HEARTBEAT_KEY = ("device_id", "boot", "up")
# The columns of a heartbeat's history row (`Ingest._heartbeat_row`): all but the id.
HEARTBEAT_COLUMNS = tuple(c.name for c in Heartbeat.__table__.columns if c.name != "id")


@dataclass(frozen=True)
class _Parsed:
    """A valid non-alarm message of a batch, waiting for its transaction."""

    index: int
    topic: str
    leaf: str
    device_id: str
    record: Any


# A heartbeat from a pendant whose health was well (online, battery ok, none of the flags a heartbeat
# raises or clears) whose own readings raise none of those flags and that changes nothing else the rules
# read (the same boot, firmware and config) is classified again within this long, not at once: all it can
# move is the estimate of hours left, a figure in half-hour steps. Under a flood of heartbeats,
# classifying each device at each one took half of the backend's core, and at 30 s the rechecks still
# took a quarter of it (docs/scaling.md). Anything else (a pendant coming back, a reboot, a low battery,
# a charger, a weak signal, a backlog, such a flag to clear) is classified at the next tick. At the
# field's pace (one heartbeat in 3 minutes) the moment the last one would fall late comes first anyway.
ROUTINE_RECHECK_S = 120.0
# The thresholds of the flags a heartbeat's readings raise: none of them is a setting
# (monitor.limits_for sets only offline_after_missed).
_READING_LIMITS = health.Limits()
_HEARTBEAT_FLAG_BITS = health.flag_bits(dict.fromkeys(health.HEARTBEAT_FLAGS, "yes"))
# A heartbeat at this charge or less is never routine: the highest `batt_low` a config may set.
ROUTINE_BATT_ABOVE = 50


class _DeviceState(NamedTuple):
    """The columns of a device row that a heartbeat reads or decides on (the lean path's view)."""

    device_id: str
    online: bool | None
    boot: int | None
    heartbeat_up: int | None
    fw: str | None
    config_applied_rev: int | None
    connectivity: str
    battery: str
    health_flags: int
    health_due_at: datetime | None


def fix_time(sent: payloads.Telemetry | payloads.Alarm, now: datetime) -> datetime:
    """When the fix of a heartbeat or an alarm was taken, on our clock: its age by the pendant's clock,
    before `now`."""
    assert sent.loc is not None
    age_s = sent.tst - sent.loc.tst if sent.tst is not None and sent.loc.tst is not None else 0
    return now - timedelta(seconds=max(age_s, 0))


def note_fix(device: Device, taken_at: datetime) -> None:
    """A fix the device sent outside a heartbeat (an alarm's, a `locate` answer's) counts for the
    gnss_stale flag as a heartbeat's does; an older one never moves the newest back."""
    if device.last_fix_at is None or as_utc(device.last_fix_at) < taken_at:
        device.last_fix_at = taken_at


def routine_recheck(state: _DeviceState, tele: payloads.Telemetry, now: datetime) -> datetime | None:
    """When to classify the device again after this heartbeat: None for at once (the rules are told),
    or, for a routine heartbeat, its due moment brought forward to ROUTINE_RECHECK_S from now at most."""
    routine = (
        state.online is True
        and (state.connectivity, state.battery) == ("online", "ok")
        and not state.health_flags & _HEARTBEAT_FLAG_BITS
        and (state.boot, state.fw, state.config_applied_rev) == (tele.boot, tele.fw, tele.cfg)
        and tele.batt is not None
        and tele.batt > ROUTINE_BATT_ABOVE
        and not any(health.reading_flags(tele.chg, tele.rssi, tele.out, _READING_LIMITS).values())
    )
    if not routine:
        return None
    later = now + timedelta(seconds=ROUTINE_RECHECK_S)
    due = as_utc(state.health_due_at)
    return later if due is None else min(due, later)


def is_newer(boot: int | None, heartbeat_up: int | None, tele: payloads.Telemetry) -> bool:
    """True when `tele` is newer than the heartbeat a device row took last (its `boot` and
    `heartbeat_up`): a later boot, or a later `up` in the same boot. Two workers may store one pendant's
    heartbeats in the other order; an older one must not put the row's readings back. A birth of
    another boot resets `heartbeat_up`, so a pendant whose boot counter restarted (its flash erased) is
    followed again from its first birth on."""
    if boot is None or tele.boot > boot:
        return True
    return tele.boot == boot and (heartbeat_up is None or tele.up > heartbeat_up)


@functools.cache
def _update_latest_state() -> Any:
    """The statement that writes a device's latest state after its heartbeats (one parameter set per
    device): what `_touch` and `_apply_heartbeat` do to an ORM row, as columns. Built once: building it
    and its cache key for every batch took about 1 % of the backend under a heartbeat flood."""
    table = Device.__table__
    moment = table.c.last_seen_at.type

    def typed(name: str, column: str) -> Any:
        return bindparam(name, type_=table.c[column].type)

    boot, up = typed("b_boot", "boot"), typed("b_up", "heartbeat_up")
    # is_newer(), in SQL: the right-hand sides of an UPDATE all read the row as it was.
    newer = or_(
        table.c.boot.is_(None),
        boot > table.c.boot,
        and_(boot == table.c.boot, or_(table.c.heartbeat_up.is_(None), up > table.c.heartbeat_up)),
    )

    def if_newer(name: str, column: str) -> Any:
        return case((newer, typed(name, column)), else_=table.c[column])

    return (
        update(table)
        .where(table.c.device_id == bindparam("b_id"))
        .values(
            first_seen_at=func.coalesce(table.c.first_seen_at, bindparam("b_now", type_=moment)),
            last_seen_at=bindparam("b_now", type_=moment),
            last_heartbeat_at=bindparam("b_now", type_=moment),
            boot=if_newer("b_boot", "boot"),
            heartbeat_up=if_newer("b_up", "heartbeat_up"),
            fw=if_newer("b_fw", "fw"),
            config_applied_rev=if_newer("b_cfg", "config_applied_rev"),
            online=func.coalesce(table.c.online, True),
            last_fix_at=func.coalesce(bindparam("b_fix", type_=moment), table.c.last_fix_at),
            health_due_at=typed("b_due", "health_due_at"),
        )
    )


@functools.cache
def _insert_heartbeats(dialect_name: str) -> Any:
    """A bulk insert that skips a heartbeat another worker stored a moment ago (same key)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(Heartbeat).on_conflict_do_nothing(index_elements=list(HEARTBEAT_KEY))


@functools.cache
def _insert_new_heartbeats(dialect_name: str) -> Any:
    """The bulk insert, answering the keys of the rows it inserted."""
    table = Heartbeat.__table__
    return _insert_heartbeats(dialect_name).returning(*(table.c[name] for name in HEARTBEAT_KEY))


def will_is_stale(last_birth_sess: int | None, will_sess: int) -> bool:
    """A will older than the last birth belongs to a connection the broker closed late: ignore it."""
    return last_birth_sess is not None and will_sess < last_birth_sess


def describe_alarm(device_id: str, alarm: payloads.Alarm, *, ref: str, fate: str) -> str:
    """One readable line for the log: who, what, when, and whether there is a fix, but never where (nor
    the value of a field set aside: only its name and why)."""
    if alarm.tst is not None:
        when = datetime.fromtimestamp(alarm.tst, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    else:
        when = "time invalid" if alarm.is_set_aside("tst") else "time unknown"
    if alarm.loc is not None:
        where = f"fix ±{alarm.loc.acc} m"
    elif alarm.cell is not None:
        where = "no fix, cell only"
    else:
        where = "no position"
    if alarm.is_set_aside("loc"):
        where = f"position invalid, {where}"
    batt = f"batt {alarm.batt}%" if alarm.batt is not None else "batt ?"
    what = f"{'TEST ' if alarm.test else ''}{alarm.kind}"
    aside = ""
    if alarm.set_aside:
        aside = ", set aside: " + ", ".join(f"{item.path} ({item.reason})" for item in alarm.set_aside)
    return f"ALARM {ref} {what}, raised {when}, {where}, {batt}{aside}: {fate}"


def set_aside_flags(alarm: payloads.Alarm) -> dict[str, bool]:
    """Every flag column of an alarm (models.alarms.SET_ASIDE_FLAGS), true for each field set aside."""
    return {flag: alarm.is_set_aside(name) for name, flag in SET_ASIDE_FLAGS.items()}


# The columns of an alarm that hold what the pendant sent (a placeholder gets them when its alarm comes).
SENT_FIELDS = (
    "kind",
    "test",
    "device_time",
    "lat",
    "lon",
    "acc",
    "loc_time",
    "loc_src",
    "cell",
    "batt",
    "payload",
    *SET_ASIDE_FLAGS.values(),
)
# The kind of a placeholder alarm: only its fallback report has arrived, so what it is is not known yet.
PLACEHOLDER_KIND = "unknown"


def is_placeholder(stored: Alarm) -> bool:
    """A row made from a fallback report before its alarm came: it has no payload yet."""
    return stored.payload == ""


def describe_fallback(ref: str, report: payloads.FallbackReport) -> str:
    """One line for the log about a fallback report: what happened, but no phone numbers."""
    answered = "answered" if report.answered else "not answered"
    return (
        f"fallback of {ref}: {len(report.sms)} SMS sent, {len(report.sms_failed)} failed, "
        f"{report.calls} calls ({answered}), {report.rounds} rounds"
    )


def same_alarm(stored: Alarm, alarm: payloads.Alarm) -> bool:
    """A resend carries the same kind, test flag and pendant time; a reused id (a pendant that lost its
    state) carries another alarm under the same id. Fields set aside compare as what was kept (`unknown`,
    None): a resend is the same bytes again, so it compares equal; a copy garbled differently is stored
    as another alarm (flagged `id_collision`) rather than risk taking a new alarm for a resend."""
    return (stored.kind, stored.test, stored.device_time) == (alarm.kind, alarm.test, alarm.tst)


Fix = tuple[float, float | None, int | None, int | None]


def fix_of(lat: float | None, lon: float | None, acc: int | None, loc_time: int | None) -> Fix | None:
    """A fix as a comparable value (None without a position)."""
    return None if lat is None else (lat, lon, acc, loc_time)


class Ingest:
    """Validates and stores device messages in the database behind `engine`.

    `on_change` (if given) is called after a message changed what the health rules look at, so that
    the service can classify the device again soon; it must not block.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.on_change = on_change
        self._counts_lock = threading.Lock()
        self.invalid_counts: Counter[str] = Counter()
        # The lean path's two bulk statements (pendant_backend.bulk).
        dialect = engine.dialect
        self._beats_insert = Bulk(_insert_heartbeats(dialect.name), dialect, columns=HEARTBEAT_COLUMNS)
        self._latest_update = Bulk(_update_latest_state(), dialect)

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Handle one message from the broker. Raises only if an alarm could not be stored."""
        try:
            where = payloads.parse_topic(topic)
        except InvalidPayload as exc:
            return self._reject(topic, exc.reason, exc.detail)
        with logs.about(device_id=where.device_id):
            return self._handle(topic, where, payload)

    def _handle(self, topic: str, where: payloads.Topic, payload: bytes) -> Outcome:
        try:
            record = payloads.PARSERS[where.leaf](payload)
        except InvalidPayload as exc:
            return self._reject(topic, exc.reason, exc.detail)
        except Exception:
            # A bug in validation. Raising would make the broker deliver the message again and again
            # (and stall ingest with it); the pendant keeps an unacked alarm and falls back to SMS.
            log.exception("the validation of the message on %s failed; dropping it", topic)
            self._count("validation_error")
            return Outcome(topic, invalid="validation_error")
        if where.leaf == "alarm":
            outcome = self._store_alarm(topic, where.device_id, record, payload)
            self._changed(where.device_id)
            return outcome
        try:
            with session_scope(self.engine) as session:
                now = self.clock()
                device = session.get(Device, where.device_id, with_for_update=True)
                if device is None:
                    return self._reject(topic, "unknown_device", f"{where.device_id} is not in the registry")
                if where.leaf == "tele" and self._stored_heartbeats(session, [(where.device_id, record)]):
                    return Outcome(topic, "tele", where.device_id, duplicate=True)
                self._touch(device, now)
                if where.leaf == "tele":
                    self._store_heartbeat(session, device, record, now)
                else:
                    self._apply(session, device, where.leaf, record, now)
                session.add(device)
        except Exception as exc:
            log.exception("could not handle the message on %s", topic)
            self._count("handler_error")
            return Outcome(topic, where.leaf, where.device_id, error=f"{type(exc).__name__}: {exc}")
        self._changed(where.device_id)
        return Outcome(topic, where.leaf, where.device_id)

    def handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome | None]:
        """Handle messages in arrival order, the non-alarm ones in one transaction; one result each.

        Never raises. An alarm among them is stored on its own (`handle()`), after what came before it
        is committed. If a batch's transaction fails, its messages are handled again one by one, so that
        one bad message does not take the good ones with it. None means the message could not be stored
        and must stay on the broker (an alarm whose store failed); everything else has an Outcome.
        """
        results: list[Outcome | None] = [None] * len(messages)
        run: list[_Parsed] = []
        for index, (topic, payload) in enumerate(messages):
            try:
                where = payloads.parse_topic(topic)
            except InvalidPayload as exc:
                # Counted here at once: this result does not depend on the transaction.
                results[index] = self._reject(topic, exc.reason, exc.detail)
                continue
            if where.leaf == "alarm":
                self._store_run(messages, run, results)
                run = []
                results[index] = self._handle_alarm_safely(topic, payload)
                continue
            try:
                record = payloads.PARSERS[where.leaf](payload)
            except Exception:
                # Invalid (or a bug in validation): handle() says which, once, outside the transaction.
                results[index] = self.handle(topic, payload)
                continue
            run.append(_Parsed(index, topic, where.leaf, where.device_id, record))
        self._store_run(messages, run, results)
        return results

    def _handle_alarm_safely(self, topic: str, payload: bytes) -> Outcome | None:
        try:
            return self.handle(topic, payload)
        except Exception:
            log.exception("storing the alarm on %s failed; it stays on the broker", topic)
            return None

    def _store_run(
        self, messages: Sequence[tuple[str, bytes]], run: list[_Parsed], results: list[Outcome | None]
    ) -> None:
        if not run:
            return
        try:
            outcomes, rejected, changed = self._store_together(run)
        except Exception:
            log.exception("storing %d messages together failed; storing them one by one", len(run))
            for item in run:
                results[item.index] = self.handle(*messages[item.index])
            return
        log.debug("stored %d messages in one transaction", len(run))
        for item, outcome in zip(run, outcomes, strict=True):
            results[item.index] = outcome
        for topic, device_id in rejected:
            with logs.about(device_id=device_id):
                self._reject(topic, "unknown_device", f"{device_id} is not in the registry")
        for device_id in sorted(changed):
            self._changed(device_id)

    def _store_together(self, run: list[_Parsed]) -> tuple[list[Outcome], list[tuple[str, str]], set[str]]:
        """One transaction for the whole run: (an Outcome per message, the unknown devices' messages, the
        devices whose health the rules should look at now).

        A device that sent only heartbeats in the run takes the lean path (`_store_beats`: its row read and
        written as columns, the heartbeats inserted in bulk); a device that sent anything else takes the
        general one (`_store_mixed`: the ORM), with its heartbeats, in arrival order."""
        # Audit events (trail points of open alarms) are written at the end: the chain stays free for an
        # alarm's transaction while this one works.
        with session_scope(self.engine) as session, session.no_autoflush, audit.deferred(session):
            now = self.clock()
            # Locked in one order, in one statement (PostgreSQL), so that two workers never wait for each
            # other in a circle.
            table = Device.__table__
            query = (
                sa_select(*(table.c[name] for name in _DeviceState._fields))
                .where(table.c.device_id.in_(sorted({item.device_id for item in run})))
                .order_by(table.c.device_id)
                .with_for_update()
            )
            known = {row.device_id: _DeviceState(*row) for row in session.connection().execute(query)}
            mixed = {item.device_id for item in run if item.leaf != "tele"}
            found: dict[int, Outcome] = {}
            rejected: list[tuple[str, str]] = []
            for item in run:
                if item.device_id not in known:
                    rejected.append((item.topic, item.device_id))
                    found[item.index] = Outcome(item.topic, invalid="unknown_device")
            beats = [i for i in run if i.device_id in known and i.device_id not in mixed]
            others = [i for i in run if i.device_id in known and i.device_id in mixed]
            changed = self._store_mixed(session, others, now, found)
            changed |= self._store_beats(session, beats, known, now, found)
        return [found[item.index] for item in run], rejected, changed

    def _store_mixed(
        self, session: Session, run: list[_Parsed], now: datetime, found: dict[int, Outcome]
    ) -> set[str]:
        """The messages of devices that sent more than heartbeats, through the ORM, in arrival order."""
        if not run:
            return set()
        ids = sorted({item.device_id for item in run})
        devices = {d.device_id: d for d in session.exec(select(Device).where(col(Device.device_id).in_(ids)))}
        beats = [(item.device_id, item.record) for item in run if item.leaf == "tele"]
        seen = self._stored_heartbeats(session, beats)
        located = {device_id for device_id, tele in beats if tele.loc is not None}
        open_alarms = self._open_alarms(session, located)
        rows: list[dict[str, Any]] = []
        changed: set[str] = set()
        for item in run:
            with logs.about(device_id=item.device_id):
                device = devices[item.device_id]
                if item.leaf == "tele":
                    key = (item.device_id, item.record.boot, item.record.up)
                    if key in seen:
                        found[item.index] = Outcome(item.topic, "tele", item.device_id, duplicate=True)
                        continue
                    seen.add(key)
                    self._touch(device, now)
                    # Only a heartbeat with a fix adds to the trails of the device's open alarms.
                    if item.record.loc is not None and item.device_id not in open_alarms:
                        open_alarms[item.device_id] = alarms.open_alarms(session, item.device_id)
                    trails = open_alarms.get(item.device_id, [])
                    self._apply_heartbeat(session, device, item.record, now, trails)
                    rows.append(self._heartbeat_row(item.device_id, item.record, now))
                else:
                    self._touch(device, now)
                    self._apply(session, device, item.leaf, item.record, now)
                    # An event may have made a placeholder alarm: later heartbeats look again.
                    open_alarms.pop(item.device_id, None)
                changed.add(item.device_id)
                found[item.index] = Outcome(item.topic, item.leaf, item.device_id)
        session.add_all(devices.values())
        session.flush()
        if rows:
            session.connection().execute(_insert_heartbeats(self.engine.dialect.name), rows)
        return changed

    def _store_beats(
        self,
        session: Session,
        run: list[_Parsed],
        known: dict[str, _DeviceState],
        now: datetime,
        found: dict[int, Outcome],
    ) -> set[str]:
        """Heartbeats of devices that sent nothing else in the run: inserted in bulk (a duplicate is the
        row the insert skips), then each device's latest state written in place, once."""
        if not run:
            return set()
        rows = [self._heartbeat_row(item.device_id, item.record, now) for item in run]
        new_keys = self._insert_new_heartbeats(session, rows)
        latest: dict[str, payloads.Telemetry] = {}
        fixed_at: dict[str, datetime] = {}
        located: list[_Parsed] = []
        for item in run:
            tele = item.record
            key = (item.device_id, tele.boot, tele.up)
            if key not in new_keys:
                found[item.index] = Outcome(item.topic, "tele", item.device_id, duplicate=True)
                continue
            new_keys.discard(key)  # a second copy in the same run is a duplicate too
            last = latest.get(item.device_id)
            if last is None or is_newer(last.boot, last.up, tele):
                latest[item.device_id] = tele
            if tele.loc is not None:
                fixed_at[item.device_id] = fix_time(tele, now)
                located.append(item)
            found[item.index] = Outcome(item.topic, "tele", item.device_id)
        # Only a heartbeat with a fix adds to the trails of the device's open alarms.
        open_alarms = self._open_alarms(session, {item.device_id for item in located})
        for item in located:
            for alarm in open_alarms.get(item.device_id, []):
                alarms.add_trail_point(session, alarm, at=now, loc=item.record.loc, source="tele")
        changed: set[str] = set()
        updates = []
        for device_id, tele in latest.items():
            due = routine_recheck(known[device_id], tele, now)
            if due is None:
                changed.add(device_id)
            updates.append(
                {
                    "b_id": device_id,
                    "b_now": now,
                    "b_boot": tele.boot,
                    "b_up": tele.up,
                    "b_fw": tele.fw,
                    "b_cfg": tele.cfg,
                    "b_fix": fixed_at.get(device_id),
                    "b_due": RECHECK if due is None else due,
                }
            )
        self._latest_update.run(session.connection(), updates)
        return changed

    def _insert_new_heartbeats(
        self, session: Session, rows: list[dict[str, Any]]
    ) -> set[tuple[str, int, int]]:
        """Insert the rows, skipping those stored already (same key); the keys of those inserted.

        Where the driver runs the bulk insert itself (SQLite), it is tried first inside a savepoint: when
        it inserted every row (no duplicate: nearly always), those are the keys. Otherwise it is undone
        and the insert that answers the keys of its rows runs instead."""
        connection = session.connection()
        if self._beats_insert.direct:
            connection.exec_driver_sql("SAVEPOINT heartbeats")
            if self._beats_insert.run(connection, rows) == len(rows):
                connection.exec_driver_sql("RELEASE heartbeats")
                return {(row["device_id"], row["boot"], row["up"]) for row in rows}
            connection.exec_driver_sql("ROLLBACK TO heartbeats")
            connection.exec_driver_sql("RELEASE heartbeats")
        statement = _insert_new_heartbeats(self.engine.dialect.name)
        return {tuple(row) for row in connection.execute(statement, rows)}

    @staticmethod
    def _stored_heartbeats(
        session: Session, beats: Sequence[tuple[str, payloads.Telemetry]]
    ) -> set[tuple[str, int, int]]:
        """The keys (device, boot, up) of these heartbeats that are stored already."""
        if not beats:
            return set()
        keys = {(device_id, tele.boot, tele.up) for device_id, tele in beats}
        found = session.exec(
            select(Heartbeat.device_id, Heartbeat.boot, Heartbeat.up).where(
                tuple_(col(Heartbeat.device_id), col(Heartbeat.boot), col(Heartbeat.up)).in_(list(keys))
            )
        )
        return {(device_id, boot, up) for device_id, boot, up in found}

    @staticmethod
    def _open_alarms(session: Session, device_ids: set[str]) -> dict[str, list[Alarm]]:
        """The open alarms of these devices (their trails grow with every fix), in one query."""
        if not device_ids:
            return {}
        found: dict[str, list[Alarm]] = {device_id: [] for device_id in device_ids}
        rows = session.exec(
            select(Alarm).where(col(Alarm.device_id).in_(sorted(device_ids)), Alarm.state != "resolved")
        )
        for alarm in rows:
            found[alarm.device_id].append(alarm)
        return found

    def _apply(self, session: Session, device: Device, leaf: str, record: Any, now: datetime) -> None:
        """What a status, an event or a command result changes (a heartbeat has its own path)."""
        if leaf == "status":
            self._apply_status(device, record)
        elif leaf == "evt":
            self._apply_event(session, device, record, now)
        else:
            row = commands.record_result(session, device_id=device.device_id, result=record, now=now)
            if row is not None and row.cmd == "locate" and commands.located_by(record) is not None:
                note_fix(device, now)  # the pendant's answer to `locate` is a fresh fix
            log.info("cmd/res from %s: %s ok=%s", device.device_id, record.id, record.ok)

    def _changed(self, device_id: str) -> None:
        if self.on_change is not None:
            self.on_change(device_id)

    def _reject(self, topic: str, reason: str, detail: str) -> Outcome:
        self._count(reason)
        log.warning("rejected the message on %s: %s (%s)", topic, reason, detail)
        return Outcome(topic, invalid=reason)

    def _count(self, reason: str) -> None:
        with self._counts_lock:
            self.invalid_counts[reason] += 1

    def _store_alarm(self, topic: str, device_id: str, alarm: payloads.Alarm, raw: bytes) -> Outcome:
        # Two tries: a second backend (or a racing insert) may store the same alarm between our
        # look-up and our commit; the unique constraint then turns our insert into a duplicate.
        for attempt in (1, 2):
            try:
                with session_scope(self.engine) as session:
                    stored, new, completed, moved = self._store_alarm_once(session, device_id, alarm, raw)
                    state, ref, resends, collision = (
                        stored.state,
                        stored.ref,
                        stored.resends,
                        stored.id_collision,
                    )
                break
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("alarm %s/%s was stored concurrently; looking again", device_id, alarm.alarm_id)
        fields = {"alarm_id": ref}
        if new and collision:
            log.warning(
                "alarm id %s/%s was used before for another alarm (a pendant that lost its state?): "
                "stored as a new alarm %s",
                device_id,
                alarm.alarm_id,
                ref,
                extra=fields,
            )
        fate = "stored" if new else f"duplicate #{resends}, acked again"
        if new and completed:
            fate = "stored (its fallback report came first)"
        if moved:
            fate += ", its new fix added to the trail"
        if new and alarm.set_aside:
            # Counted once per alarm (not per resend): how many alarms came with each field broken.
            for item in alarm.set_aside:
                self._count(f"set_aside:{item.path}:{item.reason}")
            log.warning(
                describe_alarm(device_id, alarm, ref=ref, fate=fate + " with fields set aside"), extra=fields
            )
        else:
            log.info(describe_alarm(device_id, alarm, ref=ref, fate=fate), extra=fields)
        ack = payloads.AlarmAck(alarm_id=alarm.alarm_id, state=state)
        reply = Reply(payloads.topic_for(device_id, "alarm/ack"), payloads.encode_alarm_ack(ack))
        return Outcome(topic, "alarm", device_id, replies=(reply,), new=new)

    def _store_alarm_once(
        self, session: Session, device_id: str, alarm: payloads.Alarm, raw: bytes
    ) -> tuple[Alarm, bool, bool, bool]:
        """(the alarm, stored now, whether it filled in a placeholder, whether a resend's new fix joined
        its trail)."""
        now = self.clock()
        # Locked (PostgreSQL): alarms of one device are stored one at a time.
        device = session.get(Device, device_id, with_for_update=True)
        if device is None:
            # The broker authenticated it, so the id is real (e.g. a database restored from an old
            # backup): losing the alarm would be worse than a row for a device we do not know.
            self._count("unknown_device_alarm")
            log.error(
                "alarm from %s, which is not in the registry: storing it and adding the device", device_id
            )
            device = Device(device_id=device_id, loan_state="provisioned", first_seen_at=now)
        self._touch(device, now)
        if alarm.loc is not None:
            note_fix(device, fix_time(alarm, now))
        session.add(device)
        earlier = self._alarms_with_id(session, device_id, alarm.alarm_id)
        for stored in earlier:
            if is_placeholder(stored):
                fresh = self._new_alarm(device_id, alarm, raw, now, occurrence=stored.occurrence)
                # Everything the pendant sent; its place in the queue, its state and when we first
                # heard of it (the escalation clock) stay.
                for name in SENT_FIELDS:
                    setattr(stored, name, getattr(fresh, name))
                session.add(stored)
                self._announce(session, device, stored, alarm, now, completes=True)
                return stored, True, True, False
            if same_alarm(stored, alarm):
                stored.resends += 1
                session.add(stored)
                return stored, False, False, self._trail_resent_fix(session, stored, alarm, now)
        stored = self._new_alarm(device_id, alarm, raw, now, occurrence=len(earlier))
        session.add(stored)
        session.flush()
        self._announce(session, device, stored, alarm, now)
        return stored, True, False, False

    @staticmethod
    def _trail_resent_fix(session: Session, stored: Alarm, alarm: payloads.Alarm, now: datetime) -> bool:
        """A resend that carries a fix the alarm does not hold yet (the pendant had a newer one when it
        sent again): that fix joins the alarm's trail, once. The alarm itself stays as first received."""
        loc = alarm.loc
        if loc is None:
            return False
        fix = fix_of(loc.lat, loc.lon, loc.acc, loc.tst)
        known = {fix_of(stored.lat, stored.lon, stored.acc, stored.loc_time)}
        known |= {
            fix_of(p.lat, p.lon, p.acc, p.loc_time)
            for p in session.exec(
                select(AlarmLocation).where(
                    AlarmLocation.alarm_pk == stored.id, col(AlarmLocation.source).in_(("alarm", "resend"))
                )
            )
        }
        if fix in known:
            return False
        alarms.add_trail_point(session, stored, at=now, loc=loc, source="resend")
        return True

    @staticmethod
    def _alarms_with_id(session: Session, device_id: str, alarm_id: str) -> list[Alarm]:
        return list(
            session.exec(
                select(Alarm)
                .where(Alarm.device_id == device_id, Alarm.alarm_id == alarm_id)
                .order_by(col(Alarm.occurrence))
            )
        )

    def _announce(
        self,
        session: Session,
        device: Device,
        stored: Alarm,
        alarm: payloads.Alarm,
        now: datetime,
        *,
        completes: bool = False,
    ) -> None:
        """What a stored alarm sets off: its audit event, its first trail point, the webhook."""
        data = {
            "ref": stored.ref,
            "content": chain.digest(audit.alarm_content(stored)),
            "id_collision": stored.id_collision,
        }
        if completes:
            data["completes"] = True
        audit.append(
            session, kind="alarm_received", at=now, device_id=device.device_id, alarm_pk=stored.id, data=data
        )
        if alarm.loc is not None:
            alarms.add_trail_point(session, stored, at=now, loc=alarm.loc, source="alarm")
        if alarm.test:
            device.last_test_alarm_at = now
        notify.enqueue(
            session,
            event="alarm",
            body=alarms.webhook_body(stored, device),
            now=now,
            device_id=device.device_id,
        )

    def _new_alarm(
        self, device_id: str, alarm: payloads.Alarm, raw: bytes, now: datetime, *, occurrence: int
    ) -> Alarm:
        loc = alarm.loc
        stored = Alarm(
            device_id=device_id,
            alarm_id=alarm.alarm_id,
            occurrence=occurrence,
            id_collision=occurrence > 0,
            kind=alarm.kind,
            test=alarm.test,
            state="received",
            device_time=alarm.tst,
            received_at=now,
            lat=loc.lat if loc else None,
            lon=loc.lon if loc else None,
            acc=loc.acc if loc else None,
            loc_time=loc.tst if loc else None,
            loc_src=loc.src if loc else None,
            cell=(
                {
                    "mcc": alarm.cell.mcc,
                    "mnc": alarm.cell.mnc,
                    "lac": alarm.cell.lac,
                    "cid": alarm.cell.cid,
                    "rat": alarm.cell.rat,
                }
                if alarm.cell
                else None
            ),
            batt=alarm.batt,
            payload=raw.decode(),
        )
        for flag, value in set_aside_flags(alarm).items():
            setattr(stored, flag, value)
        return stored

    @staticmethod
    def _touch(device: Device, now: datetime) -> None:
        if device.first_seen_at is None:
            device.first_seen_at = now
        device.last_seen_at = now

    def _apply_status(self, device: Device, status: payloads.Status) -> None:
        if status.online:
            if status.boot != device.boot:
                device.heartbeat_up = None
            device.online, device.sess, device.boot, device.fw = True, status.sess, status.boot, status.fw
            log.info(
                "%s online (boot %d, sess %d, fw %s)", device.device_id, status.boot, status.sess, status.fw
            )
        elif will_is_stale(device.sess, status.sess):
            log.info("%s: ignored a stale will (sess %d < %d)", device.device_id, status.sess, device.sess)
        else:
            device.online, device.sess = False, status.sess
            log.info("%s offline (sess %d)", device.device_id, status.sess)

    def _store_heartbeat(
        self, session: Session, device: Device, tele: payloads.Telemetry, now: datetime
    ) -> None:
        self._apply_heartbeat(session, device, tele, now, alarms.open_alarms(session, device.device_id))
        session.add(Heartbeat(**self._heartbeat_row(device.device_id, tele, now)))

    @staticmethod
    def _apply_heartbeat(
        session: Session, device: Device, tele: payloads.Telemetry, now: datetime, open_alarms: list[Alarm]
    ) -> None:
        """The device's latest state, in place, and a trail point on each of its open alarms."""
        if is_newer(device.boot, device.heartbeat_up, tele):
            device.boot, device.heartbeat_up = tele.boot, tele.up
            device.fw, device.config_applied_rev = tele.fw, tele.cfg
        device.last_heartbeat_at = now
        if device.online is None:
            device.online = True
        loc = tele.loc
        if loc is not None:
            device.last_fix_at = fix_time(tele, now)
            for alarm in open_alarms:
                alarms.add_trail_point(session, alarm, at=now, loc=loc, source="tele")

    @staticmethod
    def _heartbeat_row(device_id: str, tele: payloads.Telemetry, now: datetime) -> dict[str, Any]:
        """The history row of one heartbeat, as column values."""
        loc = tele.loc
        return {
            "device_id": device_id,
            "received_at": now,
            "device_time": tele.tst,
            "boot": tele.boot,
            "up": tele.up,
            "batt": tele.batt,
            "mv": tele.mv,
            "chg": tele.chg,
            "rssi": tele.rssi,
            "reg": tele.reg,
            "rat": tele.rat,
            "lat": loc.lat if loc else None,
            "lon": loc.lon if loc else None,
            "acc": loc.acc if loc else None,
            "loc_time": loc.tst if loc else None,
            "fw": tele.fw,
            "cfg": tele.cfg,
            "out": tele.out,
            "heap": tele.heap,
        }

    def _apply_event(self, session: Session, device: Device, evt: payloads.Event, now: datetime) -> None:
        fields = evt.fields
        if evt.evt == "config_applied" and isinstance(fields.get("rev"), int):
            device.config_applied_rev, device.config_error = fields["rev"], None
        elif evt.evt == "config_rejected":
            device.config_error = f"rev {fields.get('rev')}: {fields.get('field')}: {fields.get('err')}"[:200]
        raw_loc = fields.get("loc")
        if isinstance(raw_loc, dict):
            try:
                loc = payloads.parse_location(raw_loc)
            except InvalidPayload as exc:
                self._count(exc.reason)
                log.warning("ignored the position in %s from %s: %s", evt.evt, device.device_id, exc.detail)
            else:
                for alarm in alarms.open_alarms(session, device.device_id):
                    alarms.add_trail_point(session, alarm, at=now, loc=loc, source="evt")
        if evt.evt == "fallback":
            self._apply_fallback(session, device, evt, now)
        # The event's name only: its fields may hold a position.
        log.info("evt %s from %s", evt.evt, device.device_id)

    def _apply_fallback(self, session: Session, device: Device, evt: payloads.Event, now: datetime) -> None:
        try:
            report = payloads.parse_fallback(evt)
        except InvalidPayload as exc:
            self._count(exc.reason)
            log.warning("ignored the fallback report from %s: %s", device.device_id, exc.detail)
            return
        earlier = self._alarms_with_id(session, device.device_id, report.alarm_id)
        # The newest alarm with that id: an older one with the same id belongs to a pendant's past life.
        stored = earlier[-1] if earlier else self._placeholder(session, device, report.alarm_id, now)
        steps = report.steps()
        if stored.fallback == steps:
            return  # the same report again (a redelivery): recorded already
        stored.fallback, stored.fallback_at = steps, now
        session.add(stored)
        audit.append(
            session,
            kind="alarm_fallback",
            at=now,
            device_id=device.device_id,
            alarm_pk=stored.id,
            # No phone number: a digest of the report, and what it says in counts.
            data={
                "ref": stored.ref,
                "report": chain.digest(steps),
                "sms": len(report.sms),
                "sms_failed": len(report.sms_failed),
                "calls": report.calls,
                "answered": report.answered is not None,
                "call_s": report.call_s,
                "rounds": report.rounds,
            },
        )
        log.info(describe_fallback(stored.ref, report))

    def _placeholder(self, session: Session, device: Device, alarm_id: str, now: datetime) -> Alarm:
        """An alarm we know of only from its fallback report: in the queue now, filled in when it comes."""
        stored = Alarm(
            device_id=device.device_id,
            alarm_id=alarm_id,
            kind=PLACEHOLDER_KIND,
            state="received",
            received_at=now,
            payload="",
        )
        session.add(stored)
        session.flush()
        audit.append(
            session,
            kind="alarm_received",
            at=now,
            device_id=device.device_id,
            alarm_pk=stored.id,
            data={
                "ref": stored.ref,
                "content": chain.digest(audit.alarm_content(stored)),
                "id_collision": False,
                "placeholder": True,
            },
        )
        notify.enqueue(
            session,
            event="alarm",
            body=alarms.webhook_body(stored, device, placeholder=True),
            now=now,
            device_id=device.device_id,
        )
        log.warning(
            "ALARM %s known only from its fallback report (the alarm did not arrive): queued it, "
            "to be filled in when the alarm comes",
            stored.ref,
        )
        return stored
