"""Power commands: AT+CSCLK (sleep allowed while DTR is high), AT+CPSMS (LTE power saving mode),
AT+CFUN (radio on/off) and AT+CPOF (switch off)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import AtCommand, AtError, int_param, max_params
from pendant_hardware.modem_sim.command_table import CommandTable

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

FULL, MINIMUM, NO_RF = 1, 0, 4
_TIMER = re.compile(r"[01]{8}")  # 3GPP TS 24.008 GPRS timer octets as AT+CPSMS writes them


class PowerCommands:
    """Sleep, PSM and radio state; the consequences (sleeping UART, registration) live on the modem."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.csclk = 0
        self.psm: list[str] = ["0", "", "", "", ""]
        self.cfun = FULL

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CSCLK", set=self.csclk_set, read=self.csclk_read)
        table.add("+CPSMS", set=self.cpsms_set, read=self.cpsms_read)
        table.add("+CFUN", set=self.cfun_set, read=self.cfun_read)
        table.add("+CPOF", exec=self.cpof)

    def reset(self) -> None:
        """Power-on state: no sleep, no PSM, radio on."""
        self.csclk = 0
        self.psm = ["0", "", "", "", ""]
        self.cfun = FULL

    async def csclk_set(self, command: AtCommand) -> None:
        """AT+CSCLK=<0|1|2>: 1 lets the modem sleep while DTR is high (2: sleeps when idle, not used)."""
        params = command.args()
        max_params(params, 1)
        self.csclk = int_param(params, 0, 0, 2)
        self.modem.sleep_conditions_changed()

    async def csclk_read(self, command: AtCommand) -> None:
        """AT+CSCLK?"""
        self.modem.reply(f"+CSCLK: {self.csclk}")

    async def cpsms_set(self, command: AtCommand) -> None:
        """AT+CPSMS=<mode>[,<RAU>,<GPRS-READY>,<TAU>,<Active-Time>]: the timers are 8-bit strings."""
        params = command.args()
        max_params(params, 5)
        mode = int_param(params, 0, 0, 2)
        timers = []
        for index in range(1, 5):
            param = params[index] if index < len(params) else None
            if param is None:
                timers.append(self.psm[index] if mode == 1 else "")
                continue
            if not param.quoted or not _TIMER.fullmatch(param.text):
                raise AtError(f"PSM timer {index} must be 8 quoted binary digits")
            timers.append(param.text)
        self.psm = [str(0 if mode == 2 else mode), *([""] * 4 if mode != 1 else timers)]

    async def cpsms_read(self, command: AtCommand) -> None:
        """AT+CPSMS?: +CPSMS: <mode>,[<RAU>],[<GPRS-READY>],[<TAU>],[<Active-Time>]."""
        timers = ",".join(f'"{timer}"' if timer else "" for timer in self.psm[1:])
        self.modem.reply(f"+CPSMS: {self.psm[0]},{timers}")

    async def cfun_set(self, command: AtCommand) -> None:
        """AT+CFUN=<0|1|4>[,<rst>]: radio off (0, 4) drops the network; rst 1 restarts the modem."""
        params = command.args()
        max_params(params, 2)
        fun = int_param(params, 0, 0, 4)
        if fun not in (MINIMUM, FULL, NO_RF):
            raise AtError(f"AT+CFUN={fun} is not supported")
        reset = int_param(params, 1, 0, 1, 0)
        self.modem.set_radio(fun == FULL, fun)
        if reset:
            self.modem.spawn(self.modem.restart())

    async def cfun_read(self, command: AtCommand) -> None:
        """AT+CFUN?"""
        self.modem.reply(f"+CFUN: {self.cfun}")

    async def cpof(self, command: AtCommand) -> None:
        """AT+CPOF: OK, then the modem switches itself off (a PWRKEY pulse switches it on again)."""
        self.modem.spawn(self.modem.power_off_soon())
