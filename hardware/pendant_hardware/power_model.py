"""Pure: a day of a pendant's duty cycle, played through the same PowerMeter the bench uses, to project
battery life for designs the firmware does not (yet) run: how often it sends a heartbeat, how often the
modem pings the broker (MQTT keepalive), how long the ESP32 is awake per event, whether it gets a GNSS
fix per heartbeat. `pendant sim power` measures the firmware as it is; this answers "what would it take".
"""

from __future__ import annotations

from dataclasses import dataclass

from pendant_hardware.power import MCU_ACTIVE, Currents, PowerMeter, PowerReport

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class DutyCycle:
    """What the pendant does, on average, while nobody presses its button."""

    heartbeat_s: float = 180.0  # `tele` every this many seconds
    keepalive_s: float = 60.0  # MQTT PINGREQ when nothing else was sent for this long (the modem does it)
    mcu_awake_s: float = 1.0  # the ESP32 wakes per heartbeat for this long (else asleep)
    mcu_sleep: str = "light_sleep"  # or "active" for a firmware that never sleeps
    modem_sleeps: bool = True  # AT+CSCLK=1 and DTR high between events
    gnss_s_per_heartbeat: float = 0.0  # GNSS on per heartbeat (a hot fix takes a few seconds)


def duty_cycle_report(cycle: DutyCycle, hours: float = 24.0, currents: Currents | None = None) -> PowerReport:
    """The meter's report for `hours` of `cycle` (events on a fixed schedule, no alarms)."""
    if cycle.heartbeat_s <= 0 or cycle.keepalive_s <= 0:
        raise ValueError("heartbeat and keepalive intervals must be positive")
    end = hours * 3600.0
    meter = PowerMeter(start=0.0)
    meter.set_mcu(cycle.mcu_sleep, 0.0)
    meter.set_sleep_allowed(cycle.modem_sleeps, 0.0)
    events: list[tuple[float, str]] = []
    t = cycle.heartbeat_s
    while t < end:
        events.append((t, "heartbeat"))
        t += cycle.heartbeat_s
    # The modem pings only when the connection was quiet for a whole keepalive interval.
    last_sent = 0.0
    pings: list[tuple[float, str]] = []
    for at, _ in [*events, (end, "end")]:
        while last_sent + cycle.keepalive_s < at:
            last_sent += cycle.keepalive_s
            pings.append((last_sent, "ping"))
        last_sent = at
    for at, kind in sorted(events + pings):
        if kind == "ping":
            meter.radio_packet(at)  # PINGREQ and PINGRESP: one burst, the ESP32 sleeps on
            continue
        awake_until = at + cycle.mcu_awake_s
        meter.set_mcu(MCU_ACTIVE, at)
        meter.set_sleep_allowed(False, at)  # DTR low: the host talks to the modem
        if cycle.gnss_s_per_heartbeat > 0:
            meter.set_gnss(True, at)
            meter.set_gnss(False, at + cycle.gnss_s_per_heartbeat)
        meter.radio_packet(at + cycle.gnss_s_per_heartbeat)  # the heartbeat and its PUBACK
        done = max(awake_until, at + cycle.gnss_s_per_heartbeat)
        meter.set_sleep_allowed(cycle.modem_sleeps, done)
        meter.set_mcu(cycle.mcu_sleep, done)
    return meter.report(end, currents)
