"""The bench's answers as text (pure), and numbering device configs for `pendant sim run --count`."""

from __future__ import annotations

import time

import pytest

from pendant_hardware.sim_host import numbered_configs
from pendant_hardware.sim_text import call_lines, faults_in_force, sms_lines, state_lines


def test_calls_and_sms_read_as_sentences() -> None:
    started = time.mktime((2026, 11, 29, 10, 2, 11, 0, 0, -1))
    calls = [
        {"direction": "out", "number": "112", "started": started, "outcome": "answered", "duration_s": 14.2,
         "ended_by": "host"},
        {"direction": "in", "number": "+316", "started": started, "outcome": "pending", "duration_s": 0},
    ]  # fmt: skip
    assert call_lines(calls) == [
        "10:02:11 -> 112: answered, 14 s, ended by host",
        "10:02:11 <- +316: pending, 0 s, going on",
    ]
    messages = [
        {"number": "112", "text": "ALARM\rpd-0001", "t": started, "status": "sent", "reference": 1},
        {"number": "112", "text": "", "t": started, "status": "failed", "error": 331},
    ]
    assert sms_lines(messages) == [
        "10:02:11 -> 112: sent",
        "    ALARM",
        "    pd-0001",
        "10:02:11 -> 112: failed (+CMS ERROR: 331)",
        "    ",
    ]


def test_faults_and_state() -> None:
    assert faults_in_force({}) == "none"
    assert faults_in_force({"no_signal": {}, "slow": {"ms": 20}}) == "no_signal, slow(ms=20)"
    state = {
        "device": "pd-0001", "mode": "repl", "pid": None, "pty": "/dev/pts/3", "boots": 2, "soft_reboots": 1,
        "watchdog_resets": 0, "hard_resets": 0, "watchdog_ms": 30000, "mqtt_connected": False,
        "battery_mv": 3700, "charger": True, "calls": 1, "sms": 0,
        "modem": {"power": "on", "asleep": True, "registration": 5, "faults": {"roaming": {}}},
    }  # fmt: skip
    assert state_lines(state) == [
        "pd-0001: repl, pid not running, serial /dev/pts/3",
        "  boots 2 (soft reboots 1, watchdog resets 0, resets 0), watchdog 30000 ms",
        "  mqtt not connected, modem on, asleep, registration roaming, battery 3700 mV, charging",
        "  calls 1, SMS 0, faults roaming",
    ]


def test_numbered_configs() -> None:
    template = {"device_id": "pd-0009", "mqtt": {"host": "h"}}
    configs = numbered_configs(template, 3)
    assert [config["device_id"] for config in configs] == ["pd-0009", "pd-0010", "pd-0011"]
    assert all(config["mqtt"] == {"host": "h"} for config in configs)
    assert [c["device_id"] for c in numbered_configs({"device_id": "bench"}, 2)] == ["bench", "bench-2"]
    with pytest.raises(ValueError, match="cannot number device ids"):
        numbered_configs({"device_id": "pd-99999999999999999999999999999"}, 2)
