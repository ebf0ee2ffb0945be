"""A small webhook receiver for the demo and the tests: it takes the backend's POSTs (pendant_backend.notify)
on 127.0.0.1, checks each signature as notify signs it, and keeps what arrived.

It is what a dispatch system would run, shrunk to what shows the path works: `2xx` for a delivery whose
signature is ours, `401` for one whose signature is not (the backend then retries it, as it would with a
real receiver). It does not check how old the timestamp is: the tests drive the backend with a clock of
their own. Not for service: a force's dispatch system is the receiver there.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pendant_backend import notify

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Delivery:
    """One POST that arrived: its event (`alarm`, `escalation`, `health`), the alarm it is about (if
    any), the escalation level (if any), the delivery id, and whether its signature was ours."""

    event: str
    alarm_ref: str | None
    level: int | None
    delivery_id: str
    verified: bool


def read_delivery(key: bytes, headers: Any, body: bytes) -> Delivery:
    """Pure: what a POST with these headers and this body is, and whether its signature is ours."""
    verified = notify.verify(
        key, headers.get("X-Pendant-Timestamp") or "", body, headers.get("X-Pendant-Signature") or ""
    )
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    document = document if isinstance(document, dict) else {}
    raw_alarm = document.get("alarm")
    alarm = raw_alarm if isinstance(raw_alarm, dict) else {}
    level = document.get("level")
    return Delivery(
        event=headers.get("X-Pendant-Event") or str(document.get("event") or ""),
        alarm_ref=alarm.get("ref") if isinstance(alarm.get("ref"), str) else None,
        level=level if isinstance(level, int) and not isinstance(level, bool) else None,
        delivery_id=headers.get("X-Pendant-Delivery") or "",
        verified=verified,
    )


class WebhookSink:
    """`start()` listens on 127.0.0.1 at a free port (`url`), `stop()` ends it; `deliveries` is what
    arrived so far, oldest first, and `on_delivery(delivery)` is called for each as it arrives (on the
    server's thread: it must not block)."""

    def __init__(self, key: bytes, on_delivery: Callable[[Delivery], None] | None = None) -> None:
        self.key = key
        self.on_delivery = on_delivery
        self._deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the backend posts (PENDANT_WEBHOOK_URL): only known once started."""
        if self._server is None:
            raise RuntimeError("the webhook sink is not started")
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    @property
    def deliveries(self) -> list[Delivery]:
        """A copy of what arrived so far, oldest first."""
        with self._arrived:
            return list(self._deliveries)

    def start(self) -> None:
        """Listen in a thread of its own."""
        if self._server is not None:
            raise RuntimeError("the webhook sink is already started")
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-sink", daemon=True)
        self._thread.start()
        log.info("webhook sink listening on %s", self.url)

    def stop(self) -> None:
        """Stop listening and end the thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def wait_for(self, condition: Callable[[list[Delivery]], bool], timeout: float) -> bool:
        """Block until `condition(deliveries)` holds (True) or `timeout` seconds passed (False)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: condition(list(self._deliveries)), timeout)

    def __enter__(self) -> WebhookSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, delivery: Delivery) -> None:
        with self._arrived:
            self._deliveries.append(delivery)
            self._arrived.notify_all()
        log.info(
            "webhook %s %s for %s (%s)",
            delivery.event,
            delivery.delivery_id,
            delivery.alarm_ref or "no alarm",
            "signature ok" if delivery.verified else "BAD SIGNATURE, refused",
        )
        if self.on_delivery is not None:
            try:
                self.on_delivery(delivery)
            except Exception:
                log.exception("the webhook sink's on_delivery failed")

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server interface
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    self._answer(411, "a Content-Length is needed")
                    return
                if not 0 <= length <= MAX_BODY_BYTES:
                    self._answer(413, f"at most {MAX_BODY_BYTES} bytes")
                    return
                delivery = read_delivery(sink.key, self.headers, self.rfile.read(length))
                sink._record(delivery)
                if delivery.verified:
                    self._answer(200, "ok")
                else:
                    self._answer(401, "the signature is not the backend's: check the webhook key")

            def _answer(self, status: int, text: str) -> None:
                body = (text + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
                # Deliveries are logged once, by _record, without their bodies (they hold positions).
                pass

        return Handler
