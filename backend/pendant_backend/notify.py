"""Webhook notifications: queued in the database in the same transaction as what they announce, and
delivered by a thread of their own, signed with HMAC-SHA256 and retried with backoff. Ingest only
writes a row, so a slow or dead receiver never holds up an alarm.

Each call is an HTTP POST of JSON with the headers
  X-Pendant-Event: alarm | escalation | health
  X-Pendant-Delivery: <notification id> (the same on every retry: receivers drop duplicates by it)
  X-Pendant-Timestamp: <Unix seconds>
  X-Pendant-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the key in secrets/webhook.key>
Any 2xx answer is a delivery; anything else, or no answer within the timeout, is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend.db import session_scope
from pendant_backend.models import Notification, utc_now

log = logging.getLogger(__name__)

EVENTS = ("alarm", "escalation", "health")
MAX_ATTEMPTS = 20
FIRST_RETRY_S, MAX_RETRY_S = 2.0, 600.0
TIMEOUT_S = 10.0
# What became of one attempt, as `on_result` hears it: failed is retried later, gave_up is not.
RESULTS = ("delivered", "failed", "gave_up")


def enqueue(
    session: Session, *, event: str, body: Mapping[str, Any], now: datetime, device_id: str | None = None
) -> Notification:
    """Queue one webhook call in the caller's transaction."""
    item = Notification(
        event=event,
        device_id=device_id,
        body=json.dumps({"event": event, **body}, separators=(",", ":"), ensure_ascii=False),
        created_at=now,
        next_attempt_at=now,
    )
    session.add(item)
    return item


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The X-Pendant-Signature value for `body` sent at `timestamp`."""
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers (and tests): True if `signature` is ours for `body` at `timestamp`."""
    try:
        expected = sign(key, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def retry_delay_s(attempts: int) -> float:
    """Backoff after `attempts` failed attempts: 2 s, 4 s, 8 s ... at most 10 minutes."""
    return min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), MAX_RETRY_S)


def post(url: str, key: bytes, item: Notification, now: datetime) -> None:
    """One delivery attempt; raises on anything but a 2xx answer."""
    body = item.body.encode()
    timestamp = int(now.timestamp())
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "pendant-backend",
            "X-Pendant-Event": item.event,
            "X-Pendant-Delivery": str(item.id),
            "X-Pendant-Timestamp": str(timestamp),
            "X-Pendant-Signature": sign(key, timestamp, body),
        },
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - URL from settings
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not a 2xx answer", response.headers, None)


def deliver_due(
    engine: Engine,
    *,
    url: str,
    key: bytes,
    now: datetime,
    send: Callable[[str, bytes, Notification, datetime], None] = post,
    limit: int = 50,
    on_result: Callable[[str, str], None] | None = None,
) -> int:
    """Attempt every notification that is due; return how many were delivered. `on_result(event,
    result)` hears each attempt's outcome (one of RESULTS) once it is recorded."""
    with Session(engine) as session:
        due = list(
            session.exec(
                select(Notification)
                .where(
                    col(Notification.delivered_at).is_(None),
                    col(Notification.failed_at).is_(None),
                    Notification.next_attempt_at <= now,
                )
                .order_by(col(Notification.id))
                .limit(limit)
            )
        )
    delivered = 0
    for item in due:
        try:
            send(url, key, item, now)
            error = None
        except Exception as exc:  # every failure is retried; the reason is kept and logged
            error = f"{type(exc).__name__}: {exc}"[:200]
        with session_scope(engine) as session:
            stored = session.get(Notification, item.id)
            stored.attempts += 1
            if error is None:
                stored.delivered_at = now
                delivered += 1
                result = "delivered"
            else:
                stored.last_error = error
                result = "gave_up" if stored.attempts >= MAX_ATTEMPTS else "failed"
                if result == "gave_up":
                    stored.failed_at = now
                    log.error(
                        "gave up the %s webhook #%d after %d attempts: %s",
                        item.event,
                        item.id,
                        stored.attempts,
                        error,
                    )
                else:
                    stored.next_attempt_at = now + timedelta(seconds=retry_delay_s(stored.attempts))
                    log.warning("the %s webhook #%d failed (%s); retrying", item.event, item.id, error)
            session.add(stored)
        if on_result is not None:
            on_result(item.event, result)
    return delivered


class Notifier:
    """A thread that delivers queued notifications until stopped; `wake()` makes it look at once.
    `on_result` as for `deliver_due`."""

    def __init__(
        self,
        engine: Engine,
        *,
        url: str,
        key: bytes,
        clock: Callable[[], datetime] = utc_now,
        interval_s: float = 1.0,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine, self.url, self.key, self.clock = engine, url, key, clock
        self.interval_s = interval_s
        self.on_result = on_result
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_due(
                    self.engine, url=self.url, key=self.key, now=self.clock(), on_result=self.on_result
                )
            except Exception:
                log.exception("the webhook thread failed; it goes on")
            self._wake.wait(self.interval_s)
            self._wake.clear()
