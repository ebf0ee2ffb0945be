"""SMS in text mode (3GPP TS 27.005): AT+CMGF, AT+CSCS, AT+CMGS (text ended by Ctrl-Z, cancelled by ESC),
incoming messages with +CMTI, AT+CMGR, AT+CMGD, AT+CNMI.

Every message the pendant sends (or tries to) is captured as an `SmsRecord`. PDU mode is accepted by
AT+CMGF=0 but sending in it is not simulated (`+CMS ERROR: 303`): the firmware uses text mode.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import (
    AtCommand,
    AtError,
    CmsError,
    int_param,
    max_params,
    str_param,
)
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.general import format_cclk

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

CTRL_Z, ESC = 0x1A, 0x1B
MAX_SEPTETS = 160
# +CMS ERROR codes (3GPP TS 27.005, 3.2.5) and their texts for AT+CMEE=2.
CMS_TEXT = {
    300: "ME failure",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    321: "invalid memory index",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
NOT_SUPPORTED, INVALID_TEXT, SIM_NOT_INSERTED, INVALID_INDEX, NO_NETWORK = 303, 305, 310, 321, 331
CHARSETS = ("GSM", "IRA", "UCS2")
# GSM 03.38 default alphabet (one septet) and its extension table (two septets each).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "^{}\\[~]|€\f"


def septets(text: str) -> int | None:
    """How many GSM 7-bit septets `text` takes; None when a character is not in the GSM alphabet."""
    count = 0
    for char in text:
        if char in GSM_EXTENDED:
            count += 2
        elif char in GSM_BASIC:
            count += 1
        else:
            return None
    return count


@dataclass
class SmsRecord:
    """One message the pendant sent or tried to: status sent, failed (with the error) or cancelled."""

    number: str
    text: str
    t: float  # time.time() when Ctrl-Z or ESC came
    status: str
    reference: int | None = None
    error: int | None = None

    def to_json(self) -> dict[str, object]:
        """As the capture file and the control port show it."""
        return {name: value for name, value in self.__dict__.items() if value is not None}


@dataclass
class StoredSms:
    """A received message in the SIM's storage."""

    sender: str
    text: str
    t: float
    read: bool = False


