"""Webhooks: signed with HMAC, retried with backoff against a real HTTP server on loopback, and never in
the way of ingest."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from backend_samples import alarm, topic
from sqlmodel import Session, select

from pendant_backend import notify
from pendant_backend.models import Notification

from support import free_port

KEY = b"k" * 32


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers with the statuses it is given, in order."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server interface
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver([500, 503])
    yield instance
    instance.close()


def test_signature_round_trip() -> None:
    signature = notify.sign(KEY, 1700000000, b'{"a":1}')
    assert notify.verify(KEY, "1700000000", b'{"a":1}', signature)
    assert not notify.verify(KEY, "1700000000", b'{"a":2}', signature)
    assert not notify.verify(b"other" * 8, "1700000000", b'{"a":1}', signature)


def test_backoff_doubles_up_to_ten_minutes() -> None:
    assert [notify.retry_delay_s(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert notify.retry_delay_s(30) == 600


def test_delivery_is_signed_and_retried_with_backoff(engine, ingest, clock, receiver: Receiver) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    assert notify.deliver_due(engine, url=receiver.url, key=KEY, now=clock()) == 0  # 500
    assert notify.deliver_due(engine, url=receiver.url, key=KEY, now=clock.advance(1)) == 0  # not due yet
    assert notify.deliver_due(engine, url=receiver.url, key=KEY, now=clock.advance(1)) == 0  # 503, after 2 s
    assert notify.deliver_due(engine, url=receiver.url, key=KEY, now=clock.advance(3)) == 0  # next after 4 s
    assert notify.deliver_due(engine, url=receiver.url, key=KEY, now=clock.advance(1)) == 1
    assert len(receiver.calls) == 3
    headers, body = receiver.calls[-1]
    assert headers["X-Pendant-Event"] == "alarm"
    assert notify.verify(KEY, headers["X-Pendant-Timestamp"], body, headers["X-Pendant-Signature"])
    assert json.loads(body)["alarm"]["ref"] == "pd-0001/12-3"
    # The same delivery id on every attempt, so the receiver can drop duplicates.
    assert len({h["X-Pendant-Delivery"] for h, _ in receiver.calls}) == 1
    with Session(engine) as session:
        [stored] = session.exec(select(Notification)).all()
    assert stored.attempts == 3 and stored.delivered_at == clock()


def test_a_dead_receiver_is_given_up_after_the_maximum_and_ingest_goes_on(engine, ingest, clock) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    ingest.handle(topic("pd-0001", "alarm"), alarm("1-1"))
    for _ in range(notify.MAX_ATTEMPTS):
        notify.deliver_due(engine, url=dead, key=KEY, now=clock.advance(notify.MAX_RETRY_S))
    with Session(engine) as session:
        [stored] = session.exec(select(Notification)).all()
    assert stored.failed_at is not None and stored.attempts == notify.MAX_ATTEMPTS
    assert "Connection refused" in stored.last_error or "URLError" in stored.last_error
    assert ingest.handle(topic("pd-0001", "alarm"), alarm("1-2")).new
