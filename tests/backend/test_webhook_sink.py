"""The demo's webhook receiver against the backend's real sender (notify.py) over loopback HTTP: a signed
delivery is taken and recorded, a tampered or wrongly keyed one is refused with 401."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from backend_samples import alarm, topic
from sqlmodel import Session, select

from pendant_backend import notify
from pendant_backend.models import Notification
from pendant_backend.webhook_sink import Delivery, WebhookSink, read_delivery

KEY = b"s" * 32
WAIT_S = 10.0


@pytest.fixture
def heard() -> list[Delivery]:
    """What the sink's on_delivery was called with."""
    return []


@pytest.fixture
def sink(heard: list[Delivery]) -> Iterator[WebhookSink]:
    with WebhookSink(KEY, on_delivery=heard.append) as instance:
        yield instance


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def signed_headers(body: bytes, *, key: bytes = KEY, timestamp: int = 1700000000) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Pendant-Event": "alarm",
        "X-Pendant-Delivery": "9",
        "X-Pendant-Timestamp": str(timestamp),
        "X-Pendant-Signature": notify.sign(key, timestamp, body),
    }


def notification(engine) -> Notification:
    with Session(engine) as session:
        return session.exec(select(Notification)).one()


def test_the_backend_delivers_an_alarm_and_the_sink_verifies_it(engine, ingest, clock, sink, heard) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    assert notify.deliver_due(engine, url=sink.url, key=KEY, now=clock()) == 1
    [delivery] = sink.deliveries
    assert delivery == Delivery(
        event="alarm",
        alarm_ref="pd-0001/12-3",
        level=None,
        delivery_id=str(notification(engine).id),
        verified=True,
    )
    assert heard == [delivery]
    assert notification(engine).delivered_at == clock()


def test_a_delivery_under_another_key_is_refused_and_retried(engine, ingest, clock, sink) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    assert notify.deliver_due(engine, url=sink.url, key=b"x" * 32, now=clock()) == 0
    [delivery] = sink.deliveries
    assert (delivery.verified, delivery.alarm_ref) == (False, "pd-0001/12-3")
    stored = notification(engine)
    assert stored.delivered_at is None and stored.attempts == 1 and "401" in stored.last_error


def test_a_tampered_body_is_refused(sink) -> None:
    body = b'{"event":"alarm","alarm":{"ref":"pd-0001/12-3","test":false}}'
    headers = signed_headers(body)
    assert post(sink.url, body, headers) == 200
    assert post(sink.url, body.replace(b"false", b"true "), headers) == 401
    assert [d.verified for d in sink.deliveries] == [True, False]


@pytest.mark.parametrize("drop", ["X-Pendant-Signature", "X-Pendant-Timestamp"])
def test_a_post_without_its_signature_headers_is_refused(sink, drop: str) -> None:
    body = b'{"event":"health"}'
    headers = {k: v for k, v in signed_headers(body).items() if k != drop}
    assert post(sink.url, body, headers) == 401
    assert [d.verified for d in sink.deliveries] == [False]


def test_what_a_delivery_says_is_read_from_its_headers_and_body() -> None:
    body = json.dumps({"event": "escalation", "alarm": {"ref": "pd-0002/3-1"}, "level": 4}).encode()
    delivery = read_delivery(KEY, signed_headers(body) | {"X-Pendant-Event": "escalation"}, body)
    assert delivery == Delivery("escalation", "pd-0002/3-1", 4, "9", True)
    # A body that is no JSON object still makes a record (refused, if its signature is not ours).
    assert read_delivery(KEY, {}, b"[1]") == Delivery("", None, None, "", False)


def test_the_sink_waits_for_what_it_expects(sink) -> None:
    body = b'{"event":"health"}'
    assert not sink.wait_for(lambda seen: len(seen) == 1, timeout=0)
    assert post(sink.url, body, signed_headers(body)) == 200
    assert sink.wait_for(lambda seen: len(seen) == 1, timeout=WAIT_S)


def test_its_url_exists_only_while_it_runs() -> None:
    instance = WebhookSink(KEY)
    with pytest.raises(RuntimeError, match="not started"):
        _ = instance.url
    with instance:
        assert instance.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError, match="not started"):
        _ = instance.url
