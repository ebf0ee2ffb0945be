"""General commands: AT, echo, identity, error format, SIM, clock, battery and reset."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import AtCommand, AtError, CmeError, int_param, max_params
from pendant_hardware.modem_sim.command_table import CommandTable

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

# 3GPP TS 27.007 error texts for AT+CMEE=2 (only the codes the simulator produces).
CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    30: "no network service",
    100: "unknown",
}
SIM_NOT_INSERTED = 10
NO_NETWORK_SERVICE = 30


class GeneralCommands:
    """Answers the commands every driver sends first; state lives on the modem."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("", exec=self.at)
        table.add("E", exec=self.echo)
        table.add("I", exec=self.ati)
        table.add("+SIMCOMATI", exec=self.simcomati)
        table.add("+CGMR", exec=self.cgmr)
        table.add("+CGSN", exec=self.cgsn)
        table.add("+CICCID", exec=self.ciccid)
        table.add("+CMEE", set=self.cmee_set, read=self.cmee_read)
        table.add("+CPIN", read=self.cpin_read)
        table.add("+CCLK", read=self.cclk_read)
        table.add("+CBC", exec=self.cbc)
        table.add("+CRESET", exec=self.creset)

    async def at(self, command: AtCommand) -> None:
        """AT: OK."""

    async def echo(self, command: AtCommand) -> None:
        """ATE0 / ATE1 (ATE alone is ATE0)."""
        if command.params not in ("", "0", "1"):
            raise AtError("ATE takes 0 or 1")
        self.modem.echo = command.params == "1"

    async def ati(self, command: AtCommand) -> None:
        """ATI: product identification."""
        if command.params not in ("", "0"):
            raise AtError("ATI takes no parameter")
        settings = self.modem.settings
        self.modem.reply_block(
            [
                "Manufacturer: SIMCOM INCORPORATED",
                f"Model: {settings.model}",
                f"Revision: {settings.revision}",
                f"IMEI: {settings.imei}",
                "+GCAP: +CGSM,+FCLASS,+DS",
            ]
        )

    async def simcomati(self, command: AtCommand) -> None:
        """AT+SIMCOMATI: model and both firmware revision lines."""
        settings = self.modem.settings
        self.modem.reply_block(
            [
                "Manufacturer: SIMCOM INCORPORATED",
                f"Model: {settings.model}",
                f"Revision: {settings.revision}",
                settings.build,
                f"IMEI: {settings.imei}",
            ]
        )

    async def cgmr(self, command: AtCommand) -> None:
        """AT+CGMR: firmware revision."""
        self.modem.reply(f"+CGMR: {self.modem.settings.revision}")

    async def cgsn(self, command: AtCommand) -> None:
        """AT+CGSN: the IMEI alone on its line."""
        self.modem.reply(self.modem.settings.imei)

    async def ciccid(self, command: AtCommand) -> None:
        """AT+CICCID: the SIM's ICCID."""
        if not self.modem.settings.sim_ready:
            raise CmeError(SIM_NOT_INSERTED)
        self.modem.reply(f"+ICCID: {self.modem.settings.iccid}")

    async def cmee_set(self, command: AtCommand) -> None:
        """AT+CMEE=<n>: 0 plain ERROR, 1 numeric +CME ERROR, 2 verbose +CME ERROR."""
        params = command.args()
        max_params(params, 1)
        self.modem.cmee = int_param(params, 0, 0, 2)

    async def cmee_read(self, command: AtCommand) -> None:
        """AT+CMEE?"""
        self.modem.reply(f"+CMEE: {self.modem.cmee}")

    async def cpin_read(self, command: AtCommand) -> None:
        """AT+CPIN?: READY, or SIM not inserted."""
        if not self.modem.settings.sim_ready:
            raise CmeError(SIM_NOT_INSERTED)
        self.modem.reply("+CPIN: READY")

    async def cclk_read(self, command: AtCommand) -> None:
        """AT+CCLK?: host local time, zone in quarter hours: "yy/MM/dd,hh:mm:ss+zz"."""
        self.modem.reply(f'+CCLK: "{format_cclk(time.time())}"')

    async def cbc(self, command: AtCommand) -> None:
        """AT+CBC: battery voltage in volts with three decimals."""
        self.modem.reply(f"+CBC: {self.modem.battery_mv() / 1000:.3f}V")

    async def creset(self, command: AtCommand) -> None:
        """AT+CRESET: OK, then the modem restarts (connections dropped, boot URCs again)."""
        self.modem.spawn(self.modem.power_cycle())


def format_cclk(timestamp: float) -> str:
    """Local time as AT+CCLK shows it: yy/MM/dd,hh:mm:ss then the UTC offset in signed quarter hours."""
    local = time.localtime(timestamp)
    quarters = (local.tm_gmtoff or 0) // 900
    sign = "-" if quarters < 0 else "+"
    return time.strftime("%y/%m/%d,%H:%M:%S", local) + f"{sign}{abs(quarters):02d}"
