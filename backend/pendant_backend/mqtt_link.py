"""The only module that touches paho: the backend's persistent MQTT 5 session, with PUBACK after commit.

`MqttLink` hands every message to a handler and takes it off the broker's queue (PUBACK) only when the
handler has returned and the broker has acknowledged every reply the handler asked for. For an alarm
that means: stored in the database, `alarm/ack` accepted by the broker, and only then PUBACK. A crash
at any instant therefore ends in a redelivery, which the handler recognises as a duplicate and acks
again. Given a batch handler, the link hands it every message that has arrived (up to `batch_size`,
in arrival order) at once, so that they are stored in one transaction; each is still PUBACKed only
after that commit and after the broker took its own replies. `request()` is a one-shot
request/response exchange (used for the dynamic-security API).

Given a `ca_file`, a client speaks TLS (1.2 or later) and trusts only that CA, checking the broker's
certificate chain and that it names the host connected to; without one it uses the plain listener,
which exists on loopback only (pendant_backend.broker_endpoint decides which).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pendant_backend import BackendError

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
KEEPALIVE_S = 30
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 0.2, 5.0
_RETRY_AFTER_FAILURE_MIN_S, _RETRY_AFTER_FAILURE_MAX_S = 1.0, 30.0
# An alarm must not wait long once the database is back: a link that carries alarms retries this often.
RETRY_WITH_ALARMS_MAX_S = 2.0
BATCH_SIZE = 100
# The longest a batch waits for the alarm being handled (Priority): heartbeats are delayed, never stopped.
YIELD_MAX_S = 1.0
# How long a batch may wait for more messages while they keep arriving (it goes as soon as none is read).
BATCH_WAIT_S = 0.005
# The longest wait for the broker's socket when no batch is open; a message queued by another thread
# ends it at once (`publish`).
IDLE_WAIT_S = 0.1


class MqttError(BackendError):
    """The broker could not be reached or refused what we asked."""


class BrokerUnavailable(MqttError):
    """Nothing accepts connections at the broker's address."""


class OutgoingMessage(Protocol):
    """What a handler asks to publish: QoS 1, not retained."""

    topic: str
    payload: bytes


class LinkObserver(Protocol):
    """What a link reports as it works, for the metrics (pendant_backend.metrics); on the link's thread,
    so it must not block."""

    def handled(self, waited_s: float) -> None:
        """A message's handler returned (it is committed), `waited_s` after the link read it."""

    def answered(self, after_s: float) -> None:
        """The broker took every reply to a message, `after_s` after they were published."""


Handler = Callable[[str, bytes], Iterable[OutgoingMessage]]
# Many messages at once, in arrival order: the replies of each, or None for one that could not be
# handled (it stays unacknowledged and comes again after a reconnect).
BatchHandler = Callable[[Sequence[tuple[str, bytes]]], Sequence[Iterable[OutgoingMessage] | None]]


