"""After a broker crash: find out what the broker lost, and give it back.

The broker saves its state every few tens of seconds (pendant_backend.broker), so a crash loses what
changed since its last save. Alarms need nothing from here: the pendant resends each one until its
`alarm/ack`, which the backend sends only after the commit. The rest (the retained configs, the
commands queued for pendants, the operators' acks) comes from the `outbound` table, and a retained mark
on the broker says how much of that table the broker holds:

    {"seq": 1234, "at": "<created_at of outbound message 1234>"}

means that the broker had taken every outbound message up to id 1234 before it took the mark. The broker
saves its state whole, so a mark that survived a crash vouches for every message before it. On every new
connection of the backend's link, before writing any mark, the backend reads the mark back (`assess`):
- a mark naming a message the database holds: the messages after it are sent again;
- no mark (a broker that lost everything, or its first start), one naming a message the database does
  not hold (another database, a restored backup), or a mark whose write crossed a reconnect: every
  device's config is published again and every unanswered command is sent again.
Then it writes a new mark, and moves it forward every MARK_EVERY_S while the broker takes messages.

Configs published again are paced (at most WINDOW not yet taken, CONFIGS_PER_S): an alarm's ack, which
the link publishes on its own thread, never queues behind them, and 10,000 pendants are not sent their
config all at once. Everything runs on a thread of its own, so the rules (escalations) never wait for it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import audit, commands, configs, outbound
from pendant_backend.broker import MARK_TOPIC, BrokerSecrets
from pendant_backend.broker_endpoint import backend_endpoint
from pendant_backend.db import session_scope
from pendant_backend.models import Device, Outbound, utc_now
from pendant_backend.mqtt_link import MqttError, MqttLink, RequestSession
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2
MARK_EVERY_S = 5.0
RETRY_S = 5.0
READ_TIMEOUT_S = 10.0
# Configs handed to the link and not yet taken by the broker; the link's MQTT client keeps 20 messages
# in flight, so acks always find room beside these.
WINDOW = 10
CONFIGS_PER_S = 200.0


@dataclass(frozen=True)
class Mark:
    """How much of the outbound table the broker holds: every message up to `seq`, created at `at`."""

    seq: int
    at: str | None


@dataclass(frozen=True)
class Plan:
    """What to send again: everything (`after` None), or the outbound messages after `after`."""

    after: int | None
    reason: str


class Interrupted(Exception):
    """The link's connection changed, or the service stops: the recovery starts over."""


def encode_mark(mark: Mark) -> bytes:
    """Pure: the payload of a mark."""
    return json.dumps({"seq": mark.seq, "at": mark.at}, separators=(",", ":")).encode()


def parse_mark(payload: bytes) -> Mark | None:
    """Pure: a mark from its payload, or None if it is not one."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    seq, at = value.get("seq"), value.get("at")
    if type(seq) is not int or seq < 0 or not (at is None or isinstance(at, str)):
        return None
    return Mark(seq=seq, at=at)


def assess(mark: Mark | None, *, stored_at: str | None, doubtful: bool) -> Plan:
    """Pure: what to send again, given the mark the broker holds, the `created_at` of the outbound message
    it names as the database has it (None if it has no such message), and whether a mark of ours was
    written across a reconnect (it may have reached a broker that lacks what it vouches for)."""
    if mark is None:
        return Plan(None, "the broker holds no mark: it lost its state, or never had one")
    if doubtful:
        return Plan(None, "a mark was written while the link reconnected")
    if mark.seq > 0 and stored_at != mark.at:
        return Plan(None, f"the mark names outbound message {mark.seq}, which this database does not hold")
    return Plan(mark.seq, f"the broker holds the outbound messages up to {mark.seq}")


def created_at_text(value: datetime | None) -> str | None:
    """The form a message's `created_at` takes in a mark."""
    return value.isoformat() if value is not None else None


