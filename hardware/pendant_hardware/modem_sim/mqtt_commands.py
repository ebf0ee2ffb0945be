"""The AT+CMQTT* family: service, clients, will, connect, publish, subscribe, and the RX/CONNLOST URCs.

This module speaks AT only; the broker connection of each client is a `BrokerLink` (mqtt_bridge.py).
Command-level failures are answered as the A76XX manual allows: `+CMQTT<CMD>: <index>,<err>` then `ERROR`;
syntax and range errors with plain `ERROR`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim import mqtt_bridge
from pendant_hardware.modem_sim.at_parser import AtCommand, AtError, int_param, max_params, str_param
from pendant_hardware.modem_sim.command_table import CommandTable, Handler
from pendant_hardware.modem_sim.mqtt_bridge import BrokerLink, ConnectParams
from pendant_hardware.modem_sim.tls import TlsSetupError

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

CLIENTS = 2
MAX_TOPIC = 1024
MAX_PAYLOAD = 10240
MAX_WILL = 1024

BAD_UTF8 = 2
NETWORK_NOT_OPENED = 9
NO_CONNECTION = mqtt_bridge.NO_CONNECTION
CLIENT_BUSY = 14
TOPIC_EMPTY = 18
CLIENT_USED = 19
CLIENT_NOT_ACQUIRED = 20
TLS_HANDSHAKE_FAIL = mqtt_bridge.TLS_HANDSHAKE_FAIL

_ADDRESS = re.compile(r"tcp://(\[[^\]]+\]|[^:/]+)(?::(\d{1,5}))?/?")


class CommandFailed(Exception):
    """Answer `+CMQTT<CMD>: <index>,<err>` then ERROR."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.err = err


@dataclass
class ClientSlot:
    """What the modem holds for one MQTT client index."""

    index: int
    client_id: str | None = None
    tls: bool = False
    mqtt_v311: bool = True
    will_topic: bytes | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    topic: bytes | None = None
    payload: bytes = b""
    sub_topics: list[tuple[bytes, int]] = field(default_factory=list)
    unsub_topics: list[bytes] = field(default_factory=list)
    link: BrokerLink | None = None

    @property
    def busy(self) -> bool:
        """Connected or connecting."""
        return self.link is not None


