"""The only module that touches paho: one MQTT 3.1.1 connection to the real broker per modem client.

Like the modem's own client, a link connects once and never reconnects by itself: when the connection
breaks it reports `lost` and is finished; the firmware must send AT+CMQTTCONNECT again. paho's network
loop runs in its own thread; every callback is handed to the asyncio loop, in order, so the modem's URCs
come out in the order the broker's packets arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

# +CMQTT* result codes (A76XX MQTT(S) application note).
OK = 0
FAILED = 1
SOCKET_CONNECT_FAIL = 3
NO_CONNECTION = 11
TIMEOUT = 17
DNS_ERROR = 25
TLS_HANDSHAKE_FAIL = 32
# CONNACK refusals by name (paho reports MQTT 3.1.1 return codes as MQTT 5 reason names).
_CONNACK_ERRORS = {
    "Unsupported protocol version": 27,
    "Client identifier not valid": 28,
    "Server unavailable": 29,
    "Bad user name or password": 30,
    "Not authorized": 31,
}
# +CMQTTCONNLOST causes.
LOST_CLOSED_BY_PEER = 1
LOST_RESET = 2
LOST_NETWORK_CLOSED = 3


@dataclass(frozen=True)
class ConnectParams:
    """Everything AT+CMQTTACCQ, AT+CMQTTWILL* and AT+CMQTTCONNECT gathered for one connection."""

    client_id: str
    host: str
    port: int
    keepalive: int
    clean_session: bool
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    tls: bool = False
    mqtt_v311: bool = True
    ssl_context: ssl.SSLContext | None = None  # from the modem's SSL context (tls.py)


class BrokerLink:
    """One connection. Results arrive through the three callbacks and through the futures returned by
    publish/subscribe/unsubscribe/disconnect, always on the asyncio loop that created the link."""

    def __init__(
        self,
        params: ConnectParams,
        *,
        on_connect_result: Callable[[int], None],
        on_lost: Callable[[int], None],
        on_message: Callable[[bytes, bytes], None],
        on_packet: Callable[[], None] | None = None,
    ) -> None:
        self.params = params
        self._on_packet = on_packet
        self._loop = asyncio.get_running_loop()
        self._on_connect_result = on_connect_result
        self._on_lost = on_lost
        self._on_message = on_message
        self.connected = False
        self.failure: str | None = None  # why the connection could not be made (TLS errors), for the trace
        self._finished = False
        self._closing = False
        self._drop_cause: int | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._disconnected: asyncio.Future[int] | None = None
        self._connect_timer: asyncio.TimerHandle | None = None
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        params = self.params
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=params.client_id,
            clean_session=params.clean_session,
            protocol=mqtt.MQTTv311 if params.mqtt_v311 else mqtt.MQTTv31,
            reconnect_on_failure=False,
        )
        if params.username is not None:
            client.username_pw_set(params.username, params.password)
        if params.will_topic is not None:
            client.will_set(params.will_topic, params.will_payload or b"", params.will_qos, retain=False)
        if params.tls:
            context = params.ssl_context
            if context is None:  # the A7670 with no AT+CSSLCFG authmode verifies nothing; neither do we
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            client.tls_set_context(context)
            client.tls_insecure_set(not context.check_hostname)
        if self._on_packet is not None:
            client.on_log = self._paho_log
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_publish = self._paho_done
        client.on_subscribe = self._paho_subscribed
        client.on_unsubscribe = self._paho_subscribed
        return client

    # -- operations (called on the asyncio loop) ------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Open the TCP connection and send CONNECT; the result comes through `on_connect_result`."""
        self._connect_timer = self._loop.call_later(timeout, self._connect_timed_out)
        future = self._loop.run_in_executor(None, self._open_socket)
        future.add_done_callback(self._socket_opened)

    def _open_socket(self) -> int:
        try:
            self._client.connect(self.params.host, self.params.port, self.params.keepalive)
        except socket.gaierror:
            return DNS_ERROR
        except ssl.SSLError as exc:
            # A certificate that does not verify lands here (ssl.SSLCertVerificationError), with
            # OpenSSL's reason: "unable to get local issuer certificate", "certificate has expired".
            self.failure = f"TLS handshake with {self.params.host} failed: {exc}"
            log.info("mqtt %s: %s", self.params.client_id, self.failure)
            return TLS_HANDSHAKE_FAIL
        except (ConnectionRefusedError, TimeoutError):
            return SOCKET_CONNECT_FAIL
        except OSError as exc:
            if self.params.tls:  # the TCP connection stood, the TLS handshake on it did not
                self.failure = f"TLS handshake with {self.params.host} failed: {exc}"
                log.info("mqtt %s: %s", self.params.client_id, self.failure)
                return TLS_HANDSHAKE_FAIL
            log.info("mqtt %s: connect failed: %s", self.params.client_id, exc)
            return SOCKET_CONNECT_FAIL
        except ValueError as exc:
            log.info(
                "mqtt %s: connect to %s:%d failed: %s",
                self.params.client_id,
                self.params.host,
                self.params.port,
                exc,
            )
            return SOCKET_CONNECT_FAIL
        return OK

    def _socket_opened(self, future: asyncio.Future[int]) -> None:
        err = future.result()
        if self._finished:  # timed out or killed while the socket was opening: nobody will loop on it
            sock = self._client.socket()
            if sock is not None:
                sock.close()
            return
        if err != OK:
            self._finish_connect(err)
            return
        self._client.loop_start()

    def _connect_timed_out(self) -> None:
        if not self.connected and not self._finished:
            self._finish_connect(TIMEOUT)

    def _finish_connect(self, err: int) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        if err != OK:
            self._finished = True
            self._closing = True
            self._abort_socket()
            self._stop_thread()
        self._on_connect_result(err)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> asyncio.Future[int]:
        """Send PUBLISH; the future gives 0 when it is written (QoS 0) or acknowledged (QoS 1 and 2)."""
        info = self._client.publish(topic, payload, qos, retain)
        return self._track(info.rc, info.mid)

    def subscribe(self, topics: list[tuple[str, int]]) -> asyncio.Future[int]:
        """Send SUBSCRIBE; the future gives 0 when every topic was granted, 1 otherwise."""
        rc, mid = self._client.subscribe(topics)
        return self._track(rc, mid)

    def unsubscribe(self, topics: list[str]) -> asyncio.Future[int]:
        """Send UNSUBSCRIBE; the future gives 0 on UNSUBACK."""
        rc, mid = self._client.unsubscribe(topics)
        return self._track(rc, mid)

    def disconnect(self) -> asyncio.Future[int]:
        """Send DISCONNECT (the broker discards the will); the future gives 0 once the link is closed."""
        self._closing = True
        self._disconnected = self._loop.create_future()
        if not self.connected:
            self._disconnected.set_result(NO_CONNECTION)
            return self._disconnected
        self._client.disconnect()
        return self._disconnected

    def drop(self, cause: int) -> None:
        """Break the connection without DISCONNECT (the broker sends the will) and report `lost(cause)`."""
        if not self.connected:
            return
        self._drop_cause = cause
        self._abort_socket()

    def kill(self) -> None:
        """Break the connection without DISCONNECT and without reporting it (modem switched off)."""
        self._closing = True
        self._finished = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        self.connected = False
        self._abort_socket()
        self._fail_pending(NO_CONNECTION)
        self._stop_thread()

    def _track(self, rc: int, mid: int | None) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            future.set_result(NO_CONNECTION)
        else:
            self._pending[mid] = future
        return future

    def _abort_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                # The plain-socket shutdown, also for TLS: it wakes paho's select() with an end of stream.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _stop_thread(self) -> None:
        # paho's thread ends by itself once its socket is gone (it never reconnects); joining it may take
        # up to a second, so it is done off the loop and out of the shared executor.
        threading.Thread(target=self._client.loop_stop, name="paho-join", daemon=True).start()

    def _fail_pending(self, err: int) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result(err)
        self._pending.clear()

    # -- paho callbacks (network thread) -> asyncio loop ----------------------------------------------

    def _to_loop(self, callback: Any, *args: Any) -> None:
        # paho's thread can report a last disconnect after the simulator's loop has closed (a test or a
        # bench that stopped): nobody is left to tell.
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            self._loop.call_soon_threadsafe(callback, *args)

    def _paho_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        err = OK if not reason.is_failure else _CONNACK_ERRORS.get(str(reason), FAILED)
        self._to_loop(self._connack, err)

    def _paho_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._to_loop(self._closed)

    def _paho_log(self, client: Any, userdata: Any, level: int, text: str) -> None:
        if text.startswith(("Sending ", "Received ")):  # one MQTT packet on the radio
            self._to_loop(self._packet)

    def _packet(self) -> None:
        if self._on_packet is not None and not self._finished:
            self._on_packet()

    def _paho_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._message, message.topic.encode("utf-8"), bytes(message.payload))

    def _paho_done(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._to_loop(self._resolve, mid, FAILED if reason.is_failure else OK)

    def _paho_subscribed(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        codes = reasons if isinstance(reasons, list) else [reasons]
        failed = any(code.is_failure for code in codes)
        self._to_loop(self._resolve, mid, FAILED if failed else OK)

    # -- on the asyncio loop -------------------------------------------------------------------------

    def _connack(self, err: int) -> None:
        if self._finished:
            return
        if err == OK:
            self.connected = True
        self._finish_connect(err)

    def _closed(self) -> None:
        was_connected = self.connected
        self.connected = False
        self._fail_pending(NO_CONNECTION)
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(OK)
        if self._finished:
            return
        if not was_connected and not self._closing:
            # Closed before CONNACK: the broker refused the TLS session (TLS 1.3 says so only after the
            # handshake) or the connection itself.
            self._finish_connect(TLS_HANDSHAKE_FAIL if self.params.tls else SOCKET_CONNECT_FAIL)
            return
        self._finished = True
        self._stop_thread()
        if was_connected and not self._closing:
            self._on_lost(self._drop_cause or LOST_CLOSED_BY_PEER)

    def _message(self, topic: bytes, payload: bytes) -> None:
        if not self._finished:
            self._on_message(topic, payload)

    def _resolve(self, mid: int, err: int) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(err)
