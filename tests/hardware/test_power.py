"""Power accounting: the meter's rules with made-up times, and the projection of a modem that carries
heartbeats at two intervals through a real broker (the meter's clock is the test's, so a day passes in
a second)."""

from __future__ import annotations

import pytest
from test_modem_mqtt import TOPIC, send_data, start_and_connect

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSettings, ModemSim
from pendant_hardware.power import Currents, PowerMeter
from pendant_hardware.power_model import DutyCycle, duty_cycle_report
from pendant_hardware.sim_text import power_lines

from hw_helpers import AtClient, BenchBroker, on_loop

HOUR = 3600.0


def test_states_follow_the_reports() -> None:
    meter = PowerMeter(start=0.0, tx_burst_s=0.5, radio_tail_s=10.0)
    meter.set_sleep_allowed(True, 0.0)
    meter.radio_packet(100.0)  # transmit 100-100.5, awake until 110.5, asleep after
    meter.set_gnss(True, 200.0)
    meter.set_gnss(False, 230.0)
    meter.set_call(True, 300.0)
    meter.set_call(False, 360.0)
    meter.set_mcu("light_sleep", 400.0)
    meter.set_modem_powered(False, 500.0)
    report = meter.report(600.0)
    assert report.window_s == 600.0
    assert report.modem_s == pytest.approx(
        {"transmit": 0.5, "idle": 10.0, "call": 60.0, "sleep": 600 - 100 - 60 - 10.5, "off": 100.0}
    )
    assert report.gnss_s == pytest.approx(30.0)
    assert report.mcu_s == pytest.approx(
        {"active": 400.0, "light_sleep": 200.0, "deep_sleep": 0.0, "off": 0.0}
    )
    assert report.packets == 1


def test_without_csclk_and_dtr_the_modem_never_sleeps() -> None:
    meter = PowerMeter(start=0.0)
    meter.radio_packet(5.0)
    assert meter.modem_state(5.1) == "transmit"
    assert meter.modem_state(100.0) == "idle"
    report = meter.report(100.0)
    assert report.modem_s["sleep"] == 0.0 and report.modem_s["idle"] == pytest.approx(99.5)


def test_overlapping_bursts_are_not_counted_twice() -> None:
    meter = PowerMeter(start=0.0, tx_burst_s=1.0, radio_tail_s=2.0)
    meter.set_sleep_allowed(True, 0.0)
    for t in (10.0, 10.4, 10.8):
        meter.radio_packet(t)
    report = meter.report(20.0)
    assert report.modem_s["transmit"] == pytest.approx(1.8)
    assert report.modem_s["idle"] == pytest.approx(2.0)
    assert sum(report.modem_s.values()) == pytest.approx(20.0)


def test_charge_and_battery_days_from_the_currents() -> None:
    currents = Currents()
    meter = PowerMeter(start=0.0)
    meter.set_sleep_allowed(True, 0.0)
    meter.set_mcu("light_sleep", 0.0)
    report = meter.report(HOUR, currents)
    floor = currents.modem["sleep"] + currents.mcu["light_sleep"]  # asleep all hour
    assert report.average_ma() == pytest.approx(floor)
    assert report.charge_mah() == pytest.approx(floor)
    assert report.battery_days(1000) == pytest.approx(1000 / floor / 24)
    assert report.to_json(1000)["battery_days"] == round(1000 / floor / 24, 2)
    with pytest.raises(ValueError, match="capacity must be positive"):
        report.battery_days(0)
    lines = power_lines(report.to_json(1000))
    assert lines[-1] == f"a 1000 mAh battery lasts {1000 / floor / 24:.1f} days"
    with pytest.raises(ValueError, match="unknown MCU state"):
        meter.set_mcu("deep_sleep_forever", HOUR)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def heartbeat_day(
    at: AtClient, modem: ModemSim, clock: FakeClock, bench_loop: LoopThread, interval_s: float
) -> dict:
    """A pendant that sleeps between heartbeats (DTR high, AT+CSCLK=1, MCU light sleep) and wakes to
    publish one every `interval_s`, for 6 hours of the meter's clock; returns the projection."""
    at.command("AT+CSCLK=1")
    on_loop(bench_loop, lambda: modem.meter.set_mcu("light_sleep", clock.now))
    while clock.now < 6 * HOUR:
        on_loop(bench_loop, modem.set_dtr, False)  # wake the modem to talk to it
        send_data(at, f"AT+CMQTTTOPIC=0,{len(TOPIC)}", TOPIC.encode())
        send_data(at, "AT+CMQTTPAYLOAD=0,2", b"{}")
        assert at.command("AT+CMQTTPUB=0,1,60") == b"\r\nOK\r\n"
        assert at.read_line() == "+CMQTTPUB: 0,0"  # the PUBACK has been counted by now
        on_loop(bench_loop, modem.set_dtr, True)
        clock.now += interval_s
    return on_loop(bench_loop, lambda: modem.meter.report(clock.now).to_json(1000))


