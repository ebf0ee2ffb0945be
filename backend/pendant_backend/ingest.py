"""Stores what arrives from the pendants (an alarm once, whatever the duplicates) and says what to answer.

`Ingest.handle(topic, payload)` is the whole interface: it validates, stores, and returns an `Outcome`
with the replies to publish. It knows nothing of MQTT. An invalid message is logged with its topic,
counted by reason and answered with nothing. A failure to store an alarm raises, so that the caller
leaves the message on the broker; a failure on any other topic is logged and counted, never raised.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from pendant_backend import payloads
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


def describe_alarm(device_id: str, alarm: payloads.Alarm, *, new: bool, resends: int = 0) -> str:
    """One readable line for the log: who, what, when, where."""
    when = (
        datetime.fromtimestamp(alarm.tst, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if alarm.tst is not None
        else "time unknown"
    )
    if alarm.loc is not None:
        where = f"at {alarm.loc.lat:.6f},{alarm.loc.lon:.6f} ±{alarm.loc.acc} m"
    elif alarm.cell is not None:
        c = alarm.cell
        where = f"no fix, cell {c.mcc}/{c.mnc} lac {c.lac} cid {c.cid} {c.rat}"
    else:
        where = "no position"
    batt = f"batt {alarm.batt}%" if alarm.batt is not None else "batt ?"
    what = f"{'TEST ' if alarm.test else ''}{alarm.kind}"
    fate = "stored" if new else f"duplicate #{resends}, acked again"
    return f"ALARM {device_id}/{alarm.alarm_id} {what}, raised {when}, {where}, {batt}: {fate}"


class Ingest:
    """Validates and stores device messages in the database behind `engine`."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock
        self._counts_lock = threading.Lock()
        self.invalid_counts: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Handle one message from the broker. Raises only if an alarm could not be stored."""
        try:
            where = payloads.parse_topic(topic)
            record = payloads.PARSERS[where.leaf](payload)
        except InvalidPayload as exc:
            return self._reject(topic, exc)
        except Exception:
            # A bug in validation. Raising would make the broker deliver the message again and again
            # (and stall ingest with it); the pendant keeps an unacked alarm and falls back to SMS.
            log.exception("the validation of the message on %s failed; dropping it", topic)
            self._count("validation_error")
            return Outcome(topic, invalid="validation_error")
        if where.leaf == "alarm":
            return self._store_alarm(topic, where.device_id, record, payload)
        try:
            with session_scope(self.engine) as session:
                device = self._touch_device(session, where.device_id)
                if where.leaf == "status":
                    self._apply_status(device, record)
                elif where.leaf == "tele":
                    self._store_heartbeat(session, device, record)
                else:
                    log.info("%s from %s: %s", where.leaf, where.device_id, record)
        except Exception as exc:
            log.exception("could not handle the message on %s", topic)
            self._count("handler_error")
            return Outcome(topic, where.leaf, where.device_id, error=f"{type(exc).__name__}: {exc}")
        return Outcome(topic, where.leaf, where.device_id)

    def _reject(self, topic: str, exc: InvalidPayload) -> Outcome:
        self._count(exc.reason)
        log.warning("rejected the message on %s: %s (%s)", topic, exc.reason, exc.detail)
        return Outcome(topic, invalid=exc.reason)

    def _count(self, reason: str) -> None:
        with self._counts_lock:
            self.invalid_counts[reason] += 1

    def _store_alarm(self, topic: str, device_id: str, alarm: payloads.Alarm, raw: bytes) -> Outcome:
        # Two tries: a second backend (or a racing insert) may store the same alarm between our
        # look-up and our commit; the unique constraint then turns our insert into a duplicate.
        for attempt in (1, 2):
            try:
                with session_scope(self.engine) as session:
                    self._touch_device(session, device_id)
                    stored = session.exec(
                        select(Alarm).where(Alarm.device_id == device_id, Alarm.alarm_id == alarm.alarm_id)
                    ).first()
                    if stored is None:
                        stored = self._new_alarm(device_id, alarm, raw)
                        session.add(stored)
                        new = True
                    else:
                        stored.resends += 1
                        session.add(stored)
                        new = False
                        if stored.payload != raw.decode():
                            log.warning(
                                "alarm %s/%s came again with another payload; the first is kept",
                                device_id,
                                alarm.alarm_id,
                            )
                    state, resends = stored.state, stored.resends
                break
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info(
                    "alarm %s/%s was stored concurrently; treating it as a duplicate",
                    device_id,
                    alarm.alarm_id,
                )
        log.info(describe_alarm(device_id, alarm, new=new, resends=resends))
        ack = payloads.AlarmAck(alarm_id=alarm.alarm_id, state=state)
        reply = Reply(payloads.topic_for(device_id, "alarm/ack"), payloads.encode_alarm_ack(ack))
        return Outcome(topic, "alarm", device_id, replies=(reply,), new=new)

    def _new_alarm(self, device_id: str, alarm: payloads.Alarm, raw: bytes) -> Alarm:
        loc = alarm.loc
        return Alarm(
            device_id=device_id,
            alarm_id=alarm.alarm_id,
            kind=alarm.kind,
            test=alarm.test,
            state="received",
            device_time=alarm.tst,
            received_at=self.clock(),
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

    def _touch_device(self, session: Session, device_id: str) -> Device:
        now = self.clock()
        device = session.get(Device, device_id)
        if device is None:
            # The broker authenticated it, so the id is real; losing its alarm would be worse than a
            # row for a device we did not provision here (e.g. a database restored from an old backup).
            log.warning("message from %s, which is not in the devices table: adding it", device_id)
            device = Device(device_id=device_id, first_seen_at=now)
        device.last_seen_at = now
        session.add(device)
        return device

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

    def _store_heartbeat(self, session: Session, device: Device, tele: payloads.Telemetry) -> None:
        device.boot, device.fw = tele.boot, tele.fw
        loc = tele.loc
        session.add(
            Heartbeat(
                device_id=device.device_id,
                received_at=self.clock(),
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
