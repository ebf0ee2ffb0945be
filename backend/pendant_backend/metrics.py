"""Prometheus metrics of `pendant backend run`, served by that process on 127.0.0.1.

What happens in the process (messages ingested and rejected, how long they waited, an alarm's commit ->
`alarm/ack` latency, webhook attempts, the broker links) is counted as it happens, in a registry of the
service's own (not prometheus_client's global one: tests run several services in one process). What the
database holds (alarms by state, pendants by health) is counted when Prometheus scrapes, with count
queries over indexed columns, never by reading rows; only the full backend serves those, so that extra
ingest workers do not report the same fleet twice. docs/operations.md ("Metrics and alerts") lists every
metric and packaging/prometheus/pendant-alerts.yml the alerts on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from pendant_backend import monitor, notify, payloads
from pendant_backend.ingest import Outcome
from pendant_backend.models import LOAN_STATES, Alarm
from pendant_backend.mqtt_link import MqttLink

log = logging.getLogger(__name__)

# Plain HTTP, so loopback only, like every plain listener of the project (docs/operations.md).
HOST = "127.0.0.1"
# From a message read by the link to its commit: a few ms alone, up to a second behind an alarm
# (mqtt_link.YIELD_MAX_S), more only when the database falls behind.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From an alarm's commit to the broker taking its `alarm/ack`: a round trip on loopback, ms.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INGEST_RESULTS = ("stored", "duplicate")
# Rejections: the protocol's reasons, a bug in validation, a failure storing a valid non-alarm message.
REJECT_REASONS = (*payloads.REASONS, "validation_error", "handler_error")
ALARM_STATES = ("received", "acknowledged", "resolved")
# How often the server's thread looks whether to stop: `close()` (so a backend's stop) waits this long.
POLL_S = 0.05


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _LinkObserver:
    """One session's mqtt_link.LinkObserver: its messages' wait, and (the alarm session) its acks."""

    def __init__(self, lag: Histogram, ack: Histogram | None) -> None:
        self._lag, self._ack = lag, ack

    def handled(self, waited_s: float) -> None:
        self._lag.observe(waited_s)

    def answered(self, after_s: float) -> None:
        if self._ack is not None:
            self._ack.observe(after_s)


class LinkCollector(Collector):
    """At scrape time: each session's connection to the broker and the messages it holds."""

    def __init__(self, links: Callable[[], Mapping[str, MqttLink | None]]) -> None:
        self._links = links

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "pendant_broker_connected", "1 while the session is connected to the broker.", labels=["session"]
        )
        connects = CounterMetricFamily(
            "pendant_broker_connections",
            "Connections the broker accepted for the session.",
            labels=["session"],
        )
        depth = GaugeMetricFamily(
            "pendant_ingest_queue_depth",
            "Messages the session received and has not acknowledged yet (waiting, being stored, or "
            "waiting for the broker to take their replies).",
            labels=["session"],
        )
        for session, link in self._links().items():
            if link is None:
                continue
            connected.add_metric([session], 1.0 if link.connected else 0.0)
            connects.add_metric([session], link.connect_count)
            depth.add_metric([session], link.waiting)
        yield from (connected, connects, depth)


class StoreCollector(Collector):
    """At scrape time, from the database by counts: alarms by state, those waiting past escalation, and
    the monitored pendants by health (monitor.fleet_summary, one GROUP BY over an index)."""

    def __init__(
        self, engine: Callable[[], Engine | None], *, escalate_after_s: int, clock: Callable[[], datetime]
    ) -> None:
        self.engine, self.escalate_after_s, self.clock = engine, escalate_after_s, clock

    def collect(self) -> Iterator[Metric]:
        engine = self.engine()
        if engine is None:  # not started yet
            return
        up = GaugeMetricFamily("pendant_store_up", "1 if the database answered this scrape's counts.")
        try:
            by_state, past_escalation = self._alarm_counts(engine)
            summary = monitor.fleet_summary(engine)
        except Exception:
            # The scrape still answers (the process is up); the alert on pendant_store_up says why.
            log.exception("the metrics could not count in the database")
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        alarms = GaugeMetricFamily("pendant_alarms", "Alarms (not test alarms) by state.", labels=["state"])
        for state in ALARM_STATES:
            alarms.add_metric([state], by_state.get(state, 0))
        yield alarms
        yield GaugeMetricFamily(
            "pendant_alarms_past_escalation",
            "Alarms (not test alarms) still unacknowledged PENDANT_ESCALATE_AFTER_S after they came.",
            value=past_escalation,
        )
        yield self._family(
            "pendant_devices", "Monitored pendants by connectivity.", "health", summary["connectivity"]
        )
        yield self._family(
            "pendant_devices_battery", "Monitored pendants by battery level.", "battery", summary["battery"]
        )
        yield self._family(
            "pendant_devices_flagged", "Monitored pendants with each health flag.", "flag", summary["flags"]
        )
        loans = {state: summary["loan"].get(state, 0) for state in LOAN_STATES}
        yield self._family("pendant_devices_loan", "Pendants by loan state.", "loan_state", loans)

    def _alarm_counts(self, engine: Engine) -> tuple[dict[str, int], int]:
        before = self.clock() - timedelta(seconds=self.escalate_after_s)
        not_test = col(Alarm.test).is_(False)
        with Session(engine) as session:
            rows = session.exec(select(Alarm.state, func.count()).where(not_test).group_by(Alarm.state))
            by_state = {state: count for state, count in rows}
            waiting = session.exec(
                select(func.count())
                .select_from(Alarm)
                .where(Alarm.state == "received", not_test, col(Alarm.received_at) <= before)
            ).one()
        return by_state, waiting

    @staticmethod
    def _family(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=[label])
        for value, count in counts.items():
            family.add_metric([value], count)
        return family