@pytest.mark.broker
@pytest.mark.parametrize(("short", "long"), [(180, 1800), (60, 180)])
def test_a_longer_heartbeat_projects_a_longer_battery_life(
    bench_loop: LoopThread, bench_broker: BenchBroker, short: int, long: int
) -> None:
    projections = []
    for interval in (short, long):
        clock = FakeClock()
        settings = ModemSettings(boot_urcs=False, mqtt_start_delay_s=0.0, boot_delay_s=0.0)
        modem = on_loop(bench_loop, lambda: ModemSim(settings, meter=PowerMeter(start=0.0), clock=clock))  # noqa: B023
        bench_loop.run(modem.start())
        at = AtClient(modem.port)
        try:
            start_and_connect(at, bench_broker)
            projections.append(heartbeat_day(at, modem, clock, bench_loop, interval))
        finally:
            at.close()
            bench_loop.run(modem.stop())
    frequent, rare = projections
    assert frequent["packets"] > rare["packets"] > 0
    assert frequent["modem_s"]["transmit"] > rare["modem_s"]["transmit"]
    assert frequent["average_ma"] > rare["average_ma"]
    assert frequent["battery_days"] < rare["battery_days"]


def test_the_duty_cycle_model_follows_the_design_choices() -> None:
    three_minutes = duty_cycle_report(DutyCycle(heartbeat_s=180, keepalive_s=1200))
    thirty_minutes = duty_cycle_report(DutyCycle(heartbeat_s=1800, keepalive_s=1200))
    assert three_minutes.window_s == 24 * HOUR
    assert three_minutes.packets == 24 * 3600 // 180 - 1  # a heartbeat every 3 min, no ping needed
    assert thirty_minutes.packets == 47 + 48  # 47 heartbeats, a ping in each of the 48 gaps
    assert three_minutes.battery_days(1000) < thirty_minutes.battery_days(1000)
    chatty = duty_cycle_report(DutyCycle(heartbeat_s=1800, keepalive_s=60))
    assert chatty.battery_days(1000) < thirty_minutes.battery_days(1000)  # pings every minute cost
    awake = duty_cycle_report(DutyCycle(heartbeat_s=1800, keepalive_s=1200, mcu_sleep="active"))
    assert awake.mcu_s["active"] == pytest.approx(24 * HOUR)
    assert awake.battery_days(1000) < thirty_minutes.battery_days(1000)
    located = duty_cycle_report(DutyCycle(heartbeat_s=1800, keepalive_s=1200, gnss_s_per_heartbeat=5))
    assert located.gnss_s == pytest.approx(47 * 5)
    floor = Currents().modem["sleep"] + Currents().mcu["light_sleep"]
    assert thirty_minutes.average_ma() > floor
    with pytest.raises(ValueError, match="must be positive"):
        duty_cycle_report(DutyCycle(heartbeat_s=0))
