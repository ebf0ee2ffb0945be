"""GNSS commands: power with the delayed READY! URC, and the position reports in both known formats."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import AtCommand, int_param, max_params
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.settings import GNSS_STYLE_DECIMAL, ModemSettings

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim


class GnssCommands:
    """The GNSS engine: off, powered (waiting for READY!), ready; a fix when ready and the setting allows."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.powered = False
        self.ready = False
        self.fixes_served = 0  # position reports with a fix: tests wait for the firmware's first one
        self._ready_task: asyncio.Task[None] | None = None

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CGNSSPWR", set=self.power_set)
        table.add("+CGNSSINFO", exec=self.cgnssinfo)
        table.add("+CGPSINFO", exec=self.cgpsinfo)

    def reset(self) -> None:
        """Power-on state: GNSS off."""
        self.powered = False
        self.ready = False
        if self._ready_task is not None:
            self._ready_task.cancel()
            self._ready_task = None

    @property
    def has_fix(self) -> bool:
        """True when a position query returns a position."""
        return self.ready and self.modem.settings.gnss_fix

    async def power_set(self, command: AtCommand) -> None:
        """AT+CGNSSPWR=<0|1>: OK, and after `gnss_ready_delay_s` the URC +CGNSSPWR: READY!."""
        params = command.args()
        max_params(params, 2)
        on = int_param(params, 0, 0, 1)
        if not on:
            self.reset()
            return
        if self.powered:
            return
        self.powered = True
        self._ready_task = self.modem.spawn(self._become_ready())

    async def _become_ready(self) -> None:
        await asyncio.sleep(self.modem.settings.gnss_ready_delay_s)
        self.ready = True
        self.modem.urc("+CGNSSPWR: READY!")

    async def cgnssinfo(self, command: AtCommand) -> None:
        """AT+CGNSSINFO: the fix, or every field empty."""
        settings = self.modem.settings
        if self.has_fix:
            self.fixes_served += 1
            self.modem.reply("+CGNSSINFO: " + cgnssinfo_fields(settings, time.time()))
        else:
            empty = 17 if settings.gnss_style == GNSS_STYLE_DECIMAL else 15
            self.modem.reply("+CGNSSINFO: " + "," * empty)

    async def cgpsinfo(self, command: AtCommand) -> None:
        """AT+CGPSINFO: the fix in ddmm.mmmmmm, or every field empty."""
        settings = self.modem.settings
        if not self.has_fix:
            self.modem.reply("+CGPSINFO: ,,,,,,,,")
            return
        self.fixes_served += 1
        now = time.gmtime()
        lat, north_south = to_ddmm(settings.latitude, 2, "N", "S")
        lon, east_west = to_ddmm(settings.longitude, 3, "E", "W")
        self.modem.reply(
            f"+CGPSINFO: {lat},{north_south},{lon},{east_west},{time.strftime('%d%m%y', now)},"
            f"{time.strftime('%H%M%S', now)}.0,{settings.altitude_m:.1f},0.0,0.0"
        )


def cgnssinfo_fields(settings: ModemSettings, timestamp: float) -> str:
    """The fields of +CGNSSINFO for a 3D fix at `timestamp`, in the style the settings choose.

    manual:  mode,GPS,GLONASS,BEIDOU,ddmm.mmmmmm,N,dddmm.mmmmmm,E,ddmmyy,hhmmss.s,
             alt,speed,course,PDOP,HDOP,VDOP
    decimal: mode,GPS,GLONASS,GALILEO,BEIDOU,dd.ddddddd,N,ddd.ddddddd,E,ddmmyy,hhmmss.ss,
             alt,speed,course,PDOP,HDOP,VDOP,used satellites
    """
    now = time.gmtime(timestamp)
    date = time.strftime("%d%m%y", now)
    clock = time.strftime("%H%M%S", now)
    north_south = "N" if settings.latitude >= 0 else "S"
    east_west = "E" if settings.longitude >= 0 else "W"
    tail = f"{settings.altitude_m:.1f},0.0,0.0,1.1,0.8,0.7"
    if settings.gnss_style == GNSS_STYLE_DECIMAL:
        lat = f"{abs(settings.latitude):.7f}"
        lon = f"{abs(settings.longitude):.7f}"
        return f"3,08,03,02,01,{lat},{north_south},{lon},{east_west},{date},{clock}.00,{tail},09"
    lat, _ = to_ddmm(settings.latitude, 2, "N", "S")
    lon, _ = to_ddmm(settings.longitude, 3, "E", "W")
    return f"3,08,03,01,{lat},{north_south},{lon},{east_west},{date},{clock}.0,{tail}"


def to_ddmm(degrees: float, degree_digits: int, positive: str, negative: str) -> tuple[str, str]:
    """Decimal degrees as NMEA-style (d)ddmm.mmmmmm with its hemisphere letter."""
    hemisphere = positive if degrees >= 0 else negative
    whole = int(abs(degrees))
    minutes = (abs(degrees) - whole) * 60
    if round(minutes, 6) >= 60:
        whole, minutes = whole + 1, 0.0
    return f"{whole:0{degree_digits}d}{minutes:09.6f}", hemisphere
