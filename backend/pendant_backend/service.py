"""Runs ingest until stopped: the backend's MQTT session feeding the database."""

from __future__ import annotations

import logging
import signal
import threading

from sqlalchemy import Engine

from pendant_backend import payloads
from pendant_backend.broker import load_secrets
from pendant_backend.db import engine_for
from pendant_backend.ingest import Ingest, Reply
from pendant_backend.mqtt_link import MqttLink
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

SUBSCRIPTIONS = tuple(payloads.topic_for("+", leaf) for leaf in payloads.DEVICE_TOPICS)


class BackendService:
    """The backend: `start()`/`stop()` run it in the background, `run()` in the foreground until a signal.

    Alarms queued on the broker while the backend was down arrive when it starts (its MQTT session is
    persistent), are stored once and acked.
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.ingest: Ingest | None = None
        self.link: MqttLink | None = None

    def start(self) -> None:
        """Open the database and connect to the broker in the background (reconnecting on its own)."""
        if self.link is not None:
            raise RuntimeError("the backend is already started")
        broker_secrets = load_secrets(self.settings)
        if self.engine is None:
            self.engine = engine_for(self.settings)
        self.ingest = Ingest(self.engine)
        self.link = MqttLink(
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            username=broker_secrets.backend_username,
            password=broker_secrets.backend_password,
            subscriptions=SUBSCRIPTIONS,
            handler=self._handle,
        )
        self.link.start()
        log.info("backend started: database %s, broker %s", self.settings.db_url, self.settings.mqtt_address)

    def _handle(self, topic: str, payload: bytes) -> tuple[Reply, ...]:
        assert self.ingest is not None
        return self.ingest.handle(topic, payload).replies

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the backend is connected and subscribed."""
        return self.link is not None and self.link.wait_ready(timeout)

    def stop(self) -> None:
        """Disconnect (the session, with anything queued for us, stays on the broker)."""
        if self.link is not None:
            self.link.stop()
            self.link = None
            log.info("backend stopped")

    def run(self) -> None:
        """Run in the foreground until SIGINT or SIGTERM."""
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> BackendService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
