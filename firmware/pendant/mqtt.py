"""Keeps the MQTT session up over the modem: bring-up, will, connect, birth, subscriptions, reconnects.

The wire work is in modem.py, start.py and connect.py (network.py brings the modem up); this is the resilience
around it (as mqtt_as separates MQTT_base from MQTTClient). `keep()`, called in a loop (the app's worker), reconnects with exponential
backoff after `+CMQTTCONNLOST`, `+CMQTTPING` or failed publishes, starts again from AT+CMQTTSTART after
`+CMQTTNONET` or repeated failures, brings the whole modem up again when even that fails, and
power-cycles it first when it has stopped answering (`hung`). Outages
never raise into the application: `publish` returns False while offline. Received messages are queued by the reader task
and handed to `on_message(subtopic, payload)` by `dispatch()`, which the app's worker task calls.
"""

from time import ticks_add, ticks_diff, ticks_ms

from . import connect, log, network, start
from .atchan import ATError, ATTimeout
from .modem import BRING_UP, POWER_CYCLE, START

# The first retry pause; it doubles after each failure up to a minute. A test may shorten it.
config = {"backoff_ms": 2000}


class Session:
    """The pendant's MQTT session. up: connected (None while the birth is on its way); gen: number of
    successful connects so far; failures: connects failed in a row; inbox: received (subtopic, payload)
    not dispatched yet."""

    def __init__(self, modem, device_id, state):
        self.modem = modem
        self.device_id = device_id
        self.state = state
        self.root = "pendant/v1/%s/" % device_id
        self.up = False
        self.gen = 0
        self.on_message = None  # async fn(subtopic str, payload bytes)
        self.on_connect = lambda: None  # fn(), after every successful connect and subscribe
        self.need = BRING_UP  # what to redo before connecting (modem.py: NOTHING ... POWER_CYCLE)
        self._failed = 0  # publishes failed in a row
        self.inbox = []
        self._rx = None  # [topic, payload] of the message arriving; False when it cannot be kept
        self.failures = 0
        self._next_try = ticks_ms()  # no connect before this
        modem.chan.on("+CMQTT", self._urc)

    def _urc(self, line, data=None):
        # Unsolicited +CMQTT... lines (in the reader task: no waiting). A received message comes as
        # +CMQTTRXSTART: 0,<topic len>,<payload len>, +CMQTTRXTOPIC: 0,<n> and +CMQTTRXPAYLOAD: 0,<n> each
        # with its block (a topic or a payload may come in several chunks), +CMQTTRXEND: 0. Loss:
        # +CMQTTCONNLOST and +CMQTTPING mean reconnect, +CMQTTNONET start the service again. Late results
        # of timed-out commands (+CMQTTPUB: ...) land here too and are ignored.
        rx = self._rx
        kind = line[8:11] if line.startswith("+CMQTTRX") else ""  # STA, TOP, PAY, END
        if kind == "STA" or rx is None and kind:  # START, or a firmware that sends no +CMQTTRXSTART
            rx = self._rx = [b"", b""]
        if kind == "TOP" or kind == "PAY":
            if data is None or not rx:  # a block too long to keep: the message is lost
                self._rx = False
            else:
                rx[kind == "PAY"] += data
        elif kind == "END":
            self._rx = None
            try:
                topic = rx[0].decode()
            except (TypeError, UnicodeError):
                topic = ""
            if not topic.startswith(self.root) or len(self.inbox) > 5:
                log("mqtt", "dropped a message on " + topic)
            else:
                self.inbox.append((topic[len(self.root) :], rx[1]))
        elif line.startswith(("+CMQTTCONNLOST", "+CMQTTPING", "+CMQTTNONET")):
            if line.startswith("+CMQTTNONET"):
                self.need = max(self.need, START)
            if self.up:
                log("mqtt", "connection lost: " + line)
            self.up = False

    def hung(self):
        """The modem stopped answering: power-cycle it and start over (the next keep() does)."""
        if self.need < POWER_CYCLE:
            log("mqtt", "modem hung")
            self.need = POWER_CYCLE
            self.up = self.modem.ready = False  # the fallback lets go of the modem too
            self._next_try = ticks_ms()

    async def keep(self):
        """When offline and the backoff pause is over, try to connect once. Returns at once otherwise."""
        if self.up or ticks_diff(ticks_ms(), self._next_try) < 0:
            return
        try:
            if self.need >= BRING_UP:
                self.modem.ready = False  # no fallback steps now: the modem cannot send or call
                await network.bring_up(self)
                self.need = START
            if self.need:  # the MQTT service from scratch, TLS set up
                await start.start(self)
            sess = await connect.connect(self)
            if self.up is False:  # lost again meanwhile
                raise ATError("lost")
        except Exception as e:  # whatever went wrong, the loop retries: never raise into the app
            log("mqtt", "connect: %r" % e)
            self.up = False
            self.failures += 1
            failures = self.failures
            if failures % 6 == 0:  # the modem itself may be wedged: bring it up again
                self.need = max(self.need, BRING_UP)
            elif failures % 3 == 0:  # start the MQTT service again
                self.need = max(self.need, START)
            delay = min(config["backoff_ms"] << min(failures - 1, 8), 60000)
            self._next_try = ticks_add(ticks_ms(), delay)
            log("mqtt", "offline, retry in %d ms" % delay)
            return
        self.failures = 0
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
        while self.inbox:
            sub, payload = self.inbox.pop(0)
            try:
                await self.on_message(sub, payload)
            except Exception as e:
                log("mqtt", "handling %s failed: %r" % (sub, e))