def _not_running(host: str, port: int) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"the broker is not running on {host}:{port}: start it with `pendant broker run`"
    )


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts only `ca_file`, checks the broker's name and allows TLS 1.2+."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except FileNotFoundError:
        raise MqttError(f"the CA file {ca_file} does not exist: run `pendant broker run` once") from None
    except ssl.SSLError as exc:
        raise MqttError(f"the CA file {ca_file} holds no usable certificate ({exc.reason})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def untrusted(host: str, port: int, exc: ssl.SSLCertVerificationError) -> str:
    """One sentence for a broker whose certificate failed verification."""
    return (
        f"the broker at {host}:{port} is not trusted: its certificate failed verification "
        f"({exc.verify_message}); is this the right broker, and does its certificate come from the CA "
        "in <data>/tls/ca.crt (or PENDANT_TLS_CA)?"
    )


def _use_tls(client: paho.Client, ca_file: Path | None) -> None:
    if ca_file is not None:
        client.tls_set_context(tls_context(ca_file))


class Priority:
    """Alarms first, within one backend process. The alarm session holds it while it handles an alarm
    (`first`); the ingest session waits until nobody holds it before it stores a batch (`wait_turn`), so
    that a batch of heartbeats does not start while an alarm is being stored: with SQLite the two would
    take turns at the one write lock, and the alarm, polling for it, kept losing to batches that follow
    one another (measured: alarm p99 2.2 s under a heartbeat flood). A batch already running is finished
    first. The wait is bounded, so a stream of alarms delays heartbeats but never stops them. Ingest
    workers in other processes do not see it; they run where alarms do not (docs/scaling.md)."""

    def __init__(self) -> None:
        self._busy = 0
        self._free = threading.Condition()

    @contextmanager
    def first(self) -> Iterator[None]:
        with self._free:
            self._busy += 1
        try:
            yield
        finally:
            with self._free:
                self._busy -= 1
                if self._busy == 0:
                    self._free.notify_all()

    def wait_turn(self, timeout: float) -> bool:
        """Wait until no alarm is being handled (at most `timeout` seconds); False if one still is."""
        with self._free:
            return self._free.wait_for(lambda: self._busy == 0, timeout)


class MqttLink:
    """A persistent session that keeps itself connected and feeds `handler` until `stop()`.

    The handler runs on the link's own thread, one message at a time, and returns the messages to
    publish in answer. If it raises, the message is not acknowledged: the link logs the error with the
    topic, reconnects after a growing pause (at most `retry_max_s`), and the broker delivers the message
    again. With a `batch_handler`, the messages that have arrived go to it together instead; if it
    raises, they go to `handler` one by one.

    The client id is the username unless `client_id` says otherwise (a second session of the same
    account). `unsubscribe` names topics an older version of this session subscribed to and that it
    must no longer receive: a persistent session keeps its subscriptions across connections. An
    `observer` hears how long each message waited for its handler and its replies for the broker.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        subscriptions: Sequence[str],
        handler: Handler,
        session_expiry_s: int = SESSION_EXPIRY_S,
        ca_file: Path | None = None,
        client_id: str | None = None,
        unsubscribe: Sequence[str] = (),
        batch_handler: BatchHandler | None = None,
        batch_size: int = BATCH_SIZE,
        retry_max_s: float = _RETRY_AFTER_FAILURE_MAX_S,
        holds: Priority | None = None,
        yields_to: Priority | None = None,
        observer: LinkObserver | None = None,
    ) -> None:
        self.host, self.port = host, port
        # `holds`: this session handles alarms and holds the priority while it does; `yields_to`: this
        # session's batches wait for it.
        self.holds, self.yields_to = holds, yields_to
        self.observer = observer
        self.client_id = client_id or username
        self.subscriptions = tuple(subscriptions)
        self.retired = tuple(unsubscribe)
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size
        self.retry_max_s = retry_max_s
        self.session_expiry_s = session_expiry_s
        # Messages read but not handled yet (batch mode), and when the first of them came.
        self._batch: list[paho.MQTTMessage] = []
        self._batch_started = 0.0
        self._received = 0
        # Messages handed to a handler that has not returned yet (read by `waiting` from other threads).
        self._handling = 0
        # Reconnects made to get a failed message again, and the longest pause made before one.
        self.retries = 0
        self.longest_retry_pause_s = 0.0
        self._connected = threading.Event()
        self.subscribed = threading.Event()
        # How many connections the broker accepted so far (a new one after every reconnect).
        self.connect_count = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reconnect_requested = False
        self._accepted = False
        self._failure_delay = _RETRY_AFTER_FAILURE_MIN_S
        # reply mid -> incoming mid, and incoming mid -> reply mids not yet acknowledged by the broker.
        # Valid for one connection only: packet ids of an older connection mean nothing in a new one.
        self._reply_of: dict[int, int] = {}
        self._open_replies: dict[int, set[int]] = {}
        # incoming mid -> when its replies were published (monotonic), for the observer.
        self._replied_at: dict[int, float] = {}
        self._subscribe_mid: int | None = None
        # Digests of messages whose handling failed: the pause before reconnecting grows while any of
        # them keeps failing, and falls back once they all went through.
        self._failing: set[bytes] = set()
        self._outbox: queue.SimpleQueue[tuple[str, bytes, bool, Callable[[], None] | None]] = (
            queue.SimpleQueue()
        )
        # mid of a plain publish -> what to call once the broker took it (this connection only).
        self._on_taken: dict[int, Callable[[], None]] = {}
        # A byte on it wakes the link's thread from its wait for the broker (`_loop`): a message another
        # thread queued goes out at once, not when the wait ends.
        self._wake: tuple[socket.socket, socket.socket] | None = None
        # The broker binds an account to its client id, and the session is named by it.
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        self._client.username_pw_set(username, password)
        _use_tls(self._client, ca_file)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (and keep reconnecting) until `stop()`."""
        if self._thread is not None:
            raise RuntimeError("the MQTT link is already started")
        self._stopping.clear()
        if self._wake is None:
            self._wake = socket.socketpair()
            for end in self._wake:
                end.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect cleanly (the session stays on the broker) and end the thread."""
        self._stopping.set()
        self._wake_loop()  # out of its wait at once, however long that wait is
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the MQTT link did not stop within %.0f s", timeout)
                return
            self._thread = None
        if self._wake is not None:
            for end in self._wake:
                end.close()
            self._wake = None

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection and it has not dropped."""
        return self._connected.is_set()

    @property
    def waiting(self) -> int:
        """Messages received and not yet acknowledged to the broker: read and waiting for their batch,
        being stored, or waiting for the broker to take their replies. Safe to read from any thread."""
        return len(self._batch) + self._handling + len(self._open_replies)

    def wait_ready(self, timeout: float) -> bool:
        """True once connected and subscribed (False if that did not happen within `timeout`)."""
        return self.subscribed.wait(timeout)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, on_taken: Callable[[], None] | None = None
    ) -> None:
        """Publish with QoS 1, from any thread: the link's thread sends it (after a reconnect if need be).
        `on_taken` runs on the link's thread once the broker has acknowledged it (PUBACK); it is not
        called if the connection drops first, so callers that must know retry later."""
        self._outbox.put((topic, payload, retain, on_taken))
        self._wake_loop()

    def _wake_loop(self) -> None:
        wake = self._wake
        if wake is not None:
            # A full buffer means it is awake already; a closed one, that the link stopped.
            with contextlib.suppress(OSError):
                wake[1].send(b"\0")

    def _run(self) -> None:
        delay = _RECONNECT_MIN_S
        warned = False
        while not self._stopping.is_set():
            self._accepted = False
            try:
                self._client.connect(
                    self.host,
                    self.port,
                    keepalive=KEEPALIVE_S,
                    clean_start=False,
                    properties=self._connect_properties(),
                )
            except ssl.SSLCertVerificationError as exc:
                # Never talk to a broker we cannot verify; keep trying in case it is fixed.
                if not warned:
                    log.error("%s; retrying", untrusted(self.host, self.port, exc))
                    warned = True
                self._stopping.wait(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            except (OSError, ValueError) as exc:
                if not warned:
                    log.warning("cannot reach the broker at %s:%d (%s); retrying", self.host, self.port, exc)
                    warned = True
                self._stopping.wait(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            pause = self._serve()
            self._connected.clear()
            self.subscribed.clear()
            if self._accepted:
                delay, warned = _RECONNECT_MIN_S, False
            self._stopping.wait(max(pause, delay))
            delay = min(delay * 2, _RECONNECT_MAX_S)
        log.info("MQTT link stopped")

    def _serve(self) -> float:
        """Run the connection until it drops, a retry is due, or we stop; return the pause to make."""
        while True:
            received = self._received
            # While a batch is open, only read what has arrived already.
            rc = self._loop(timeout=0 if self._batch else IDLE_WAIT_S)
            if self._stopping.is_set():
                self._batch.clear()  # not acknowledged: the broker delivers them again
                self._client.disconnect()
                return 0
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._batch.clear()  # their packet ids mean nothing on the next connection
                return 0
            if self._batch and (
                self._received == received or time.monotonic() - self._batch_started >= BATCH_WAIT_S
            ):
                self._flush(self._client)
            while self._connected.is_set() and not self._outbox.empty():
                topic, payload, retain, on_taken = self._outbox.get()
                info = self._client.publish(topic, payload, qos=1, retain=retain)
                if on_taken is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._on_taken[info.mid] = on_taken
            if self._reconnect_requested:
                self._reconnect_requested = False
                pause = min(self._failure_delay, self.retry_max_s)
                self._failure_delay = min(self._failure_delay * 2, self.retry_max_s)
                self.retries += 1
                self.longest_retry_pause_s = max(self.longest_retry_pause_s, pause)
                log.warning(
                    "reconnecting in %.0f s so that the broker delivers the failed message again", pause
                )
                self._client.disconnect()
                return pause

    def _loop(self, timeout: float) -> MQTTErrorCode:
        """What paho's `loop()` does (wait for the broker's socket, read, write, keepalive), through its
        calls for an outside event loop, so that the wait also ends when another thread queued a message:
        with paho's own wait (IDLE_WAIT_S, or until the broker sent something), a link with little incoming
        traffic sent the configs the recovery republishes about 5 per wait (measured: 10,000 took 107 s
        at a pace of 200 a second)."""
        sock = self._client.socket()
        if sock is None or self._wake is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        wake = self._wake[0]
        # TLS may hold decrypted bytes that the socket no longer signals.
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        writing = [sock] if self._client.want_write() else []
        try:
            readable, _, _ = select.select([sock, wake], writing, [], 0 if pending else timeout)
        except (OSError, ValueError, TypeError):  # the socket closed under us
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
        if sock in readable or pending:
            rc = self._client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        # What was waiting, and the replies the callbacks just queued (a full socket is not an error).
        if self._client.want_write():
            rc = self._client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        return self._client.loop_misc()

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        return props

    # ---- callbacks (all on the link's thread) -------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            hint = " (check the backend account in secrets/broker.json)" if reason.value in (134, 135) else ""
            log.error("the broker refused the connection: %s%s", reason, hint)
            return
        self._accepted = True
        self.connect_count += 1
        self._batch.clear()
        self._reply_of.clear()
        self._open_replies.clear()
        self._replied_at.clear()
        self._on_taken.clear()
        self._connected.set()
        log.info("connected to %s:%d (session present: %s)", self.host, self.port, flags.session_present)
        result, self._subscribe_mid = client.subscribe(
            [(topic, SubscribeOptions(qos=1)) for topic in self.subscriptions]
        )
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("could not subscribe: %s", paho.error_string(result))
        if self.retired:
            # Harmless when they are gone already (the broker answers "no subscription existed").
            client.unsubscribe(list(self.retired))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker: %s", reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        refused = [topic for topic, r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        if refused:
            log.error("the broker refused the subscriptions %s: check the backend role's ACLs", refused)
            return
        if mid == self._subscribe_mid:
            self.subscribed.set()
            log.info("subscribed to %d topics", len(self.subscriptions))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._received += 1
        if self.batch_handler is None:
            if self.holds is None:
                self._handle_one(client, message)
            else:
                with self.holds.first():
                    self._handle_one(client, message)
            return
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(message)
        if len(self._batch) >= self.batch_size:
            self._flush(client)

    def _flush(self, client: paho.Client) -> None:
        """Hand the open batch to the batch handler, then answer and acknowledge each of its messages."""
        batch, self._batch = self._batch, []
        assert self.batch_handler is not None
        if self.yields_to is not None:
            self.yields_to.wait_turn(YIELD_MAX_S)
        self._handling = len(batch)
        try:
            results = list(self.batch_handler([(m.topic, m.payload) for m in batch]))
            if len(results) != len(batch):
                raise MqttError(f"the batch handler answered {len(results)} of {len(batch)} messages")
        except Exception:
            log.exception("handling %d messages together failed; handling them one by one", len(batch))
            for message in batch:
                self._handle_one(client, message)
            return
        finally:
            self._handling = 0
        for message, replies in zip(batch, results, strict=True):
            if replies is None:
                self._failed(message)
            else:
                self._handled(client, message, list(replies))

    def _handle_one(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        self._handling += 1
        try:
            replies = list(self.handler(message.topic, message.payload))
        except Exception:
            log.exception("handling the message on %s failed", message.topic)
            self._failed(message)
            return
        finally:
            self._handling -= 1
        self._handled(client, message, replies)

    @staticmethod
    def _digest(message: paho.MQTTMessage) -> bytes:
        return hashlib.sha256(message.topic.encode() + b"\0" + message.payload).digest()

    def _failed(self, message: paho.MQTTMessage) -> None:
        log.error("the message on %s stays on the broker and will be delivered again", message.topic)
        self._failing.add(self._digest(message))
        self._reconnect_requested = True

    def _handled(
        self, client: paho.Client, message: paho.MQTTMessage, replies: list[OutgoingMessage]
    ) -> None:
        if self.observer is not None:
            # paho stamps each message with time.monotonic() as it reads it.
            self.observer.handled(max(time.monotonic() - message.timestamp, 0.0))
        if self._failing:
            self._failing.discard(self._digest(message))
            if not self._failing:
                self._failure_delay = _RETRY_AFTER_FAILURE_MIN_S
        try:
            self._answer(client, message, replies)
        except Exception:
            log.exception("answering the message on %s failed; it will be delivered again", message.topic)
            self._reconnect_requested = True

    def _answer(self, client: paho.Client, message: paho.MQTTMessage, replies: list[OutgoingMessage]) -> None:
        if message.qos == 0:
            for reply in replies:
                client.publish(reply.topic, reply.payload, qos=1)
            return
        if not replies:
            client.ack(message.mid, message.qos)
            return
        waiting: set[int] = set()
        published = time.monotonic()
        for reply in replies:
            info = client.publish(reply.topic, reply.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise MqttError(f"could not publish on {reply.topic}: {paho.error_string(info.rc)}")
            waiting.add(info.mid)
            self._reply_of[info.mid] = message.mid
        # The broker's PUBACK for a reply cannot arrive before this callback returns: it is read by
        # this same thread, so registering after publish() is safe.
        self._open_replies[message.mid] = waiting
        self._replied_at[message.mid] = published

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        incoming = self._reply_of.pop(mid, None)
        if incoming is None:
            # A plain publish, or a reply from an earlier connection (its message is delivered again).
            on_taken = self._on_taken.pop(mid, None)
            if on_taken is not None and not reason.is_failure:
                try:
                    on_taken()
                except Exception:
                    log.exception("the callback after publishing (mid %d) failed", mid)
            return
        if reason.is_failure:
            # The alarm is stored; the pendant resends it and gets its ack then (or falls back to SMS).
            log.error("the broker refused our reply (mid %d): %s", mid, reason)
        waiting = self._open_replies.get(incoming)
        if waiting is None:
            return
        waiting.discard(mid)
        if not waiting:
            del self._open_replies[incoming]
            published = self._replied_at.pop(incoming, None)
            if self.observer is not None and published is not None:
                self.observer.answered(time.monotonic() - published)
            client.ack(incoming, 1)


class RequestSession:
    """A throw-away MQTT 5 session for request/response exchanges (the dynamic-security API): connect
    once, `call()` as often as needed, `close()`. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        topic: str,
        response_topic: str,
        timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.topic, self.response_topic, self.timeout = topic, response_topic, timeout
        self.username = username
        self._ready = threading.Event()
        self._responses: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._error: str | None = None
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{username}-{secrets.token_hex(4)}",
            protocol=paho.MQTTv5,
        )
        self._client.username_pw_set(username, password)
        _use_tls(self._client, ca_file)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        try:
            self._client.connect(host, port, keepalive=KEEPALIVE_S, clean_start=True)
        except ssl.SSLCertVerificationError as exc:
            raise MqttError(untrusted(host, port, exc)) from None
        except ssl.SSLError as exc:
            raise MqttError(f"no TLS session with the broker at {host}:{port}: {exc.reason}") from None
        except OSError:
            raise _not_running(host, port) from None
        self._client.loop_start()
        if not self._ready.wait(timeout):
            self.close()
            raise MqttError(f"no answer from the broker at {host}:{port} within {timeout:.0f} s")
        if self._error is not None:
            self.close()
            raise MqttError(self._error)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._error = f"the broker refused the account {self.username!r}: {reason}"
            self._ready.set()
            return
        client.subscribe(self.response_topic, qos=1)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        if reasons[0].is_failure:
            self._error = (
                f"the broker refused {self.username!r} the subscription to {self.response_topic}: "
                f"{reasons[0]}"
            )
        self._ready.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self.response_topic:
            self._responses.put(message.payload)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self._ready.is_set():
            self._error = f"the broker closed the connection: {reason}"
            self._ready.set()
        self._responses.put(b"")  # wakes a waiting call()

    def call(self, payload: bytes, is_response: Callable[[bytes], bool]) -> bytes:
        """Publish `payload` and return the first response that `is_response`; MqttError on a timeout."""
        self._client.publish(self.topic, payload, qos=1)
        deadline = threading.Event()
        timer = threading.Timer(self.timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    answer = self._responses.get(timeout=0.05)
                except queue.Empty:
                    continue
                if answer and is_response(answer):
                    return answer
                if not answer and not self._client.is_connected():
                    raise MqttError("the broker closed the connection before it answered")
        finally:
            timer.cancel()
        raise MqttError(f"no answer on {self.response_topic} within {self.timeout:.0f} s")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> RequestSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request(
    *,
    host: str,
    port: int,
    username: str,
    password: str,
    topic: str,
    payload: bytes,
    response_topic: str,
    is_response: Callable[[bytes], bool],
    timeout: float = 10.0,
    ca_file: Path | None = None,
) -> bytes:
    """Publish `payload` on `topic` and return the first message on `response_topic` that `is_response`.

    A throw-away MQTT 5 session with a random client id. Raises BrokerUnavailable if nothing listens,
    MqttError if the broker refuses the account or the subscription, or no answer comes in `timeout`.
    """
    with RequestSession(
        host=host,
        port=port,
        username=username,
        password=password,
        topic=topic,
        response_topic=response_topic,
        timeout=timeout,
        ca_file=ca_file,
    ) as session:
        return session.call(payload, is_response)