class BackendMetrics:
    """The metrics of one backend process: counted by the service's handlers and threads, collected from
    its links and its database at scrape time, served by `serve()` until `close()`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.ingested = Counter(
            "pendant_ingest_messages", "Messages ingested, by topic leaf.", ["topic", "result"], registry=reg
        )
        self.rejected = Counter(
            "pendant_ingest_rejected", "Messages rejected: nothing stored.", ["reason"], registry=reg
        )
        self.lag = Histogram(
            "pendant_ingest_lag_seconds",
            "From a message read by the session to its commit.",
            ["session"],
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.alarm_ack = Histogram(
            "pendant_alarm_ack_seconds",
            "From an alarm's commit to the broker taking its alarm/ack.",
            buckets=ACK_BUCKETS,
            registry=reg,
        )
        self.webhooks = Counter(
            "pendant_webhook_attempts", "Webhook delivery attempts.", ["event", "result"], registry=reg
        )
        # Every series exists from the start at 0, so that rate() and `== 0` see it before the first event;
        # kept at hand, as count() runs for every message and labels() takes a lock each time.
        self._ingested = {
            (topic, result): self.ingested.labels(topic, result)
            for topic in payloads.DEVICE_TOPICS
            for result in INGEST_RESULTS
        }
        self._rejected = {reason: self.rejected.labels(reason) for reason in REJECT_REASONS}
        for event in notify.EVENTS:
            for result in notify.RESULTS:
                self.webhooks.labels(event, result)
        ProcessCollector(registry=reg)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def count(self, outcome: Outcome) -> None:
        """One message handled by ingest (called once per message, whichever path stored it)."""
        if outcome.invalid is not None or outcome.error is not None:
            reason = outcome.invalid if outcome.invalid is not None else "handler_error"
            child = self._rejected.get(reason)
            (self.rejected.labels(reason) if child is None else child).inc()
        else:
            again = outcome.duplicate or (outcome.leaf == "alarm" and not outcome.new)
            key = (outcome.leaf, "duplicate" if again else "stored")
            child = self._ingested.get(key)
            (self.ingested.labels(*key) if child is None else child).inc()

    def observer(self, session: str) -> _LinkObserver:
        """The observer for the link of `session` (`alarm` or `ingest`)."""
        return _LinkObserver(self.lag.labels(session), self.alarm_ack if session == "alarm" else None)

    def webhook_result(self, event: str, result: str) -> None:
        """One webhook attempt's result (notify.RESULTS)."""
        self.webhooks.labels(event, result).inc()

    def watch_links(self, links: Callable[[], Mapping[str, MqttLink | None]]) -> None:
        """Report the links `links()` names (session -> link) at every scrape."""
        self.registry.register(LinkCollector(links))

    def watch_store(
        self, engine: Callable[[], Engine | None], *, escalate_after_s: int, clock: Callable[[], datetime]
    ) -> None:
        """Report the counts of the database `engine()` gives at every scrape (the full backend only)."""
        self.registry.register(StoreCollector(engine, escalate_after_s=escalate_after_s, clock=clock))

    def serve(self, port: int) -> bool:
        """Serve /metrics on 127.0.0.1:`port` in a thread of its own (nothing for port 0). A port that is
        taken is logged, not raised: metrics never keep a backend from ingesting alarms. True if served."""
        if port == 0 or self._server is not None:
            return self._server is not None
        try:
            server = make_server(HOST, port, make_wsgi_app(self.registry), handler_class=_QuietHandler)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%d (%s): something else listens there; set PENDANT_METRICS_PORT "
                "(or --metrics-port) to a free port, or 0 for none. Going on without metrics",
                HOST,
                port,
                exc.strerror,
            )
            return False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": POLL_S}, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", HOST, port)
        return True

    @property
    def port(self) -> int | None:
        """The port /metrics is served on, None when it is not."""
        return None if self._server is None else self._server.server_port

    def close(self) -> None:
        """Stop serving."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
