"""Runs the backend until stopped: the alarm session (alarms one at a time, on a thread of their own), the
ingest session (everything else, in batches, shared with any `--ingest-only` workers), the rules thread
(health, escalation, messages to the pendants, retention, and the beat that tells the console ingest is
alive) and the webhook thread."""

from __future__ import annotations

import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pendant_backend import (
    BackendError,
    alarms,
    audit,
    leader,
    metrics,
    monitor,
    notify,
    outbound,
    payloads,
    recovery,
    retention,
    service_status,
)
from pendant_backend.broker import BrokerSecrets, ingest_subscriptions, load_secrets
from pendant_backend.broker_endpoint import backend_endpoint
from pendant_backend.db import engine_for, session_scope
from pendant_backend.ingest import Ingest, Outcome, Reply
from pendant_backend.models import utc_now
from pendant_backend.mqtt_link import BATCH_SIZE, RETRY_WITH_ALARMS_MAX_S, MqttLink, Priority
from pendant_backend.settings import Settings, secret_key

log = logging.getLogger(__name__)

# The alarm session's only subscription; no share: exactly one backend process holds it.
ALARM_SUBSCRIPTIONS = (payloads.topic_for("+", "alarm"),)
# Shared by every ingest worker (MQTT 5 shared subscriptions): each message reaches one of them.
INGEST_SUBSCRIPTIONS = ingest_subscriptions()
SUBSCRIPTIONS = ALARM_SUBSCRIPTIONS + INGEST_SUBSCRIPTIONS
# What the backend's one session subscribed to before issue 11: its persistent session keeps them,
# so the alarm session drops them, or it would receive every heartbeat too.
RETIRED_SUBSCRIPTIONS = tuple(
    payloads.topic_for("+", leaf) for leaf in payloads.DEVICE_TOPICS if leaf != "alarm"
)
# A worker's name becomes part of its client id (and so of its persistent session on the broker).
WORKER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
HEALTH_SWEEP_S = 30.0
# How long a thread that wants the interpreter waits before the running one must hand it over (Python's
# default is 5 ms). Every database call gives the interpreter up (a round trip to PostgreSQL, a step of
# SQLite) and must get it back from whichever thread is computing: with 5 ms, on PostgreSQL under a
# heartbeat flood, each of those waits cost up to 5 ms (docs/scaling.md has the runs with and without).
SWITCH_INTERVAL_S = 0.0005
RETENTION_EVERY = timedelta(hours=1)
# Ticks come at every device change too: beat at most this often, unless the broker link changed.
BEAT_EVERY_S = 1.0
NO_WEBHOOK_WARNING = (
    "no webhook configured: alarms reach only the console and the CLI, nobody is pushed an alarm or an "
    "escalation; set PENDANT_WEBHOOK_URL to the dispatch system's receiver"
)


