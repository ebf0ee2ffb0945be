"""Network commands: signal, registration (with its URCs), serving cell, PDP contexts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import (
    AtCommand,
    AtError,
    CmeError,
    int_param,
    max_params,
    str_param,
)
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.general import NO_NETWORK_SERVICE
from pendant_hardware.modem_sim.settings import REGISTERED_STATES

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

REGISTRATION_COMMANDS = ("+CREG", "+CGREG", "+CEREG")
ACT_E_UTRAN = 7


class NetworkCommands:
    """Registration is a simulator setting (`ModemSim.set_registration`); this family reports it."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.urc_modes = dict.fromkeys(REGISTRATION_COMMANDS, 0)
        self.contexts: dict[int, tuple[str, str]] = {1: ("IP", "")}
        self.deactivated: set[int] = set()

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CSQ", exec=self.csq)
        for name in REGISTRATION_COMMANDS:
            table.add(name, read=self._reg_read(name), set=self._reg_set(name))
        table.add("+CPSI", read=self.cpsi_read)
        table.add("+CGDCONT", set=self.cgdcont_set)
        table.add("+CGACT", set=self.cgact_set, read=self.cgact_read)

    def reset(self) -> None:
        """Power-on state."""
        self.urc_modes = dict.fromkeys(REGISTRATION_COMMANDS, 0)
        self.contexts = {1: ("IP", "")}
        self.deactivated = set()

    async def csq(self, command: AtCommand) -> None:
        """AT+CSQ: +CSQ: <rssi>,<ber> (99,99 while the radio is off)."""
        rssi = self.modem.settings.rssi if self.modem.power.cfun == 1 else 99
        self.modem.reply(f"+CSQ: {rssi},99")

    def _reg_read(self, name: str):
        async def read(command: AtCommand) -> None:
            mode = self.urc_modes[name]
            self.modem.reply(f"{name}: {mode},{self._reg_status(mode)}")

        return read

    def _reg_set(self, name: str):
        async def set_mode(command: AtCommand) -> None:
            params = command.args()
            max_params(params, 1)
            self.urc_modes[name] = int_param(params, 0, 0, 2)

        return set_mode

    def _reg_status(self, mode: int) -> str:
        settings = self.modem.settings
        registration = self.modem.registration
        status = str(registration)
        if mode == 2 and registration in REGISTERED_STATES:
            status += f',"{settings.tac:04X}","{settings.cell_id:07X}",{ACT_E_UTRAN}'
        return status

    def registration_changed(self) -> None:
        """Send +CREG/+CGREG/+CEREG URCs to the host for every family it enabled (mode 1 or 2)."""
        for name, mode in self.urc_modes.items():
            if mode:
                self.modem.urc(f"{name}: {self._reg_status(mode)}")

    async def cpsi_read(self, command: AtCommand) -> None:
        """AT+CPSI?: serving cell (LTE form), or NO SERVICE."""
        settings = self.modem.settings
        if not self.modem.registered:
            self.modem.reply("+CPSI: NO SERVICE,Online")
            return
        rssi_dbm = -113 + 2 * settings.rssi if settings.rssi <= 31 else -113
        self.modem.reply(
            f"+CPSI: LTE,Online,{settings.mcc_mnc},0x{settings.tac:04X},{settings.cell_id},{settings.pci},"
            f"{settings.band},{settings.earfcn},5,5,-94,{rssi_dbm * 10 - 200},{rssi_dbm * 10},15"
        )

    async def cgdcont_set(self, command: AtCommand) -> None:
        """AT+CGDCONT=<cid>[,"<type>"[,"<apn>"]]: define a PDP context (further fields are accepted)."""
        params = command.args()
        cid = int_param(params, 0, 1, 15)
        if len(params) == 1:
            self.contexts.pop(cid, None)
            return
        pdp_type = str_param(params, 1, "IP")
        if pdp_type not in ("IP", "IPV6", "IPV4V6"):
            raise AtError(f"unknown PDP type {pdp_type}")
        self.contexts[cid] = (pdp_type, str_param(params, 2, ""))

    async def cgact_set(self, command: AtCommand) -> None:
        """AT+CGACT=<state>[,<cid>]: activate or deactivate a context (needs registration)."""
        params = command.args()
        max_params(params, 2)
        state = int_param(params, 0, 0, 1)
        cids = [int_param(params, 1, 1, 15)] if len(params) > 1 else list(self.contexts)
        if state and not self.modem.registered:
            raise CmeError(NO_NETWORK_SERVICE)
        for cid in cids:
            if cid not in self.contexts:
                raise AtError(f"context {cid} is not defined")
            if state:
                self.deactivated.discard(cid)
            else:
                self.deactivated.add(cid)

    async def cgact_read(self, command: AtCommand) -> None:
        """AT+CGACT?: +CGACT: <cid>,<state> for every defined context."""
        lines = []
        for cid in sorted(self.contexts):
            active = self.modem.registered and cid not in self.deactivated
            lines.append(f"+CGACT: {cid},{int(active)}")
        self.modem.reply_block(lines)
