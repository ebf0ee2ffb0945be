"""Keeps the MQTT session up over the modem: bring-up, will, connect, birth, subscriptions, reconnects.

The wire work is in modem.py (and start.py, connect.py, loaded while connecting); this is the resilience
around it (as mqtt_as separates MQTT_base from MQTTClient). `keep()`, called in a loop (the app's worker), reconnects with exponential
backoff after `+CMQTTCONNLOST`, `+CMQTTPING` or failed publishes, starts again from AT+CMQTTSTART after
`+CMQTTNONET` or repeated failures, brings the whole modem up again when even that fails, and
power-cycles it first when it has stopped answering (`hung`). Outages
never raise into the application (only MemoryError does, for the supervisor): `publish` returns False
while offline. Received messages are queued by the reader task
and handed to `on_message(subtopic, payload)` by `dispatch()`, which the app's worker task calls.
"""

from time import ticks_add, ticks_diff, ticks_ms

from . import drop, log, use
from .atchan import ATError, ATTimeout

# The first retry pause; it doubles after each failure up to a minute. A test may shorten it.
config = {"backoff_ms": 2000}


class Session:
    """The pendant's MQTT session. up: connected (None while the birth is on its way); gen: number of
    successful connects so far."""

    def __init__(self, modem, device_id, state):
        self.modem = modem
        self.device_id = device_id
        self.state = state
        self.root = "pendant/v1/%s/" % device_id
        self.up = False
        self.gen = 0
        self.on_message = None  # async fn(subtopic str, payload bytes)
        self.on_connect = lambda: None  # fn(), after every successful connect and subscribe
        # what to redo before connecting: 3 modem power cycle, 2 bring-up, 1 MQTT service start, 0 nothing
        self.need = 2
        self._failed = 0  # publishes failed in a row
        self._inbox = []
        self._rx = None  # [topic, payload] of the message arriving; False when it cannot be kept
        self._retry = [0, ticks_ms()]
        modem.chan.on("+CMQTT", self._urc)

    def _urc(self, line, data=None):
        # Unsolicited +CMQTT... lines (in the reader task: no waiting). A received message comes as
        # +CMQTTRXSTART: 0,<topic len>,<payload len>, +CMQTTRXTOPIC: 0,<n> and +CMQTTRXPAYLOAD: 0,<n> each
        # with its block (a topic or a payload may come in several chunks), +CMQTTRXEND: 0. Loss:
        # +CMQTTCONNLOST and +CMQTTPING mean reconnect, +CMQTTNONET start the service again. Late results
        # of timed-out commands (+CMQTTPUB: ...) land here too and are ignored. The RX kinds are told by
        # the code of their letter after "+CMQTTRX" (S, T, P, E): every new string costs heap.
        rx = self._rx
        kind = ord(line[8]) if line[6:8] == "RX" else 0
        if kind == 83 or rx is None and kind:  # START, or a firmware that sends no +CMQTTRXSTART
            rx = self._rx = [b"", b""]
        if kind == 84 or kind == 80:  # TOPIC, PAYLOAD
            if data is None or not rx:  # a block too long to keep: the message is lost
                self._rx = False
            else:
                rx[kind == 80] += data
        elif kind == 69:  # END
            self._rx = None
            try:
                topic = rx[0].decode()
            except (TypeError, UnicodeError):
                topic = ""
            if not topic.startswith(self.root) or len(self._inbox) > 5:
                log("mqtt", "dropped a message on " + topic)
            else:
                self._inbox.append((topic[len(self.root) :], rx[1]))
        elif line[6:10] in ("CONN", "PING", "NONE") and line[6:13] != "CONNECT":
            if line[6] == "N":  # NONET
                self.need = max(self.need, 1)
            if self.up:
                log("mqtt", "connection lost: " + line)
            self.up = False

    def hung(self):
        """The modem stopped answering: power-cycle it and start over (the next keep() does)."""
        if self.need < 3:
            log("mqtt", "modem hung")
            self.need = 3
            self.up = self.modem.ready = False  # the fallback lets go of the modem too
            self._retry[1] = ticks_ms()

    async def keep(self):
        """When offline and the backoff pause is over, try to connect once. Returns at once otherwise."""
        retry = self._retry  # [failures in a row, ticks_ms of the next attempt]
        if self.up or ticks_diff(ticks_ms(), retry[1]) < 0:
            return
        try:
            if self.need >= 2:
                self.modem.ready = False  # no fallback steps now: the modem cannot send or call
                await (await use("network")).bring_up(self)
                drop("network")
                self.need = 1
            if self.need:  # the MQTT service from scratch, TLS set up (start.py)
                await (await use("start")).start(self)
                drop("start")
            sess = await (await use("connect")).connect(self)
            if self.up is False:  # lost again meanwhile
                raise ATError("lost")
        except MemoryError:
            # No room to load the connect code (a heap in pieces after a loss): try again in 2 s, when
            # other tasks have let go of what they held, rather than burn the supervisor's ten shortages
            # (a reboot) within a second.
            self.up = False
            retry[1] = ticks_add(ticks_ms(), 2000)
            raise  # the supervisor counts these: repeated, they mean a reboot
        except Exception as e:  # whatever else went wrong, the loop retries: never raise into the app
            log("mqtt", "connect: %r" % e)
            self.up = False
            failures = retry[0] = retry[0] + 1
            if failures % 6 == 0:  # the modem itself may be wedged: bring it up again
                self.need = max(self.need, 2)
            elif failures % 3 == 0:  # start the MQTT service again
                self.need = max(self.need, 1)
            delay = min(config["backoff_ms"] << min(failures - 1, 8), 60000)
            retry[1] = ticks_add(ticks_ms(), delay)
            log("mqtt", "offline, retry in %d ms" % delay)
            return
        finally:
            drop("network")
            drop("start")
            drop("connect")
        retry[0] = 0
        self.up = True
        self._failed = 0
        self.gen += 1
        log("mqtt", "connected sess %d" % sess)
        self.on_connect()

    async def publish(self, sub, payload):
        """Publish payload (bytes) at QoS 1 on root + sub; True when the broker took it. Never raises."""
        if not self.up:
            return False
        try:
            err = await self.modem.mqtt_publish((self.root + sub).encode(), payload)
        except (ATError, ATTimeout, OSError) as e:
            err = e
        if not err:
            self._failed = 0
            return True
        log("mqtt", "publish %s: %s" % (sub, err))
        self._failed += 1
        if err == 11 or self._failed >= 2:  # 11: no connection
            self._urc("+CMQTTCONNLOST: publish failed")
        return False

    async def dispatch(self):
        """Hand every queued received message to on_message, one at a time."""
        while self._inbox:
            sub, payload = self._inbox.pop(0)
            try:
                await self.on_message(sub, payload)
            except MemoryError:
                raise  # for the supervisor
            except Exception as e:
                log("mqtt", "handling %s failed: %r" % (sub, e))