class Rules:
    """One pass of everything time-driven, at a given `now`; the service calls `tick()` every few seconds
    and tests call it with a controlled clock."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        publish: Callable[..., None] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.engine, self.settings, self.publish, self.wake = engine, settings, publish, wake
        self._changed: set[str] = set()
        self._changed_lock = threading.Lock()
        # Outbound messages the broker has taken (id, when), recorded by the next tick: the PUBACK
        # arrives on the link's thread, which also stores and acks alarms and must not wait for the
        # database on their behalf (measured: with 10,000 configs to send on PostgreSQL, a commit per
        # PUBACK there held alarm acks back 5-12 s).
        self._taken: list[tuple[int, datetime]] = []
        self._handed = 0
        self._taken_lock = threading.Lock()
        self._last_sweep: datetime | None = None
        self._last_purge: datetime | None = None

    def device_changed(self, device_id: str) -> None:
        """Ingest saw something from this device: classify it at the next tick."""
        with self._changed_lock:
            self._changed.add(device_id)

    def tick(self, now: datetime) -> None:
        """Escalations, health (every monitored device at the first tick, as the settings may have
        changed; then the changed ones, and every HEALTH_SWEEP_S those due), outbound, retention."""
        alarms.escalate_due(
            self.engine, now=now, after_s=self.settings.escalate_after_s, max_count=self.settings.escalate_max
        )
        with self._changed_lock:
            changed, self._changed = self._changed, set()
        if self._last_sweep is None:
            monitor.evaluate(self.engine, now=now, settings=self.settings)
            self._last_sweep = now
        else:
            due = (now - self._last_sweep).total_seconds() >= HEALTH_SWEEP_S
            done = monitor.sweep(
                self.engine, now=now, settings=self.settings, changed=changed, due_until=now if due else None
            )
            for device_id in done.busy:  # changed while the pass looked: look again at the next tick
                self.device_changed(device_id)
            if due:
                self._last_sweep = now
        if self.publish is not None:
            self._publish_outbound(now)
        if self._last_purge is None or now - self._last_purge >= RETENTION_EVERY:
            retention.purge(
                self.engine,
                now=now,
                heartbeats_days=self.settings.retain_heartbeats_days,
                locations_days=self.settings.retain_locations_days,
            )
            self._last_purge = now

    def _publish_outbound(self, now: datetime) -> None:
        with self._taken_lock:
            taken, self._taken = self._taken, []
        outbound.mark_sent(self.engine, taken)
        waiting = outbound.due(self.engine, now=now)
        if not waiting:
            return
        outbound.mark_attempted(self.engine, [m.id for m in waiting], now=now)
        with self._taken_lock:
            self._handed = len(waiting)
        for message in waiting:
            self.publish(
                message.topic,
                message.payload.encode(),
                retain=message.retain,
                on_taken=lambda pk=message.id: self._was_taken(pk),
            )

    def _was_taken(self, outbound_id: int) -> None:
        """On the link's thread: note it, and once the last one handed over is taken, wake the rules so
        that they record them and send what waits next."""
        with self._taken_lock:
            self._taken.append((outbound_id, utc_now()))
            self._handed -= 1
            last = self._handed == 0
        if last and self.wake is not None:
            self.wake()


def check_worker_name(name: str) -> str:
    """A worker name as a client id suffix: lower-case letters, digits and dashes, at most 32."""
    if not WORKER_NAME.match(name):
        raise BackendError(
            f"the worker name {name!r} is not valid: use 1 to 32 lower-case letters, digits and dashes"
        )
    return name


class BackendService:
    """The backend: `start()`/`stop()` run it in the background, `run()` in the foreground until a signal.

    Two persistent MQTT sessions, each with its own thread: `link` carries the alarms (stored one at a
    time, so that an alarm's commit -> ack path stays as short as it can be) and what the backend
    publishes; `ingest_link` carries heartbeats, status, events and command results in batches, through
    a shared subscription. Alarms queued on the broker while the backend was down arrive when it starts,
    are stored once and acked.

    `ingest_only` makes an extra worker: only the ingest session (its client id names `worker`), no
    alarms, no rules, no webhooks. Exactly one process runs without it: a second one waits as a standby
    until it holds the active backend's lock (`pendant_backend.leader`, tried every `standby_poll_s`),
    then takes over the same sessions. Mosquitto keeps sending a share to a member that is offline with
    a persistent session (eclipse/mosquitto#1747), so a stopped worker's share waits for that worker;
    that is why alarms never go through a share. `clock` is for tests: the rules and ingest read time
    from it. `metrics_port`: where /metrics is served on 127.0.0.1 (0: not at all; None:
    PENDANT_METRICS_PORT, or not at all for an ingest-only worker, whose default would be the full
    backend's port).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        clock: Callable[[], datetime] = utc_now,
        ingest_only: bool = False,
        worker: str = "main",
        batch_size: int | None = None,
        standby_poll_s: float = leader.POLL_S,
        metrics_port: int | None = None,
    ) -> None:
        self.settings = settings
        self.standby_poll_s = standby_poll_s
        # Held by the active backend for as long as it runs (not by `--ingest-only` workers).
        self.lease: leader.Lease | None = None
        self._lost: str | None = None
        # Ends a standby's wait (and run()): set by stop(), a signal, or a lost lease.
        self._quit = threading.Event()
        self.engine = engine
        self.clock = clock
        self.ingest_only = ingest_only
        self.worker = check_worker_name(worker)
        self.batch_size = batch_size
        self.ingest: Ingest | None = None
        self.link: MqttLink | None = None
        self.ingest_link: MqttLink | None = None
        self.rules: Rules | None = None
        self.notifier: notify.Notifier | None = None
        self.recovery: recovery.BrokerRecovery | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._rules_thread: threading.Thread | None = None
        # Alarms first: a batch of heartbeats waits while the alarm session stores an alarm.
        self.priority = Priority()
        # The beat (pendant_backend.service_status): wall-clock times, as the console reads them.
        self.host = socket.gethostname()
        self.started_at: datetime | None = None
        self._last_beat: tuple[float, bool] | None = None
        self.metrics = metrics.BackendMetrics()
        default_port = 0 if ingest_only else settings.metrics_port
        self.metrics_port = default_port if metrics_port is None else metrics_port
        self.metrics.watch_links(lambda: {"alarm": self.link, "ingest": self.ingest_link})
        if not ingest_only:
            # Only while active (its alarm session open): a standby does not report the fleet twice.
            self.metrics.watch_store(
                lambda: self.engine if self.link is not None else None,
                escalate_after_s=settings.escalate_after_s,
                clock=self.clock,
            )

    def start(self) -> None:
        """Open (and migrate) the database and connect to the broker in the background. A full backend
        first waits, as a standby, until it holds the active backend's lock; `stop()` from another
        thread ends that wait, and nothing is started then."""
        self._quit.clear()
        self._begin()

    def _begin(self) -> None:
        if self.link is not None or self.ingest_link is not None:
            raise RuntimeError("the backend is already started")
        # Served from the start, a standby's wait included (Prometheus sees it up); a port in use is
        # logged at once, not at a takeover.
        self.metrics.serve(self.metrics_port)
        broker_secrets = load_secrets(self.settings)
        if not broker_secrets.ingest_username:
            raise BackendError(
                "the broker has no account for the ingest workers yet: restart it with `pendant broker run`"
            )
        if not self.ingest_only:
            # Before any session opens: the standby takes over the same client ids and persistent sessions.
            self.lease = self._take_lease()
            if self.lease is None:
                return
        try:
            self._open(broker_secrets)
        except BaseException:
            self._let_go()
            raise
        if self.lease is not None and self.lease.waited_s > 0:
            self._record_takeover(self.lease.waited_s)

    def _take_lease(self) -> leader.Lease | None:
        # The engine's URL when one was given (tests), with its password: the lock connects on its own.
        url = (
            self.settings.db_url
            if self.engine is None
            else self.engine.url.render_as_string(hide_password=False)
        )
        lease = leader.acquire(url, self._quit, poll_s=self.standby_poll_s, on_lost=self._lease_lost)
        if lease is not None and lease.waited_s > 0:
            log.warning(
                "took over as the active backend after waiting %.1f s (%s)", lease.waited_s, lease.what
            )
        return lease

    def _lease_lost(self) -> None:
        """On the lease's thread: another backend may be active now, so this one must not be (run() ends)."""
        self._lost = self.lease.what if self.lease is not None else "the active backend's lock"
        self._quit.set()

    def _let_go(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def _record_takeover(self, waited_s: float) -> None:
        try:
            with session_scope(self.engine) as session:
                data = {"host": self.host, "waited_s": round(waited_s, 1)}
                audit.append(session, kind="backend_took_over", at=utc_now(), data=data)
        except Exception:
            # The log line above says it; the audit event is a record, not a condition of ingest.
            log.exception("could not record the takeover in the audit chain")

    def _open(self, broker_secrets: BrokerSecrets) -> None:
        if self.engine is None:
            self.engine = engine_for(self.settings)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        endpoint = backend_endpoint(self.settings)
        self.ingest = Ingest(self.engine, clock=self.clock, on_change=self._device_changed)
        self.ingest_link = self._ingest_link(broker_secrets, endpoint.client_options())
        if not self.ingest_only:
            self.link = MqttLink(
                **endpoint.client_options(),
                username=broker_secrets.backend_username,
                password=broker_secrets.backend_password,
                subscriptions=ALARM_SUBSCRIPTIONS,
                unsubscribe=RETIRED_SUBSCRIPTIONS,
                handler=self._handle,
                retry_max_s=RETRY_WITH_ALARMS_MAX_S,
                holds=self.priority,
                observer=self.metrics.observer("alarm"),
            )
            self.rules = Rules(self.engine, self.settings, publish=self.link.publish, wake=self._wake.set)
            if self.settings.webhook_url:
                self.notifier = notify.Notifier(
                    self.engine,
                    url=self.settings.webhook_url,
                    key=secret_key(self.settings.webhook_key_path),
                    clock=self.clock,
                    on_result=self.metrics.webhook_result,
                )
                self.notifier.start()
            else:
                log.warning(NO_WEBHOOK_WARNING)
            self.started_at, self._last_beat = utc_now(), None
            self._stop.clear()
            self._rules_thread = threading.Thread(target=self._run_rules, name="rules", daemon=True)
            self._rules_thread.start()
            self.link.start()
            # What a broker crash lost comes back (its own thread: the rules never wait for it).
            self.recovery = recovery.BrokerRecovery(
                self.engine, self.settings, link=self.link, admin=broker_secrets
            )
            self.recovery.start()
        self.ingest_link.start()
        log.info(
            "backend %s: database %s, broker %s",
            f"ingest worker {self.worker} started" if self.ingest_only else "started",
            self.engine.url.render_as_string(hide_password=True),
            endpoint.url,
        )

    def _ingest_link(self, broker_secrets: BrokerSecrets, options: dict[str, Any]) -> MqttLink:
        return MqttLink(
            **options,
            username=broker_secrets.ingest_username,
            password=broker_secrets.ingest_password,
            client_id=f"{broker_secrets.ingest_username}-{self.worker}",
            subscriptions=INGEST_SUBSCRIPTIONS,
            handler=self._handle,
            batch_handler=self._handle_batch,
            batch_size=self.batch_size or BATCH_SIZE,
            yields_to=self.priority,
            observer=self.metrics.observer("ingest"),
        )

    def _device_changed(self, device_id: str) -> None:
        if self.rules is not None:
            self.rules.device_changed(device_id)
        self._wake.set()

    def _handle(self, topic: str, payload: bytes) -> tuple[Reply, ...]:
        assert self.ingest is not None
        return self._replies(self.ingest.handle(topic, payload))

    def _handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[tuple[Reply, ...] | None]:
        assert self.ingest is not None
        return [None if o is None else self._replies(o) for o in self.ingest.handle_batch(messages)]

    def _replies(self, outcome: Outcome) -> tuple[Reply, ...]:
        self.metrics.count(outcome)
        if outcome.new and self.notifier is not None:
            self.notifier.wake()
        return outcome.replies

    def _run_rules(self) -> None:
        while not self._stop.is_set():
            try:
                self.rules.tick(self.clock())
            except Exception:
                # The rules never take ingest down; the next tick tries again.
                log.exception("the rules failed; trying again at the next tick")
            self._beat()
            if self.notifier is not None:
                self.notifier.wake()
            self._wake.wait(self.settings.rules_interval_s)
            self._wake.clear()

    def _beat(self) -> None:
        if self.engine is None or self.started_at is None:
            return
        connected = all(link is not None and link.connected for link in (self.link, self.ingest_link))
        last = self._last_beat
        if last is not None and last[1] == connected and time.monotonic() - last[0] < BEAT_EVERY_S:
            return
        try:
            service_status.beat(
                self.engine,
                host=self.host,
                started_at=self.started_at,
                broker_connected=connected,
                webhook_configured=bool(self.settings.webhook_url),
                now=utc_now(),
            )
        except Exception:
            # The console then says ingest is stale, which is the truth while we cannot write.
            log.exception("could not record the service beat; trying again at the next tick")
            return
        self._last_beat = (time.monotonic(), connected)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once every session of this process is connected and subscribed."""
        links = [link for link in (self.link, self.ingest_link) if link is not None]
        deadline = time.monotonic() + timeout
        return bool(links) and all(link.wait_ready(max(deadline - time.monotonic(), 0)) for link in links)

    def stop(self) -> None:
        """Disconnect (the session, with anything queued for us, stays on the broker), end the threads,
        and let a standby take over."""
        self._quit.set()
        self._stop.set()
        self._wake.set()
        if self.recovery is not None:
            self.recovery.stop()
            self.recovery = None
        if self._rules_thread is not None:
            self._rules_thread.join(30)
            self._rules_thread = None
        if self.notifier is not None:
            self.notifier.stop()
            self.notifier = None
        if self.ingest_link is not None:
            self.ingest_link.stop()
            self.ingest_link = None
        if self.link is not None:
            self.link.stop()
            self.link = None
            self._record_stop()
        self._let_go()
        self.metrics.close()
        log.info("backend stopped")

    def _record_stop(self) -> None:
        if self.engine is None or self.started_at is None:
            return
        try:
            service_status.stopped(
                self.engine,
                host=self.host,
                started_at=self.started_at,
                webhook_configured=bool(self.settings.webhook_url),
                now=utc_now(),
            )
        except Exception:
            # Without it the console says "stale" a few ticks later instead of "stopped" now.
            log.exception("could not record that the backend stopped")

    def run(self) -> None:
        """Run in the foreground until SIGINT or SIGTERM (a standby waits until it is the active backend).
        Raises BackendError if the active backend's lock was lost: the process must end, and come back
        (systemd's `Restart=`) as a standby."""
        stop = self._quit
        stop.clear()

        def on_signal(signum: int, frame: object) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        announced = False
        try:
            self._begin()
            # Poll briefly until every session is subscribed, then say so once: from that line on,
            # nothing the pendants publish is missed (the persistent sessions queue it).
            while not stop.wait(1.0 if announced else 0.05):
                if not announced and self.wait_ready(0):
                    announced = True
                    log.info("ready: every session of this process is connected and subscribed")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._lost is not None:
            raise BackendError(
                f"this backend lost {self._lost}, so another may be active now: it stopped; start it "
                "again (systemd restarts it) and it waits as a standby"
            )

    def __enter__(self) -> BackendService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
