"""Voice calls: ATD<number>; with its outcomes (answered, busy, no answer, no carrier), ATH (honouring
AT+CVHU), AT+CHUP, ATA, AT+CLCC (list and URC), AT+CLIP, incoming calls with RING.

Every call is captured as a `CallRecord` (tests, the CLI and the demo list them: "the pendant called 112").
What the far end does is a setting: `ModemSettings.call_outcomes` maps a number (or "*") to an outcome.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import (
    AtCommand,
    AtError,
    CmeError,
    FinalResult,
    int_param,
    max_params,
)
from pendant_hardware.modem_sim.command_table import CommandTable

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

ANSWER, BUSY, NO_ANSWER, NO_CARRIER = "answer", "busy", "no_answer", "no_carrier"
OUTCOMES = (ANSWER, BUSY, NO_ANSWER, NO_CARRIER)
OUTGOING, INCOMING = 0, 1  # +CLCC <dir>
# +CLCC <stat> (3GPP TS 27.007)
ACTIVE, DIALING, ALERTING, RINGING, DISCONNECTED = 0, 2, 3, 4, 6
OPERATION_NOT_ALLOWED = 3
_NUMBER = re.compile(r"\+?[0-9*#]{1,40}")


@dataclass
class CallRecord:
    """One call, as the capture shows it. `outcome`: answered, busy, no_answer, no_carrier, missed,
    rejected / cancelled (the host hung up first), cut (the modem lost power), or pending while the call
    is set up; `ended_by`: host, remote or network."""

    id: int
    direction: str  # "out" or "in"
    number: str
    started: float  # time.time()
    answered: float | None = None
    ended: float | None = None
    outcome: str = "pending"
    ended_by: str | None = None
    state: int = DIALING

    @property
    def duration_s(self) -> float:
        """Seconds from answer to end (0 for a call never answered)."""
        if self.answered is None:
            return 0.0
        return (self.ended or time.time()) - self.answered

    def to_json(self) -> dict[str, object]:
        """As the capture file and the control port show it."""
        return {
            "id": self.id,
            "direction": self.direction,
            "number": self.number,
            "started": round(self.started, 3),
            "answered": round(self.answered, 3) if self.answered else None,
            "ended": round(self.ended, 3) if self.ended else None,
            "outcome": self.outcome,
            "ended_by": self.ended_by,
            "duration_s": round(self.duration_s, 1),
        }


def number_type(number: str) -> int:
    """The type of address: 145 international (leading +), 129 otherwise."""
    return 145 if number.startswith("+") else 129


def hhmmss(seconds: float) -> str:
    """A call's duration as `VOICE CALL: END:` prints it."""
    whole = int(seconds)
    return f"{whole // 3600:02d}{whole % 3600 // 60:02d}{whole % 60:02d}"


