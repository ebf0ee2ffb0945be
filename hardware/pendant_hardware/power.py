"""Pure: power accounting for one pendant. The bench reports what the modem and the MCU do; this module
turns it into time per state, an average current and a battery-life projection. No I/O; the clock is
passed in, so the rules are tested with made-up times.

Modem states (one at a time, the first that applies wins):
  off       not powered (PWRKEY, a power cut, the pendant switched off)
  call      a voice call is dialling, alerting or active
  transmit  `TX_BURST_S` after each packet the radio sends or receives (MQTT, SMS)
  idle      registered and awake: the host did not allow sleep (AT+CSCLK=1 and DTR high), or the radio
            is within `RADIO_TAIL_S` of its last packet (the network keeps the connection up a while)
  sleep     AT+CSCLK=1, DTR high, radio quiet
GNSS on is counted on its own and added on top. MCU states are what the firmware reports (`MCU active`,
`MCU light_sleep`), and off; deep_sleep is for the duty-cycle model (power_model.py).

Currents (mA at the battery, 3.8 V) and where they come from; the figures are typical, not worst case:
- A7670 hardware design manual (SIMCom A7670 Series Hardware Design, "current consumption" table, as
  summarised in ../shared/reference/a7670-at.md): LTE sleep (DRX) ~2 mA, LTE idle ~23 mA, LTE transmit
  520-620 mA (the low end is taken: the pendant sends tiny packets, mostly below full power),
  GSM voice 262-320 mA (the low end).
- ESP32 Series Datasheet (Espressif, "Power consumption by power modes"): light sleep 0.8 mA, deep sleep
  10 uA, active with the radio off 30-50 mA (40 mA taken, MicroPython's default 160 MHz).
- GNSS on: 30 mA is an ASSUMPTION: the reference lists no A7670 GNSS current; SIMCom's SIM7000 hardware
  design lists 30 mA for "GNSS active", a comparable engine. Replace it when the A7670E-FASE figure is known.
- Off: the A7670's power-off leakage and the ESP32's deep sleep are both in the tens of uA; 0.01 mA each.
- TX_BURST_S and RADIO_TAIL_S are not datasheet figures: they model an LTE connection set-up plus the
  transfer (~0.5 s) and the network's RRC inactivity timer (commonly 5-20 s; 10 s taken).
The board's own draw (LDO quiescent current, charger, power LED) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODEM_OFF, MODEM_SLEEP, MODEM_IDLE, MODEM_TRANSMIT, MODEM_CALL = "off", "sleep", "idle", "transmit", "call"
MODEM_STATES = (MODEM_OFF, MODEM_SLEEP, MODEM_IDLE, MODEM_TRANSMIT, MODEM_CALL)
MCU_OFF, MCU_DEEP_SLEEP, MCU_LIGHT_SLEEP, MCU_ACTIVE = "off", "deep_sleep", "light_sleep", "active"
MCU_STATES = (MCU_OFF, MCU_DEEP_SLEEP, MCU_LIGHT_SLEEP, MCU_ACTIVE)

TX_BURST_S = 0.5
RADIO_TAIL_S = 10.0


@dataclass(frozen=True)
class Currents:
    """Current per state in mA (see the module docstring for the sources)."""

    modem: dict[str, float] = field(
        default_factory=lambda: {
            MODEM_OFF: 0.01,
            MODEM_SLEEP: 2.0,
            MODEM_IDLE: 23.0,
            MODEM_TRANSMIT: 520.0,
            MODEM_CALL: 262.0,
        }
    )
    gnss: float = 30.0
    mcu: dict[str, float] = field(
        default_factory=lambda: {MCU_OFF: 0.01, MCU_DEEP_SLEEP: 0.01, MCU_LIGHT_SLEEP: 0.8, MCU_ACTIVE: 40.0}
    )


@dataclass
class PowerMeter:
    """Accumulates seconds per modem state, per MCU state and with GNSS on, from `start` on. Every
    method takes `now` (seconds, any monotonic clock) and first accounts the time since the last call."""

    start: float
    tx_burst_s: float = TX_BURST_S
    radio_tail_s: float = RADIO_TAIL_S
    modem_powered: bool = True
    in_call: bool = False
    sleep_allowed: bool = False  # AT+CSCLK=1 and DTR high
    gnss_on: bool = False
    mcu: str = MCU_ACTIVE
    packets: int = 0
    modem_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODEM_STATES, 0.0))
    mcu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MCU_STATES, 0.0))
    gnss_seconds: float = 0.0
    _since: float = field(default=0.0, init=False)
    _tx_until: float = field(default=float("-inf"), init=False)
    _awake_until: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        self._since = self.start

    # -- what the bench reports ----------------------------------------------------------------------

    def set_modem_powered(self, powered: bool, now: float) -> None:
        """The modem was switched on or off."""
        self._advance(now)
        self.modem_powered = powered
        if not powered:
            self.in_call = False
            self.gnss_on = False
            self._tx_until = self._awake_until = float("-inf")

    def set_call(self, active: bool, now: float) -> None:
        """A voice call started (dialling) or ended."""
        self._advance(now)
        self.in_call = active

    def set_sleep_allowed(self, allowed: bool, now: float) -> None:
        """AT+CSCLK=1 with DTR high (True), or anything else."""
        self._advance(now)
        self.sleep_allowed = allowed

    def set_gnss(self, on: bool, now: float) -> None:
        """The GNSS engine was powered on or off."""
        self._advance(now)
        self.gnss_on = on

    def set_mcu(self, state: str, now: float) -> None:
        """The MCU's state: active, light_sleep or off."""
        if state not in MCU_STATES:
            raise ValueError(f"unknown MCU state {state!r}; states are {', '.join(MCU_STATES)}")
        self._advance(now)
        self.mcu = state

    def radio_packet(self, now: float) -> None:
        """The radio sent or received a packet: transmit for a burst, then awake for the tail."""
        self._advance(now)
        if not self.modem_powered:
            return
        self.packets += 1
        self._tx_until = max(self._tx_until, now + self.tx_burst_s)
        self._awake_until = max(self._awake_until, now + self.tx_burst_s + self.radio_tail_s)

    # -- what it adds up to --------------------------------------------------------------------------

    def modem_state(self, now: float) -> str:
        """The modem's state at `now` (not before the last report)."""
        if not self.modem_powered:
            return MODEM_OFF
        if self.in_call:
            return MODEM_CALL
        if now < self._tx_until:
            return MODEM_TRANSMIT
        if now < self._awake_until or not self.sleep_allowed:
            return MODEM_IDLE
        return MODEM_SLEEP

    def _advance(self, now: float) -> None:
        if now <= self._since:
            return
        start = self._since
        # The state changes by itself only where a burst or a tail ends: account piece by piece.
        for boundary in sorted({self._tx_until, self._awake_until, now}):
            if boundary <= start:
                continue
            end = min(boundary, now)
            self.modem_seconds[self.modem_state(start)] += end - start
            start = end
            if start >= now:
                break
        self.mcu_seconds[self.mcu] += now - self._since
        if self.gnss_on:
            self.gnss_seconds += now - self._since
        self._since = now

    def report(self, now: float, currents: Currents | None = None) -> PowerReport:
        """Everything up to `now`: seconds per state and the average current."""
        self._advance(now)
        return PowerReport(
            window_s=now - self.start,
            modem_s=dict(self.modem_seconds),
            mcu_s=dict(self.mcu_seconds),
            gnss_s=self.gnss_seconds,
            packets=self.packets,
            currents=currents or Currents(),
        )


