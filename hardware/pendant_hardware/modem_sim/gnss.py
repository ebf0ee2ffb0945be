"""GNSS commands: power with the delayed READY! URC, and the position reports in both known formats."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import AtCommand, int_param, max_params
from pendant_hardware.modem_sim.command_table import CommandTable
from pendant_hardware.modem_sim.gnss_track import Position, position_at
from pendant_hardware.modem_sim.settings import GNSS_STYLE_DECIMAL, ModemSettings

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim


class GnssCommands:
    """The GNSS engine: off, powered (waiting for READY!), ready; a fix when ready, the sky allows it
    (`settings.gnss_fix`) and the time to first fix (`ttff_s`, a cold start) has passed. The position is
    the fixed point of the settings, or where `settings.track` is since the engine became ready."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.powered = False
        self.ready = False
        self.ttff_s = 0.0  # fault gnss_cold_start: seconds from READY! to the first fix
        self.fixes_served = 0  # position reports with a fix: tests wait for the firmware's first one
        self._ready_at = 0.0
        self._ready_task: asyncio.Task[None] | None = None

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CGNSSPWR", set=self.power_set, read=self.power_read)
        table.add("+CGNSSINFO", exec=self.cgnssinfo)
        table.add("+CGPSINFO", exec=self.cgpsinfo)

    def reset(self) -> None:
        """Power-on state: GNSS off."""
        if self.powered:
            self.modem.gnss_power_changed(False)
        self.powered = False
        self.ready = False
        if self._ready_task is not None:
            self._ready_task.cancel()
            self._ready_task = None

    @property
    def has_fix(self) -> bool:
        """True when a position query returns a position."""
        if not self.ready or not self.modem.settings.gnss_fix:
            return False
        return time.monotonic() - self._ready_at >= self.ttff_s

    def position(self) -> Position:
        """Where the pendant is now (the track's point, or the fixed one)."""
        settings = self.modem.settings
        if settings.track:
            return position_at(settings.track, time.monotonic() - self._ready_at)
        return Position(settings.latitude, settings.longitude, settings.altitude_m, 0.0, 0.0)

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
        self.modem.gnss_power_changed(True)
        self._ready_task = self.modem.spawn(self._become_ready())

    async def power_read(self, command: AtCommand) -> None:
        """AT+CGNSSPWR?"""
        self.modem.reply(f"+CGNSSPWR: {int(self.powered)}")

    async def _become_ready(self) -> None:
        await asyncio.sleep(self.modem.settings.gnss_ready_delay_s)
        self.ready = True
        self._ready_at = time.monotonic()
        self.modem.urc("+CGNSSPWR: READY!")

    async def cgnssinfo(self, command: AtCommand) -> None:
        """AT+CGNSSINFO: the fix, or every field empty."""
        settings = self.modem.settings
        if self.has_fix:
            self.fixes_served += 1
            self.modem.reply("+CGNSSINFO: " + cgnssinfo_fields(settings, time.time(), self.position()))
        else:
            empty = 17 if settings.gnss_style == GNSS_STYLE_DECIMAL else 15
            self.modem.reply("+CGNSSINFO: " + "," * empty)

    async def cgpsinfo(self, command: AtCommand) -> None:
        """AT+CGPSINFO: the fix in ddmm.mmmmmm, or every field empty."""
        if not self.has_fix:
            self.modem.reply("+CGPSINFO: ,,,,,,,,")
            return
        self.fixes_served += 1
        now = time.gmtime()
        where = self.position()
        lat, north_south = to_ddmm(where.latitude, 2, "N", "S")
        lon, east_west = to_ddmm(where.longitude, 3, "E", "W")
        self.modem.reply(
            f"+CGPSINFO: {lat},{north_south},{lon},{east_west},{time.strftime('%d%m%y', now)},"
            f"{time.strftime('%H%M%S', now)}.0,{where.altitude_m:.1f},{where.speed_knots:.1f},"
            f"{where.course_deg:.1f}"
        )


def cgnssinfo_fields(settings: ModemSettings, timestamp: float, where: Position | None = None) -> str:
    """The fields of +CGNSSINFO for a 3D fix at `timestamp` and place `where` (default: the settings'
    fixed point), in the style the settings choose.

    manual:  mode,GPS,GLONASS,BEIDOU,ddmm.mmmmmm,N,dddmm.mmmmmm,E,ddmmyy,hhmmss.s,
             alt,speed,course,PDOP,HDOP,VDOP
    decimal: mode,GPS,GLONASS,GALILEO,BEIDOU,dd.ddddddd,N,ddd.ddddddd,E,ddmmyy,hhmmss.ss,
             alt,speed,course,PDOP,HDOP,VDOP,used satellites
    """
    if where is None:
        where = Position(settings.latitude, settings.longitude, settings.altitude_m, 0.0, 0.0)
    now = time.gmtime(timestamp)
    date = time.strftime("%d%m%y", now)
    clock = time.strftime("%H%M%S", now)
    north_south = "N" if where.latitude >= 0 else "S"
    east_west = "E" if where.longitude >= 0 else "W"
    tail = f"{where.altitude_m:.1f},{where.speed_knots:.1f},{where.course_deg:.1f},1.1,0.8,0.7"
    if settings.gnss_style == GNSS_STYLE_DECIMAL:
        lat = f"{abs(where.latitude):.7f}"
        lon = f"{abs(where.longitude):.7f}"
        return f"3,08,03,02,01,{lat},{north_south},{lon},{east_west},{date},{clock}.00,{tail},09"
    lat, _ = to_ddmm(where.latitude, 2, "N", "S")
    lon, _ = to_ddmm(where.longitude, 3, "E", "W")
    return f"3,08,03,01,{lat},{north_south},{lon},{east_west},{date},{clock}.0,{tail}"


def to_ddmm(degrees: float, degree_digits: int, positive: str, negative: str) -> tuple[str, str]:
    """Decimal degrees as NMEA-style (d)ddmm.mmmmmm with its hemisphere letter."""
    hemisphere = positive if degrees >= 0 else negative
    whole = int(abs(degrees))
    minutes = (abs(degrees) - whole) * 60
    if round(minutes, 6) >= 60:
        whole, minutes = whole + 1, 0.0
    return f"{whole:0{degree_digits}d}{minutes:09.6f}", hemisphere
