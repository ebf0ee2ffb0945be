"""Benchmark: battery life projections at a 3-minute and a 30-minute heartbeat (target: >= 7 days and
>= 14 days on 1000 mAh), and per supervision profile (SP4, SP3, custom: pendant_backend.supervision).

Two kinds of figure, both from the bench's power meter (hardware/pendant_hardware/power.py, datasheet
currents):

- measured: the real firmware runs on two virtual pendants on the project's broker for --minutes, one
  with `heartbeat_s` 180 and one with 1800 (a retained `config`, as the backend sends it); the meter
  records what their modems and MCUs did (as the firmware reports its MCU state and drives DTR);
- model: a day of a duty cycle played through the same meter (power_model.py), for the designs the
  firmware could adopt: ESP32 awake or in light sleep between events, the modem allowed to sleep (CSCLK
  + DTR) or not, MQTT keepalive 60 s or 20 min, a GNSS fix per heartbeat or not.
Baseline in the same run: the floor, everything asleep and nothing sent, through the same meter.
Per profile: the model of the design the firmware runs (ESP32 light sleep, modem DTR sleep, keepalive
60 s) and of the same with keepalive 20 min, at each profile's heartbeat, beside the late and offline
thresholds the backend holds that profile to.

Run: .venv/bin/python benchmarks/battery.py [--minutes 35] [--capacity 1000] [--custom-s 600]
     [--firmware DIR] [--model-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from pendant_backend import supervision
from pendant_hardware.power import Currents
from pendant_hardware.power_model import DutyCycle, duty_cycle_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import free_port  # noqa: E402

HEARTBEATS = {"pd-0180": 180, "pd-1800": 1800}


def days(report_json: dict) -> str:
    value = report_json.get("battery_days")
    return f"{value:6.1f}" if value else "     -"


def model_rows(capacity: float) -> list[tuple[str, float, float]]:
    """(design, days at 3 min, days at 30 min) for each design."""
    designs = [
        (
            "ESP32 always active, modem never sleeps, keepalive 60 s",
            DutyCycle(mcu_sleep="active", modem_sleeps=False),
        ),
        ("ESP32 light sleep, modem never sleeps, keepalive 60 s", DutyCycle(modem_sleeps=False)),
        ("ESP32 light sleep, modem DTR sleep, keepalive 60 s", DutyCycle()),
        ("ESP32 light sleep, modem DTR sleep, keepalive 20 min", DutyCycle(keepalive_s=1200)),
        ("... and a 5 s GNSS fix per heartbeat", DutyCycle(keepalive_s=1200, gnss_s_per_heartbeat=5)),
        ("ESP32 light sleep, modem DTR sleep, keepalive 60 min", DutyCycle(keepalive_s=3600)),
        (
            "ESP32 deep sleep (3 s boot per wake), modem DTR sleep, keepalive 20 min",
            DutyCycle(keepalive_s=1200, mcu_sleep="deep_sleep", mcu_awake_s=3),
        ),
        (
            "... and a 5 s GNSS fix per heartbeat",
            DutyCycle(keepalive_s=1200, mcu_sleep="deep_sleep", mcu_awake_s=3, gnss_s_per_heartbeat=5),
        ),
    ]
    rows = []
    for name, cycle in designs:
        short = duty_cycle_report(DutyCycle(**{**cycle.__dict__, "heartbeat_s": 180}))
        long = duty_cycle_report(DutyCycle(**{**cycle.__dict__, "heartbeat_s": 1800}))
        rows.append((name, short.battery_days(capacity) or 0.0, long.battery_days(capacity) or 0.0))
    return rows


def profile_rows(capacity: float, custom_s: int) -> list[tuple[str, int, int, int, float, float]]:
    """(profile, heartbeat_s, late after s, offline after s, days as the firmware runs, days with
    keepalive 20 min) for SP4, SP3 and custom at `custom_s`."""
    rows = []
    for name in supervision.PROFILES:
        heartbeat_s = supervision.heartbeat_for(name, custom_s if name == supervision.CUSTOM else None)
        watch = supervision.supervision(heartbeat_s)
        now = duty_cycle_report(DutyCycle(heartbeat_s=heartbeat_s)).battery_days(capacity) or 0.0
        quiet = duty_cycle_report(DutyCycle(heartbeat_s=heartbeat_s, keepalive_s=1200)).battery_days(capacity)
        rows.append((name, heartbeat_s, watch.late_after_s, watch.offline_after_s, now, quiet or 0.0))
    return rows


def measured(minutes: float, capacity: float, firmware: Path | None) -> dict[str, dict]:
    """Run two pendants with the real firmware; the power op's answer for each."""
    from pendant_backend.accounts import provision_device
    from pendant_backend.broker import Broker
    from pendant_backend.settings import Settings
    from pendant_hardware.sim_host import BackgroundSimHost

    data_dir = Path(tempfile.mkdtemp(prefix="pendant-battery-"))
    os.chmod(data_dir, 0o711)
    settings = Settings.for_data_dir(data_dir, mqtt_port=free_port())
    broker = Broker(settings)
    broker.start()
    try:
        configs = [provision_device(settings, device) for device in HEARTBEATS]
        publish_configs(settings)
        with BackgroundSimHost(data_dir, configs, firmware_dir=firmware) as sim:
            for device in HEARTBEATS:
                sim.wait_for_mqtt(device, timeout=120)
            started = time.monotonic()
            while time.monotonic() - started < minutes * 60:
                time.sleep(30)
                elapsed = (time.monotonic() - started) / 60
                print(f"  {elapsed:5.1f} of {minutes} min", flush=True)
            return {device: sim.power(device, capacity) for device in HEARTBEATS}
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def publish_configs(settings: object) -> None:
    """The retained config of each pendant, with its heartbeat, from the backend's account."""
    from pendant_backend.broker import load_secrets

    accounts = load_secrets(settings)  # type: ignore[arg-type]
    # The account is bound to its own client id (one backend session at a time); no backend runs here.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=accounts.backend_username)
    client.username_pw_set(accounts.backend_username, accounts.backend_password)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", settings.mqtt_port)  # type: ignore[attr-defined]
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("the backend's broker account could not connect")
    for device, heartbeat in HEARTBEATS.items():
        document = json.dumps({"rev": 1, "heartbeat_s": heartbeat}, separators=(",", ":"))
        client.publish(f"pendant/v1/{device}/config", document, qos=1, retain=True).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=35.0, help="how long the measured pendants run")
    parser.add_argument("--capacity", type=float, default=1000.0, help="battery capacity in mAh")
    parser.add_argument("--firmware", type=Path, default=None, help="firmware folder (default: firmware/)")
    parser.add_argument("--model-only", action="store_true", help="skip the measured run")
    parser.add_argument(
        "--custom-s", type=int, default=600, help="the heartbeat of the custom profile's row (60..86400 s)"
    )
    args = parser.parse_args()
    currents = Currents()
    floor_ma = currents.modem["sleep"] + currents.mcu["light_sleep"]
    print(
        f"baseline (floor: modem asleep, ESP32 in light sleep, nothing sent): {floor_ma:.2f} mA, "
        f"{args.capacity / floor_ma / 24:.1f} days on {args.capacity:g} mAh"
    )
    print()
    print(f"model, days on {args.capacity:g} mAh{'':<46}heartbeat 3 min   30 min")
    for name, short, long in model_rows(args.capacity):
        print(f"  {name:<72} {short:6.1f}   {long:6.1f}")
    print()
    print(f"per supervision profile, days on {args.capacity:g} mAh (model)")
    print("  profile      heartbeat  late after  offline after  as the firmware runs  keepalive 20 min")
    for _, heartbeat_s, late_s, offline_s, now, quiet in profile_rows(args.capacity, args.custom_s):
        print(
            f"  {supervision.label(heartbeat_s):<12} {heartbeat_s:7d} s {late_s:9d} s {offline_s:12d} s "
            f"{now:20.1f}  {quiet:16.1f}"
        )
    if args.model_only:
        return
    print()
    print(f"measured: the real firmware for {args.minutes} min per pendant ...", flush=True)
    reports = measured(args.minutes, args.capacity, args.firmware)
    for device, report in reports.items():
        modem = ", ".join(
            f"{state} {100 * s / report['window_s']:.1f}%" for state, s in report["modem_s"].items()
        )
        mcu = ", ".join(
            f"{state} {100 * s / report['window_s']:.1f}%" for state, s in report["mcu_s"].items()
        )
        print(
            f"  {supervision.label(HEARTBEATS[device])}, heartbeat {HEARTBEATS[device]:5d} s: "
            f"{report['average_ma']:7.2f} mA, {days(report)} days "
            f"({report['packets']} packets; modem {modem}; mcu {mcu}; gnss {report['gnss_s']:.0f} s)"
        )


if __name__ == "__main__":
    main()
