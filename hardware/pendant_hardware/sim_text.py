"""Pure: the bench's answers (control-port JSON) as lines of text for a person; `pendant sim` prints them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pendant_hardware.modem_sim.faults import FaultSpec
from pendant_hardware.power import MCU_STATES, MODEM_STATES, Currents

REGISTRATION = {0: "not registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming"}


def clock(timestamp: float | None) -> str:
    """HH:MM:SS local time, or - for none."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def device_lines(devices: list[dict[str, Any]]) -> list[str]:
    """One line per pendant of the `list` op."""
    lines = []
    for device in devices:
        mqtt = "mqtt connected" if device["mqtt_connected"] else "mqtt not connected"
        pid = device["pid"] if device["pid"] is not None else "-"
        lines.append(
            f"{device['device']}  {device.get('mode', '?')}  pty {device.get('pty') or '-'}  pid {pid}  "
            f"boots {device['boots']}  {mqtt}  {device['console_log']}"
        )
    return lines


def state_lines(state: dict[str, Any]) -> list[str]:
    """The head of `pendant sim state`: process, serial port, resets, modem, battery."""
    pid = state["pid"] if state["pid"] is not None else "not running"
    modem = state.get("modem", {})
    lines = [
        f"{state['device']}: {state.get('mode', '?')}, pid {pid}, serial {state.get('pty') or '-'}",
        f"  boots {state['boots']} (soft reboots {state.get('soft_reboots', 0)}, watchdog resets "
        f"{state.get('watchdog_resets', 0)}, resets {state.get('hard_resets', 0)}), watchdog "
        f"{str(state['watchdog_ms']) + ' ms' if state.get('watchdog_ms') else 'not armed'}",
        f"  mqtt {'connected' if state['mqtt_connected'] else 'not connected'}, modem "
        f"{modem.get('power', '?')}{', asleep' if modem.get('asleep') else ''}, registration "
        f"{REGISTRATION.get(modem.get('registration'), modem.get('registration', '?'))}, "
        f"battery {state['battery_mv']} mV"
        f"{', charging' if state['charger'] else ''}",
        f"  calls {state.get('calls', 0)}, SMS {state.get('sms', 0)}, faults "
        f"{faults_in_force(modem.get('faults', {}))}",
    ]
    return lines


def fault_json(spec: FaultSpec) -> dict[str, Any]:
    """One entry of the fault catalogue as JSON."""
    return {
        "name": spec.name,
        "summary": spec.summary,
        "lasting": spec.lasting,
        "params": {name: default for name, _, default in spec.params},
    }


def fault_catalogue_lines(specs: Iterable[FaultSpec]) -> list[str]:
    """The catalogue: name, parameters with defaults, lasting or once, what it does."""
    lines = []
    for spec in specs:
        params = " ".join(f"{name}={default}" for name, _, default in spec.params)
        kind = "lasting" if spec.lasting else "once"
        lines.append(f"{spec.name:<22} {kind:<7} {params}")
        lines.append(f"    {spec.summary}")
    return lines


def faults_in_force(faults: dict[str, dict[str, Any]]) -> str:
    """`no_signal, slow(ms=1500)`, or `none`."""
    if not faults:
        return "none"
    parts = []
    for name, params in faults.items():
        shown = ",".join(f"{key}={value}" for key, value in params.items())
        parts.append(f"{name}({shown})" if shown else name)
    return ", ".join(parts)


def call_lines(calls: list[dict[str, Any]]) -> list[str]:
    """One line per call: when, direction, number, outcome, duration, who ended it."""
    lines = []
    for call in calls:
        arrow = "->" if call["direction"] == "out" else "<-"
        ended = f", ended by {call['ended_by']}" if call.get("ended_by") else ", going on"
        lines.append(
            f"{clock(call['started'])} {arrow} {call['number']}: {call['outcome']}, "
            f"{call.get('duration_s', 0):.0f} s{ended}"
        )
    return lines


def sms_lines(messages: list[dict[str, Any]]) -> list[str]:
    """One line per SMS: when, to whom, status, then the text indented."""
    lines = []
    for message in messages:
        status = message["status"]
        if status == "failed":
            status += f" (+CMS ERROR: {message.get('error')})"
        lines.append(f"{clock(message['t'])} -> {message['number']}: {status}")
        lines.extend(f"    {text_line}" for text_line in str(message["text"]).splitlines() or [""])
    return lines


def power_lines(report: dict[str, Any], currents: Currents | None = None) -> list[str]:
    """The `power` op's answer: share of time per state, the average current, the projection."""
    currents = currents or Currents()
    window = report["window_s"]
    if window <= 0:
        return ["no time measured yet"]
    lines = [f"measured over {window:.0f} s, {report['packets']} radio packets"]
    for state in MODEM_STATES:
        share = 100 * report["modem_s"].get(state, 0.0) / window
        lines.append(f"  modem {state:<9} {share:5.1f} %  at {currents.modem[state]:g} mA")
    lines.append(f"  gnss on         {100 * report['gnss_s'] / window:5.1f} %  at {currents.gnss:g} mA")
    for state in MCU_STATES:
        share = 100 * report["mcu_s"].get(state, 0.0) / window
        lines.append(f"  mcu {state:<11} {share:5.1f} %  at {currents.mcu[state]:g} mA")
    lines.append(f"average {report['average_ma']:.2f} mA")
    days = report.get("battery_days")
    capacity = report["capacity_mah"]
    lines.append(
        f"a {capacity:g} mAh battery lasts {days:.1f} days"
        if days
        else f"a {capacity:g} mAh battery: no drain"
    )
    return lines