class VoiceCommands:
    """One call at a time (the pendant never needs more)."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.calls: list[CallRecord] = []
        self.current: CallRecord | None = None
        self.cvhu = 1  # A76XX default: ATH does not end a voice call until AT+CVHU=0
        self.clcc_urc = False
        self.clip = False
        self._task: asyncio.Task[None] | None = None

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("D", exec=self.dial)
        table.add("A", exec=self.answer)
        table.add("H", exec=self.hang_up)
        table.add("+CHUP", exec=self.chup)
        table.add("+CVHU", set=self.cvhu_set, read=self.cvhu_read)
        table.add("+CLCC", exec=self.clcc, set=self.clcc_set, read=self.clcc_read)
        table.add("+CLIP", set=self.clip_set, read=self.clip_read)

    def reset(self) -> None:
        """Power-off: the call is dropped (recorded as ended by the network), settings back to default."""
        if self.current is not None:
            if self.current.outcome == "pending":
                self.current.outcome = "cut"
            self._finish(self.current, "network", report=False)
        self.cvhu, self.clcc_urc, self.clip = 1, False, False

    # -- outgoing ------------------------------------------------------------------------------------

    async def dial(self, command: AtCommand) -> None:
        """ATD<number>; -> OK, then VOICE CALL: BEGIN / BUSY / NO ANSWER / NO CARRIER (URCs)."""
        text = command.params.strip()
        if not text.endswith(";"):
            raise AtError("only voice calls (ATD<number>;) are supported")
        number = text[:-1].strip()
        if not _NUMBER.fullmatch(number):
            raise AtError(f"not a dialable number: {number!r}")
        if self.current is not None:
            raise CmeError(OPERATION_NOT_ALLOWED)
        settings = self.modem.settings
        call = CallRecord(len(self.calls) + 1, "out", number, time.time())
        self.calls.append(call)
        self.current = call
        self.modem.call_changed(True)
        emergency = number in settings.emergency_numbers
        if not emergency and (not settings.sim_ready or not self.modem.registered):
            self._task = self.modem.spawn(self._fail_soon(call))
            return
        self._task = self.modem.spawn(self._outgoing(call, self._outcome(number)))

    def _outcome(self, number: str) -> str:
        outcomes = self.modem.settings.call_outcomes
        return outcomes.get(number, outcomes.get("*", ANSWER))

    async def _fail_soon(self, call: CallRecord) -> None:
        await asyncio.sleep(0)
        call.outcome = NO_CARRIER
        self._finish(call, "network", final="NO CARRIER")

    async def _outgoing(self, call: CallRecord, outcome: str) -> None:
        settings = self.modem.settings
        self._set_state(call, DIALING)
        await asyncio.sleep(settings.call_alert_s)
        self._set_state(call, ALERTING)
        if outcome == NO_ANSWER:
            await asyncio.sleep(settings.call_no_answer_s)
            call.outcome = NO_ANSWER
            self._finish(call, "remote", final="NO ANSWER")
            return
        await asyncio.sleep(settings.call_answer_s)
        if outcome in (BUSY, NO_CARRIER):
            call.outcome = outcome
            self._finish(call, "remote", final="BUSY" if outcome == BUSY else "NO CARRIER")
            return
        self._connect(call)
        if settings.call_remote_hangup_s is not None:
            await asyncio.sleep(settings.call_remote_hangup_s)
            self._finish(call, "remote", final="NO CARRIER")

    def _connect(self, call: CallRecord) -> None:
        call.answered = time.time()
        call.outcome = "answered"
        self._set_state(call, ACTIVE)
        self.modem.urc("VOICE CALL: BEGIN")

    # -- incoming ------------------------------------------------------------------------------------

    def ring(self, number: str) -> CallRecord:
        """Someone calls the pendant: RING (and +CLIP) every `ring_interval_s` until ATA, ATH/AT+CHUP,
        or the caller gives up after `incoming_timeout_s`. ValueError if a call is going on."""
        if not _NUMBER.fullmatch(number):
            raise ValueError(f"not a phone number: {number!r}")
        if self.current is not None:
            raise ValueError("the pendant is already in a call")
        if not self.modem.powered:
            raise ValueError("the modem is off")
        call = CallRecord(len(self.calls) + 1, "in", number, time.time(), state=RINGING)
        self.calls.append(call)
        self.current = call
        self.modem.call_changed(True)
        self._task = self.modem.spawn(self._ringing(call))
        return call

    async def _ringing(self, call: CallRecord) -> None:
        settings = self.modem.settings
        self._set_state(call, RINGING)
        deadline = time.monotonic() + settings.incoming_timeout_s
        while time.monotonic() < deadline:
            self.modem.urc("RING")
            if self.clip:
                self.modem.urc(f'+CLIP: "{call.number}",{number_type(call.number)},,,,0')
            await asyncio.sleep(min(settings.ring_interval_s, max(0.0, deadline - time.monotonic())))
        call.outcome = "missed"
        self._finish(call, "remote", final=f"MISSED_CALL: {time.strftime('%I:%M%p')} {call.number}")

    async def answer(self, command: AtCommand) -> None:
        """ATA: answer a ringing call (OK, then VOICE CALL: BEGIN); NO CARRIER when nothing rings."""
        call = self.current
        if call is None or call.direction != "in" or call.answered is not None:
            raise FinalResult("NO CARRIER")
        if self._task is not None:
            self._task.cancel()
        self.modem.spawn(self._answered(call))

    async def _answered(self, call: CallRecord) -> None:
        self._connect(call)
        settings = self.modem.settings
        if settings.call_remote_hangup_s is not None:
            self._task = asyncio.current_task()
            await asyncio.sleep(settings.call_remote_hangup_s)
            self._finish(call, "remote", final="NO CARRIER")

    # -- ending --------------------------------------------------------------------------------------

    async def hang_up(self, command: AtCommand) -> None:
        """ATH: ends the call only after AT+CVHU=0 (with the default CVHU 1 it answers OK and the call
        goes on, as on the A76XX)."""
        if command.params not in ("", "0"):
            raise AtError("ATH takes no parameter")
        if self.cvhu == 0:
            self._host_hangs_up()

    async def chup(self, command: AtCommand) -> None:
        """AT+CHUP: ends the call whatever AT+CVHU says."""
        self._host_hangs_up()

    def _host_hangs_up(self) -> None:
        call = self.current
        if call is None:
            return
        if call.outcome == "pending":
            call.outcome = "rejected" if call.direction == "in" else "cancelled"
        self._finish(call, "host")

    def _finish(self, call: CallRecord, by: str, *, final: str | None = None, report: bool = True) -> None:
        if call.ended is not None:
            return
        task = self._task
        self._task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        call.ended = time.time()
        call.ended_by = by
        if self.current is call:
            self.current = None
        if report:
            if call.answered is not None:
                self.modem.urc(f"VOICE CALL: END: {hhmmss(call.duration_s)}")
            if final is not None and (by != "host"):
                self.modem.urc(final)
            self._set_state(call, DISCONNECTED)
        call.state = DISCONNECTED
        self.modem.call_changed(False)
        self.modem.captured("call", call.to_json())

    def _set_state(self, call: CallRecord, state: int) -> None:
        call.state = state
        if self.clcc_urc:
            self.modem.urc(self._clcc_line(call))

    # -- settings and listing ------------------------------------------------------------------------

    @staticmethod
    def _clcc_line(call: CallRecord) -> str:
        direction = OUTGOING if call.direction == "out" else INCOMING
        return f'+CLCC: {call.id},{direction},{call.state},0,0,"{call.number}",{number_type(call.number)}'

    async def clcc(self, command: AtCommand) -> None:
        """AT+CLCC: the current call, if any."""
        if self.current is not None:
            self.modem.reply(self._clcc_line(self.current))

    async def clcc_set(self, command: AtCommand) -> None:
        """AT+CLCC=<0|1>: report every state change of a call as +CLCC."""
        params = command.args()
        max_params(params, 1)
        self.clcc_urc = bool(int_param(params, 0, 0, 1))

    async def clcc_read(self, command: AtCommand) -> None:
        """AT+CLCC?"""
        self.modem.reply(f"+CLCC: {int(self.clcc_urc)}")

    async def cvhu_set(self, command: AtCommand) -> None:
        """AT+CVHU=<0|1>: 0 lets ATH end voice calls."""
        params = command.args()
        max_params(params, 1)
        self.cvhu = int_param(params, 0, 0, 1)

    async def cvhu_read(self, command: AtCommand) -> None:
        """AT+CVHU?"""
        self.modem.reply(f"+CVHU: {self.cvhu}")

    async def clip_set(self, command: AtCommand) -> None:
        """AT+CLIP=<0|1>: show the caller's number after RING."""
        params = command.args()
        max_params(params, 1)
        self.clip = bool(int_param(params, 0, 0, 1))

    async def clip_read(self, command: AtCommand) -> None:
        """AT+CLIP?: <n>,<m> (1: the network provides the caller's number)."""
        self.modem.reply(f"+CLIP: {int(self.clip)},1")