class BrokerRecovery:
    """The thread that reads the mark on every new connection of `link`, sends again what the broker lost
    and keeps the mark up to date. `admin` reads the mark back on a connection of its own (the backend's
    account is bound to the link's client id)."""

    def __init__(self, engine: Engine, settings: Settings, *, link: MqttLink, admin: BrokerSecrets) -> None:
        self.engine, self.settings, self.link, self.admin = engine, settings, link, admin
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Of the link's connections: the last one checked, and the one each mark write was handed on.
        self._checked: int | None = None
        self._pending: tuple[int, Mark] | None = None
        self._confirmed: Mark | None = None
        self._last_mark = 0.0
        self._in_flight = 0
        # For tests and the logs: how many recoveries ran, and the last one's plan and counts.
        self.recoveries = 0
        self.last: dict[str, object] | None = None

    def start(self) -> None:
        """Run in the background until `stop()`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="broker-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread (a recovery under way starts over at the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def idle(self) -> bool:
        """True once the current connection was checked and the mark written on it was taken."""
        with self._lock:
            return self._checked == self.link.connect_count and self._pending is None

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._step()
            except Interrupted:
                continue
            except MqttError as exc:
                log.warning("cannot read the broker's mark (%s); trying again in %.0f s", exc, RETRY_S)
                self._stop.wait(RETRY_S)
            except Exception:
                log.exception("the broker recovery failed; trying again in %.0f s", RETRY_S)
                self._stop.wait(RETRY_S)

    def _step(self) -> None:
        if not self.link.subscribed.is_set():
            return
        count = self.link.connect_count
        if count != self._checked:
            self._recover(count)
            self._checked = count
        elif time.monotonic() - self._last_mark >= MARK_EVERY_S:
            with self._lock:
                pending = self._pending is not None
            if not pending:
                self._write_mark(count, only_if_moved=True)

    # ---- one recovery ---------------------------------------------------------------------------------

    def _recover(self, count: int) -> None:
        mark = self.read_mark()
        self._still_on(count)
        with self._lock:
            doubtful = self._pending is not None and self._pending[0] != count
            if doubtful:
                self._pending = None
        with Session(self.engine) as session:
            named = session.get(Outbound, mark.seq) if mark is not None and mark.seq > 0 else None
            plan = assess(
                mark, stored_at=created_at_text(named.created_at if named else None), doubtful=doubtful
            )
        now = utc_now()
        report: dict[str, object] = {"reason": plan.reason, "full": plan.after is None}
        with session_scope(self.engine) as session:
            if plan.after is None:
                report["commands"] = commands.send_unanswered_again(session, now=now)
            else:
                later = session.exec(
                    select(Outbound).where(col(Outbound.id) > plan.after, col(Outbound.sent_at).is_not(None))
                )
                skip = commands.answered_messages(session, later)
                report["messages"] = outbound.send_again_after(session, plan.after, skip_ids=skip)
            target = outbound.last_id(session)
        if plan.after is None:
            report["configs"] = self._republish_configs(count)
        self._wait_for_outbound(count, target)
        self._write_mark(count, only_if_moved=False)
        self._wait_for_mark(count)
        did_something = plan.after is None or bool(report.get("messages"))
        if did_something:
            self.recoveries += 1
            self.last = report
            with session_scope(self.engine) as session:
                audit.append(session, kind="broker_recovered", at=utc_now(), data=report)
            log.warning("broker recovery: %s; sent again: %s", plan.reason, _counts(report))
        else:
            log.info("the broker holds every message of ours (mark %s)", mark.seq if mark else None)

    def read_mark(self) -> Mark | None:
        """The mark the broker holds now, or None: subscribe to it on a connection of the admin account,
        then publish a probe to ourselves. The broker sends a retained message right after the SUBACK,
        before it handles our next PUBLISH, so once the probe is back, a mark that exists has come."""
        probe = json.dumps({"probe": secrets.token_hex(8)}).encode()
        seen: list[bytes] = []

        def is_probe(payload: bytes) -> bool:
            if payload == probe:
                return True
            seen.append(payload)
            return False

        with RequestSession(
            **backend_endpoint(self.settings).client_options(),
            username=self.admin.admin_username,
            password=self.admin.admin_password,
            topic=MARK_TOPIC,
            response_topic=MARK_TOPIC,
            timeout=READ_TIMEOUT_S,
        ) as session:
            session.call(probe, is_probe)
        return parse_mark(seen[-1]) if seen else None

    def _republish_configs(self, count: int) -> int:
        """Publish every active device's config again (its current `rev`), paced; returns how many."""
        with Session(self.engine) as session:
            order = configs.republish_order(session)
        chunk = max(1, WINDOW // 2)
        started, published = time.monotonic(), 0
        for start in range(0, len(order), chunk):
            while True:
                self._still_on(count)
                with self._lock:
                    room = self._in_flight + chunk <= WINDOW
                if room and published <= (time.monotonic() - started) * CONFIGS_PER_S:
                    break
                self._stop.wait(0.005)
            # A write transaction on the devices (FOR UPDATE; BEGIN IMMEDIATE on SQLite), held only while
            # the messages go into the link's queue: a config change commits before it (and we publish
            # its document) or after it (and its outbound message follows ours in the same queue), so
            # the retained config is never older than the database's.
            with session_scope(self.engine) as session:
                devices = session.exec(
                    select(Device)
                    .where(col(Device.device_id).in_(order[start : start + chunk]))
                    .with_for_update()
                )
                for device in devices:
                    message = configs.published_message(device)
                    if message is None:
                        continue
                    with self._lock:
                        self._in_flight += 1
                    self.link.publish(message[0], message[1], retain=True, on_taken=self._taken)
                    published += 1
        while True:
            self._still_on(count)
            with self._lock:
                if self._in_flight == 0:
                    return published
            self._stop.wait(0.01)

    def _taken(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def _wait_for_outbound(self, count: int, target: int) -> None:
        """Until the broker has taken every outbound message up to `target` (the rules thread sends them)."""
        while True:
            self._still_on(count)
            with Session(self.engine) as session:
                if outbound.high_water(session) >= target:
                    return
            self._stop.wait(0.2)

    def _wait_for_mark(self, count: int) -> None:
        while True:
            self._still_on(count)
            with self._lock:
                if self._pending is None:
                    return
            self._stop.wait(0.01)

    def _still_on(self, count: int) -> None:
        if self._stop.is_set() or self.link.connect_count != count or not self.link.connected:
            with self._lock:
                self._in_flight = 0
            raise Interrupted

    # ---- the mark ---------------------------------------------------------------------------------------

    def _write_mark(self, count: int, *, only_if_moved: bool) -> None:
        """Publish (retained) a mark for every message the broker has taken so far. Computed before it is
        handed to the link, so everything it vouches for was taken before it."""
        with Session(self.engine) as session:
            seq = outbound.high_water(session)
            row = session.get(Outbound, seq) if seq > 0 else None
            mark = Mark(seq=seq, at=created_at_text(row.created_at if row else None))
        self._last_mark = time.monotonic()
        if only_if_moved and mark == self._confirmed:
            return
        with self._lock:
            self._pending = (count, mark)

        def confirm() -> None:
            # On the link's thread: taken on the connection it was handed on, or it stays doubtful.
            with self._lock:
                if self._pending == (count, mark) and self.link.connect_count == count:
                    self._pending, self._confirmed = None, mark

        self.link.publish(MARK_TOPIC, encode_mark(mark), retain=True, on_taken=confirm)


def _counts(report: dict[str, object]) -> str:
    parts = [f"{report[key]} {key}" for key in ("configs", "commands", "messages") if key in report]
    return ", ".join(parts) or "nothing"