@dataclass(frozen=True)
class PowerReport:
    """Time per state over a window, and what it means for the battery."""

    window_s: float
    modem_s: dict[str, float]
    mcu_s: dict[str, float]
    gnss_s: float
    packets: int
    currents: Currents

    def charge_mah(self) -> float:
        """Charge drawn over the window, in mAh."""
        modem = sum(self.currents.modem[state] * seconds for state, seconds in self.modem_s.items())
        mcu = sum(self.currents.mcu[state] * seconds for state, seconds in self.mcu_s.items())
        return (modem + mcu + self.currents.gnss * self.gnss_s) / 3600

    def average_ma(self) -> float:
        """Average current over the window (0 for an empty window)."""
        if self.window_s <= 0:
            return 0.0
        return self.charge_mah() * 3600 / self.window_s

    def battery_days(self, capacity_mah: float) -> float | None:
        """Days a full battery of `capacity_mah` lasts at this average current; None for an empty window."""
        if capacity_mah <= 0:
            raise ValueError("battery capacity must be positive")
        average = self.average_ma()
        return capacity_mah / average / 24 if average > 0 else None

    def to_json(self, capacity_mah: float) -> dict[str, object]:
        """As the control port and `pendant sim power --json` show it."""
        days = self.battery_days(capacity_mah)
        return {
            "window_s": round(self.window_s, 3),
            "modem_s": {state: round(seconds, 3) for state, seconds in self.modem_s.items()},
            "mcu_s": {state: round(seconds, 3) for state, seconds in self.mcu_s.items()},
            "gnss_s": round(self.gnss_s, 3),
            "packets": self.packets,
            "average_ma": round(self.average_ma(), 3),
            "capacity_mah": capacity_mah,
            "battery_days": round(days, 2) if days is not None else None,
        }
