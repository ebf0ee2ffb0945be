"""Stores what arrives from the pendants (an alarm once, whatever the duplicates) and says what to answer.

`Ingest.handle(topic, payload)` is the whole interface: it validates, stores, and returns an `Outcome`
with the replies to publish. It knows nothing of MQTT. An invalid message is logged with its topic,
counted by reason and answered with nothing. A failure to store an alarm raises, so that the caller
leaves the message on the broker; a failure on any other topic is logged and counted, never raised.

A message from a device id the database does not know is rejected (`unknown_device`), except an alarm:
the broker authenticated the sender, so the alarm is stored and acked all the same (losing it would be
worse), and counted and logged as `unknown_device_alarm`.

A pendant's `fallback` report (what its SMS and calls did) is kept on its alarm. A report that comes
before its alarm (the alarm failed to store, or this backend refused it) makes a placeholder alarm in the
queue at once: the pendant told us an alarm exists, and the alarm fills the placeholder in when it
arrives. A `cmd/res` is stored with the command it answers (pendant_backend.commands).

The log never carries a position or a phone number: logs travel to less protected systems than the
database.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pendant_backend import alarms, audit, chain, commands, notify, payloads
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, Device, Heartbeat, utc_now
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


def will_is_stale(last_birth_sess: int | None, will_sess: int) -> bool:
    """A will older than the last birth belongs to a connection the broker closed late: ignore it."""
    return last_birth_sess is not None and will_sess < last_birth_sess


def describe_alarm(device_id: str, alarm: payloads.Alarm, *, ref: str, fate: str) -> str:
    """One readable line for the log: who, what, when, and whether there is a fix, but never where."""
    when = (
        datetime.fromtimestamp(alarm.tst, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if alarm.tst is not None
        else "time unknown"
    )
    if alarm.loc is not None:
        where = f"fix ±{alarm.loc.acc} m"
    elif alarm.cell is not None:
        where = "no fix, cell only"
    else:
        where = "no position"
    batt = f"batt {alarm.batt}%" if alarm.batt is not None else "batt ?"
    what = f"{'TEST ' if alarm.test else ''}{alarm.kind}"
    return f"ALARM {ref} {what}, raised {when}, {where}, {batt}: {fate}"


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
    state) carries another alarm under the same id."""
    return (stored.kind, stored.test, stored.device_time) == (alarm.kind, alarm.test, alarm.tst)


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

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Handle one message from the broker. Raises only if an alarm could not be stored."""
        try:
            where = payloads.parse_topic(topic)
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
                self._touch(device, now)
                if where.leaf == "status":
                    self._apply_status(device, record)
                elif where.leaf == "tele":
                    self._store_heartbeat(session, device, record, now)
                elif where.leaf == "evt":
                    self._apply_event(session, device, record, now)
                else:
                    commands.record_result(session, device_id=device.device_id, result=record, now=now)
                    log.info("cmd/res from %s: %s ok=%s", device.device_id, record.id, record.ok)
                session.add(device)
        except Exception as exc:
            log.exception("could not handle the message on %s", topic)
            self._count("handler_error")
            return Outcome(topic, where.leaf, where.device_id, error=f"{type(exc).__name__}: {exc}")
        self._changed(where.device_id)
        return Outcome(topic, where.leaf, where.device_id)

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
                    stored, new, completed = self._store_alarm_once(session, device_id, alarm, raw)
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
        if new and collision:
            log.warning(
                "alarm id %s/%s was used before for another alarm (a pendant that lost its state?): "
                "stored as a new alarm %s",
                device_id,
                alarm.alarm_id,
                ref,
            )
        fate = "stored" if new else f"duplicate #{resends}, acked again"
        if new and completed:
            fate = "stored (its fallback report came first)"
        log.info(describe_alarm(device_id, alarm, ref=ref, fate=fate))
        ack = payloads.AlarmAck(alarm_id=alarm.alarm_id, state=state)
        reply = Reply(payloads.topic_for(device_id, "alarm/ack"), payloads.encode_alarm_ack(ack))
        return Outcome(topic, "alarm", device_id, replies=(reply,), new=new)

    def _store_alarm_once(
        self, session: Session, device_id: str, alarm: payloads.Alarm, raw: bytes
    ) -> tuple[Alarm, bool, bool]:
        """(the alarm, stored now, and whether it filled in a placeholder)."""
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
                return stored, True, True
            if same_alarm(stored, alarm):
                stored.resends += 1
                session.add(stored)
                return stored, False, False
        stored = self._new_alarm(device_id, alarm, raw, now, occurrence=len(earlier))
        session.add(stored)
        session.flush()
        self._announce(session, device, stored, alarm, now)
        return stored, True, False

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
        return Alarm(
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

    @staticmethod
    def _touch(device: Device, now: datetime) -> None:
        if device.first_seen_at is None:
            device.first_seen_at = now
        device.last_seen_at = now

    def _apply_status(self, device: Device, status: payloads.Status) -> None:
        if status.online:
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
        device.boot, device.fw, device.config_applied_rev = tele.boot, tele.fw, tele.cfg
        device.last_heartbeat_at = now
        if device.online is None:
            device.online = True
        loc = tele.loc
        if loc is not None:
            age_s = tele.tst - loc.tst if tele.tst is not None and loc.tst is not None else 0
            device.last_fix_at = now - timedelta(seconds=max(age_s, 0))
            for alarm in alarms.open_alarms(session, device.device_id):
                alarms.add_trail_point(session, alarm, at=now, loc=loc, source="tele")
        session.add(
            Heartbeat(
                device_id=device.device_id,
                received_at=now,
                device_time=tele.tst,
                boot=tele.boot,
                up=tele.up,
                batt=tele.batt,
                mv=tele.mv,
                chg=tele.chg,
                rssi=tele.rssi,
                reg=tele.reg,
                rat=tele.rat,
                lat=loc.lat if loc else None,
                lon=loc.lon if loc else None,
                acc=loc.acc if loc else None,
                loc_time=loc.tst if loc else None,
                fw=tele.fw,
                cfg=tele.cfg,
                out=tele.out,
                heap=tele.heap,
            )
        )

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