class SmsCommands:
    """Text-mode SMS; state per power-on (format, charset), storage kept like the SIM keeps it."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.sent: list[SmsRecord] = []
        self.inbox: dict[int, StoredSms] = {}
        self.text_mode = False  # AT+CMGF=0 (PDU) is the power-on default
        self.charset = "GSM"
        self.cnmi = (2, 1, 0, 0, 0)
        self.failures: list[int] = []  # fault: the next sends fail with these +CMS ERROR codes
        self._reference = 0

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CMGF", set=self.cmgf_set, read=self.cmgf_read, test=self.cmgf_test)
        table.add("+CSCS", set=self.cscs_set, read=self.cscs_read)
        table.add("+CMGS", set=self.cmgs)
        table.add("+CNMI", set=self.cnmi_set, read=self.cnmi_read)
        table.add("+CMGR", set=self.cmgr)
        table.add("+CMGD", set=self.cmgd)

    def reset(self) -> None:
        """Power-on settings (the SIM's storage stays)."""
        self.text_mode = False
        self.charset = "GSM"
        self.cnmi = (2, 1, 0, 0, 0)

    async def cmgf_set(self, command: AtCommand) -> None:
        """AT+CMGF=<0|1>: PDU or text mode."""
        params = command.args()
        max_params(params, 1)
        self.text_mode = bool(int_param(params, 0, 0, 1))

    async def cmgf_read(self, command: AtCommand) -> None:
        """AT+CMGF?"""
        self.modem.reply(f"+CMGF: {int(self.text_mode)}")

    async def cmgf_test(self, command: AtCommand) -> None:
        """AT+CMGF=?"""
        self.modem.reply("+CMGF: (0-1)")

    async def cscs_set(self, command: AtCommand) -> None:
        """AT+CSCS="<charset>": GSM, IRA or UCS2."""
        params = command.args()
        max_params(params, 1)
        charset = str_param(params, 0)
        if charset not in CHARSETS:
            raise AtError(f"unknown character set {charset}")
        self.charset = charset

    async def cscs_read(self, command: AtCommand) -> None:
        """AT+CSCS?"""
        self.modem.reply(f'+CSCS: "{self.charset}"')

    async def cmgs(self, command: AtCommand) -> None:
        """AT+CMGS="<number>"[,<toda>]: `> ` prompt, the text, then Ctrl-Z sends (+CMGS: <mr>, OK) and
        ESC cancels (OK)."""
        if not self.text_mode:
            raise CmsError(NOT_SUPPORTED)
        params = command.args()
        max_params(params, 2)
        number = str_param(params, 0)
        int_param(params, 1, 0, 255, 129)
        if not number or not all(char.isdigit() or char in "+*#" for char in number):
            raise CmsError(INVALID_TEXT)
        if not self.modem.settings.sim_ready:
            raise CmsError(SIM_NOT_INSERTED)
        self.modem.send_raw(b"\r\n> ")
        try:
            raw, stop = await self.modem.uart.read_text(
                bytes([CTRL_Z, ESC]), self.modem.settings.data_timeout_s, b"\r\n> "
            )
        except TimeoutError:
            raise AtError("no Ctrl-Z or ESC after the SMS text") from None
        text = raw.decode("latin-1" if self.charset != "UCS2" else "ascii", "replace")
        if self.charset == "UCS2":
            text = _from_ucs2_hex(text)
        record = SmsRecord(number, text, time.time(), "cancelled")
        if stop == ESC:
            self._capture(record)
            return
        await self._send(record)

    async def _send(self, record: SmsRecord) -> None:
        settings = self.modem.settings
        error: int | None = None
        if self.charset == "GSM" and (septets(record.text) or MAX_SEPTETS + 1) > MAX_SEPTETS:
            error = INVALID_TEXT  # longer than one message, or outside the GSM alphabet
        elif self.failures:
            await asyncio.sleep(settings.sms_send_s)
            error = self.failures.pop(0)
        elif not self.modem.registered:
            await asyncio.sleep(settings.sms_send_s)
            error = NO_NETWORK
        else:
            await asyncio.sleep(settings.sms_send_s)
            self.modem.radio_packet()
        if error is not None:
            record.status, record.error = "failed", error
            self._capture(record)
            raise CmsError(error)
        self._reference = (self._reference + 1) % 256
        record.status, record.reference = "sent", self._reference
        self._capture(record)
        self.modem.reply(f"+CMGS: {self._reference}")

    def _capture(self, record: SmsRecord) -> None:
        self.sent.append(record)
        self.modem.captured("sms", record.to_json())

    # -- receiving -----------------------------------------------------------------------------------

    def deliver(self, sender: str, text: str) -> int:
        """A message arrives: stored in the first free index, `+CMTI: "SM",<index>` when AT+CNMI asks."""
        index = 0
        while index in self.inbox:
            index += 1
        self.inbox[index] = StoredSms(sender, text, time.time())
        self.modem.radio_packet()
        if self.cnmi[1] in (1, 2, 3):
            self.modem.urc(f'+CMTI: "SM",{index}')
        return index

    async def cnmi_set(self, command: AtCommand) -> None:
        """AT+CNMI=<mode>[,<mt>[,<bm>[,<ds>[,<bfr>]]]]: how new messages are indicated."""
        params = command.args()
        max_params(params, 5)
        limits = (3, 3, 3, 2, 1)
        self.cnmi = tuple(  # type: ignore[assignment]
            int_param(params, index, 0, high, self.cnmi[index]) for index, high in enumerate(limits)
        )

    async def cnmi_read(self, command: AtCommand) -> None:
        """AT+CNMI?"""
        self.modem.reply("+CNMI: " + ",".join(str(value) for value in self.cnmi))

    async def cmgr(self, command: AtCommand) -> None:
        """AT+CMGR=<index>: the stored message (text mode) and mark it read."""
        params = command.args()
        max_params(params, 2)
        index = int_param(params, 0, 0, 254)
        stored = self.inbox.get(index)
        if stored is None:
            raise CmsError(INVALID_INDEX)
        if not self.text_mode:
            raise CmsError(NOT_SUPPORTED)
        status = "REC READ" if stored.read else "REC UNREAD"
        stored.read = True
        self.modem.reply_block(
            [f'+CMGR: "{status}","{stored.sender}","","{format_cclk(stored.t)}"', stored.text]
        )

    async def cmgd(self, command: AtCommand) -> None:
        """AT+CMGD=<index>[,<delflag>]: delete one message (delflag 4: all)."""
        params = command.args()
        max_params(params, 2)
        index = int_param(params, 0, 0, 254)
        flag = int_param(params, 1, 0, 4, 0)
        if flag == 4:
            self.inbox.clear()
        elif self.inbox.pop(index, None) is None and flag == 0:
            raise CmsError(INVALID_INDEX)


def _from_ucs2_hex(text: str) -> str:
    try:
        return bytes.fromhex(text).decode("utf-16-be")
    except ValueError:
        raise CmsError(INVALID_TEXT) from None