class MqttCommands:
    """The modem's MQTT service and its two client slots."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.started = False
        self.slots = [ClientSlot(index) for index in range(CLIENTS)]
        self.busy_left = 0  # fault client_busy: the next publishes fail with 14
        self.start_before_ok = False  # quirk: +CMQTTSTART: 0 before the OK
        self.unreachable: tuple[int, float] | None = None  # fault broker_unreachable: (err, after_s)

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CMQTTSTART", exec=self.start)
        table.add("+CMQTTSTOP", exec=self.stop)
        table.add("+CMQTTACCQ", set=self._failing("+CMQTTACCQ", self.accq), read=self.accq_read)
        table.add("+CMQTTREL", set=self._failing("+CMQTTREL", self.rel))
        table.add("+CMQTTWILLTOPIC", set=self._failing("+CMQTTWILLTOPIC", self.will_topic))
        table.add("+CMQTTWILLMSG", set=self._failing("+CMQTTWILLMSG", self.will_msg))
        table.add("+CMQTTCONNECT", set=self._failing("+CMQTTCONNECT", self.connect))
        table.add("+CMQTTDISC", set=self._failing("+CMQTTDISC", self.disc))
        table.add("+CMQTTTOPIC", set=self._failing("+CMQTTTOPIC", self.topic))
        table.add("+CMQTTPAYLOAD", set=self._failing("+CMQTTPAYLOAD", self.payload))
        table.add("+CMQTTPUB", set=self._failing("+CMQTTPUB", self.pub))
        table.add("+CMQTTSUBTOPIC", set=self._failing("+CMQTTSUBTOPIC", self.sub_topic))
        table.add("+CMQTTSUB", set=self._failing("+CMQTTSUB", self.sub))
        table.add("+CMQTTUNSUBTOPIC", set=self._failing("+CMQTTUNSUBTOPIC", self.unsub_topic))
        table.add("+CMQTTUNSUB", set=self._failing("+CMQTTUNSUB", self.unsub))

    def _failing(self, name: str, handler: Handler) -> Handler:
        """Wrap a handler so that CommandFailed is answered `<name>: <index>,<err>` then ERROR."""

        async def run(command: AtCommand) -> None:
            try:
                await handler(command)
            except CommandFailed as failure:
                index = command.args()[0]
                self.modem.reply(f"{name}: {index.text if index else 0},{failure.err}")
                raise AtError(f"{name} failed with {failure.err}") from None

        return run

    # -- hooks and state -----------------------------------------------------------------------------

    def is_connected(self, index: int = 0) -> bool:
        """True while client `index` has a broker connection."""
        link = self.slots[index].link
        return link is not None and link.connected

    def drop(self, cause: int, index: int | None = None) -> None:
        """Break connections as the network would: the broker sends the will, the host gets CONNLOST."""
        for slot in self.slots:
            if (index is None or slot.index == index) and slot.link is not None:
                if slot.link.connected:
                    slot.link.drop(cause)
                else:  # still connecting: it fails instead
                    slot.link.kill()
                    slot.link = None
                    self.modem.urc(f"+CMQTTCONNECT: {slot.index},{mqtt_bridge.SOCKET_CONNECT_FAIL}")

    def reset(self) -> None:
        """Power-off: every connection broken silently, every client released, the service stopped."""
        for slot in self.slots:
            if slot.link is not None:
                slot.link.kill()
        self.started = False
        self.slots = [ClientSlot(index) for index in range(CLIENTS)]

    def nonet(self) -> None:
        """The data network went away: connections broken (the broker sends the wills), clients released,
        the service stopped, `+CMQTTNONET` to the host, which must start the service again."""
        self.reset()
        self.modem.urc("+CMQTTNONET")

    def _slot(self, params, need_acquired: bool = True) -> ClientSlot:
        slot = self.slots[int_param(params, 0, 0, CLIENTS - 1)]
        if need_acquired and slot.client_id is None:
            raise CommandFailed(CLIENT_NOT_ACQUIRED)
        return slot

    async def _input(self, size: int) -> bytes:
        return await self.modem.read_data(size)

    # -- service -------------------------------------------------------------------------------------

    async def start(self, command: AtCommand) -> None:
        """AT+CMQTTSTART: OK then +CMQTTSTART: 0; ERROR when already started."""
        if self.started:
            raise AtError("MQTT service already started")
        self.started = True
        if self.start_before_ok:
            self.modem.urc("+CMQTTSTART: 0")  # a real-modem quirk: the result before the OK
            return
        self.modem.spawn(self._started())

    async def _started(self) -> None:
        await asyncio.sleep(self.modem.settings.mqtt_start_delay_s)
        self.modem.urc("+CMQTTSTART: 0")

    async def stop(self, command: AtCommand) -> None:
        """AT+CMQTTSTOP: OK then +CMQTTSTOP: 0 (connections dropped, clients released); ERROR if stopped."""
        if not self.started:
            raise AtError("MQTT service not started")
        self.reset()
        self.modem.spawn(self._urc_soon("+CMQTTSTOP: 0"))

    async def _urc_soon(self, line: str) -> None:
        self.modem.urc(line)

    async def _urc_later(self, line: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.modem.urc(line)

    # -- clients -------------------------------------------------------------------------------------

    async def accq(self, command: AtCommand) -> None:
        """AT+CMQTTACCQ=<index>,"<clientid>"[,<server_type>[,<mqtt_version>]]."""
        params = command.args()
        max_params(params, 4)
        slot = self._slot(params, need_acquired=False)
        client_id = str_param(params, 1)
        tls = int_param(params, 2, 0, 1, 0)
        version = int_param(params, 3, 3, 4, 4)
        if not 1 <= len(client_id.encode()) <= 128:
            raise AtError("client id must be 1..128 bytes")
        if not self.started:
            raise CommandFailed(NETWORK_NOT_OPENED)
        if slot.client_id is not None:
            raise CommandFailed(CLIENT_USED)
        slot.client_id, slot.tls, slot.mqtt_v311 = client_id, bool(tls), version == 4

    async def accq_read(self, command: AtCommand) -> None:
        """AT+CMQTTACCQ?: one line per client index."""
        self.modem.reply_block(
            [f'+CMQTTACCQ: {slot.index},"{slot.client_id or ""}",{int(slot.tls)}' for slot in self.slots]
        )

    async def rel(self, command: AtCommand) -> None:
        """AT+CMQTTREL=<index>: release a client that is not connected."""
        params = command.args()
        max_params(params, 1)
        slot = self._slot(params)
        if slot.busy:
            raise CommandFailed(CLIENT_BUSY)
        self.slots[slot.index] = ClientSlot(slot.index)

    async def will_topic(self, command: AtCommand) -> None:
        """AT+CMQTTWILLTOPIC=<index>,<len>: `>`, then exactly <len> bytes of topic."""
        params = command.args()
        max_params(params, 2)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_WILL)
        slot.will_topic = await self._input(size)

    async def will_msg(self, command: AtCommand) -> None:
        """AT+CMQTTWILLMSG=<index>,<len>,<qos>: `>`, then exactly <len> bytes of will message."""
        params = command.args()
        max_params(params, 3)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_WILL)
        slot.will_qos = int_param(params, 2, 0, 2)
        slot.will_payload = await self._input(size)

    # -- connection ----------------------------------------------------------------------------------

    async def connect(self, command: AtCommand) -> None:
        """AT+CMQTTCONNECT=<index>,"tcp://host:port",<keepalive>,<clean>[,"user"[,"pass"]]."""
        params = command.args()
        max_params(params, 6)
        slot = self._slot(params)
        host, port = _parse_address(str_param(params, 1))
        keepalive = int_param(params, 2, 1, 64800)
        clean = int_param(params, 3, 0, 1)
        username = str_param(params, 4) if len(params) > 4 and params[4] is not None else None
        password = str_param(params, 5) if len(params) > 5 and params[5] is not None else None
        if slot.busy:
            raise CommandFailed(CLIENT_BUSY)
        will_topic = None
        if slot.will_topic is not None:
            will_topic = _utf8(slot.will_topic)
        connect = ConnectParams(
            client_id=slot.client_id or "",
            host=host,
            port=port,
            keepalive=keepalive,
            clean_session=bool(clean),
            username=username,
            password=password,
            will_topic=will_topic,
            will_payload=slot.will_payload if will_topic is not None else None,
            will_qos=slot.will_qos,
            tls=slot.tls,
            mqtt_v311=slot.mqtt_v311,
        )
        if not self.modem.registered:
            self.modem.spawn(self._urc_soon(f"+CMQTTCONNECT: {slot.index},{mqtt_bridge.SOCKET_CONNECT_FAIL}"))
            return
        if self.unreachable is not None:
            err, after_s = self.unreachable
            self.modem.spawn(self._urc_later(f"+CMQTTCONNECT: {slot.index},{err}", after_s))
            return
        if slot.tls:
            try:
                connect = dataclasses.replace(connect, ssl_context=self.modem.tls.ssl_context(slot.index))
            except TlsSetupError as exc:
                self.modem.uart.trace(f"TLS set-up failed: {exc}")
                self.modem.spawn(self._urc_soon(f"+CMQTTCONNECT: {slot.index},{exc.err}"))
                return
        link = BrokerLink(
            connect,
            on_connect_result=lambda err: self._connect_result(slot, link, err),
            on_lost=lambda cause: self._lost(slot, link, cause),
            on_message=lambda topic, payload: self._received(slot, topic, payload),
            on_packet=self.modem.radio_packet,
        )
        slot.link = link
        link.start(self.modem.settings.mqtt_connect_timeout_s)

    def _connect_result(self, slot: ClientSlot, link: BrokerLink, err: int) -> None:
        if slot.link is not link:
            return
        if err != mqtt_bridge.OK:
            slot.link = None
            if link.failure:
                self.modem.uart.trace(link.failure)
        self.modem.urc(f"+CMQTTCONNECT: {slot.index},{err}")

    def _lost(self, slot: ClientSlot, link: BrokerLink, cause: int) -> None:
        if slot.link is link:
            slot.link = None
            self.modem.urc(f"+CMQTTCONNLOST: {slot.index},{cause}")

    async def disc(self, command: AtCommand) -> None:
        """AT+CMQTTDISC=<index>,<timeout>: OK then +CMQTTDISC: <index>,0 once disconnected."""
        params = command.args()
        max_params(params, 2)
        slot = self._slot(params)
        timeout = int_param(params, 1, 0, 180, 0)
        link = slot.link
        if link is None or not link.connected:
            raise CommandFailed(NO_CONNECTION)
        slot.link = None
        self.modem.spawn(self._await_result(f"+CMQTTDISC: {slot.index}", link.disconnect(), timeout or 1))

    async def _await_result(self, prefix: str, future: asyncio.Future[int], timeout: float) -> None:
        try:
            err = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            err = mqtt_bridge.TIMEOUT
        self.modem.urc(f"{prefix},{err}")

    # -- publish -------------------------------------------------------------------------------------

    async def topic(self, command: AtCommand) -> None:
        """AT+CMQTTTOPIC=<index>,<len>: `>`, then the publish topic."""
        params = command.args()
        max_params(params, 2)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_TOPIC)
        slot.topic = await self._input(size)

    async def payload(self, command: AtCommand) -> None:
        """AT+CMQTTPAYLOAD=<index>,<len>: `>`, then the publish payload."""
        params = command.args()
        max_params(params, 2)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_PAYLOAD)
        slot.payload = await self._input(size)

    async def pub(self, command: AtCommand) -> None:
        """AT+CMQTTPUB=<index>,<qos>,<timeout>[,<retained>[,<dup>]]: OK, then +CMQTTPUB: <index>,<err>
        when the message is written (QoS 0) or acknowledged by the broker (QoS 1 and 2)."""
        params = command.args()
        max_params(params, 5)
        slot = self._slot(params)
        qos = int_param(params, 1, 0, 2)
        timeout = int_param(params, 2, 1, 180)
        retained = int_param(params, 3, 0, 1, 0)
        int_param(params, 4, 0, 1, 0)
        if slot.link is None or not slot.link.connected:
            raise CommandFailed(NO_CONNECTION)
        if slot.topic is None:
            raise CommandFailed(TOPIC_EMPTY)
        if self.busy_left > 0:  # fault client_busy (seen on real modems under load): nothing is sent
            self.busy_left -= 1
            raise CommandFailed(CLIENT_BUSY)
        topic = _utf8(slot.topic)
        future = slot.link.publish(topic, slot.payload, qos, bool(retained))
        slot.topic, slot.payload = None, b""
        self.modem.spawn(self._await_result(f"+CMQTTPUB: {slot.index}", future, timeout))

    # -- subscribe -----------------------------------------------------------------------------------

    async def sub_topic(self, command: AtCommand) -> None:
        """AT+CMQTTSUBTOPIC=<index>,<len>,<qos>: `>`, then a topic added to the subscribe list."""
        params = command.args()
        max_params(params, 3)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_TOPIC)
        qos = int_param(params, 2, 0, 2)
        slot.sub_topics.append((await self._input(size), qos))

    async def sub(self, command: AtCommand) -> None:
        """AT+CMQTTSUB=<index> subscribes the list; AT+CMQTTSUB=<index>,<len>,<qos>[,<dup>] one topic.
        OK, then +CMQTTSUB: <index>,<err> on SUBACK."""
        params = command.args()
        max_params(params, 4)
        slot = self._slot(params)
        if len(params) > 1:
            size = int_param(params, 1, 1, MAX_TOPIC)
            qos = int_param(params, 2, 0, 2)
            int_param(params, 3, 0, 1, 0)
            self._require_connected(slot)
            topics = [(await self._input(size), qos)]
        else:
            topics, slot.sub_topics = slot.sub_topics, []
        self._require_connected(slot)
        if not topics:
            raise CommandFailed(TOPIC_EMPTY)
        future = slot.link.subscribe([(_utf8(topic), qos) for topic, qos in topics])
        self.modem.spawn(self._await_result(f"+CMQTTSUB: {slot.index}", future, 30))

    async def unsub_topic(self, command: AtCommand) -> None:
        """AT+CMQTTUNSUBTOPIC=<index>,<len>: `>`, then a topic added to the unsubscribe list."""
        params = command.args()
        max_params(params, 2)
        slot = self._slot(params)
        size = int_param(params, 1, 1, MAX_TOPIC)
        slot.unsub_topics.append(await self._input(size))

    async def unsub(self, command: AtCommand) -> None:
        """AT+CMQTTUNSUB=<index>,<dup> unsubscribes the list; AT+CMQTTUNSUB=<index>,<len>,<dup> one topic.
        OK, then +CMQTTUNSUB: <index>,<err> on UNSUBACK."""
        params = command.args()
        max_params(params, 3)
        slot = self._slot(params)
        if len(params) > 2:
            size = int_param(params, 1, 1, MAX_TOPIC)
            int_param(params, 2, 0, 1)
            self._require_connected(slot)
            topics = [await self._input(size)]
        else:
            int_param(params, 1, 0, 1, 0)
            topics, slot.unsub_topics = slot.unsub_topics, []
        self._require_connected(slot)
        if not topics:
            raise CommandFailed(TOPIC_EMPTY)
        future = slot.link.unsubscribe([_utf8(topic) for topic in topics])
        self.modem.spawn(self._await_result(f"+CMQTTUNSUB: {slot.index}", future, 30))

    @staticmethod
    def _require_connected(slot: ClientSlot) -> None:
        if slot.link is None or not slot.link.connected:
            raise CommandFailed(NO_CONNECTION)

    # -- receive -------------------------------------------------------------------------------------

    def _received(self, slot: ClientSlot, topic: bytes, payload: bytes) -> None:
        """Send one message as +CMQTTRXSTART, RXTOPIC, RXPAYLOAD (chunked when the setting asks), RXEND."""
        index = slot.index
        chunk = self.modem.settings.rx_chunk_bytes
        self.modem.urc(f"+CMQTTRXSTART: {index},{len(topic)},{len(payload)}")
        for part in _chunks(topic, chunk):
            self.modem.urc(f"+CMQTTRXTOPIC: {index},{len(part)}")
            self.modem.urc_data(part + b"\r\n")
        for part in _chunks(payload, chunk):
            self.modem.urc(f"+CMQTTRXPAYLOAD: {index},{len(part)}")
            self.modem.urc_data(part + b"\r\n")
        self.modem.urc(f"+CMQTTRXEND: {index}")


def _parse_address(address: str) -> tuple[str, int]:
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise AtError(f"server address must be tcp://host:port: {address!r}")
    port = int(match.group(2) or 1883)
    if not 1 <= port <= 65535:
        raise AtError(f"port out of range: {port}")
    return match.group(1).strip("[]"), port


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandFailed(BAD_UTF8) from None


def _chunks(data: bytes, size: int) -> list[bytes]:
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[start : start + size] for start in range(0, len(data), size)]
