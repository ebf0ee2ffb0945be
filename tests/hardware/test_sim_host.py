"""The sim host: several pendants, host.json, and the control port's ops."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pendant_hardware.sim_control import SimNotRunning, SimRequestError, host_file, request
from pendant_hardware.sim_host import BackgroundSimHost, SimHostError

from hw_helpers import FAKE_FIRMWARE, AtClient, BenchBroker


def config(device_id: str) -> dict[str, object]:
    return {"device_id": device_id, "mqtt": {"host": "127.0.0.1", "port": 1883}, "apn": "internet"}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[BackgroundSimHost]:
    host = BackgroundSimHost(
        tmp_path, [config("pd-0001"), config("pd-0002")], firmware_dir=FAKE_FIRMWARE, restart_delay_s=0.1
    )
    with host:
        yield host
    assert not host_file(tmp_path).exists(), "host.json must be removed on a clean stop"


def test_host_file_names_the_control_port_and_pid(sim: BackgroundSimHost, tmp_path: Path) -> None:
    info = json.loads(host_file(tmp_path).read_text())
    assert info["pid"] == os.getpid()
    assert info["port"] == sim.host.control_port
    assert info["devices"] == ["pd-0001", "pd-0002"]


def test_list_press_battery_state(sim: BackgroundSimHost, tmp_path: Path) -> None:
    devices = request(tmp_path, {"op": "list"})["devices"]
    assert [device["device"] for device in devices] == ["pd-0001", "pd-0002"]
    assert all(device["modem_port"] and device["io_port"] for device in devices)
    sim.wait_for_event("pd-0002", "mem")  # booted and connected to its board
    answer = request(tmp_path, {"op": "press", "device": "pd-0002", "ms": 50})
    assert answer == {"ok": True, "device": "pd-0002", "ms": 50, "button": "panic", "board_connected": True}
    sim.wait_for_vibration("pd-0002", "sent")
    assert request(tmp_path, {"op": "battery", "device": "pd-0002", "mv": 3500})["mv"] == 3500
    state = request(tmp_path, {"op": "state", "device": "pd-0002"})
    assert state["battery_mv"] == 3500
    assert [v["pattern"] for v in state["vibrations"]] == ["sent"]
    assert any(event["kind"] == "alarm_raised" for event in state["events"])
    assert state["console_log"].endswith("sim/pd-0002/console.log")
    assert state["last_lines"]
    assert sim.state("pd-0001")["vibrations"] == []  # the other pendant was not pressed


def test_bad_requests_are_one_clear_error(sim: BackgroundSimHost, tmp_path: Path) -> None:
    with pytest.raises(
        SimRequestError, match="no device 'pd-9999' on this simulator; devices: pd-0001, pd-0002"
    ):
        request(tmp_path, {"op": "state", "device": "pd-9999"})
    with pytest.raises(SimRequestError, match="unknown op"):
        request(tmp_path, {"op": "explode"})
    with pytest.raises(SimRequestError, match="'ms' must be a int"):
        request(tmp_path, {"op": "press", "device": "pd-0001", "ms": "long"})
    with pytest.raises(SimRequestError, match="battery voltage must be 0..5000"):
        request(tmp_path, {"op": "battery", "device": "pd-0001", "mv": 9000})


def test_a_second_host_on_the_same_data_folder_is_refused(sim: BackgroundSimHost, tmp_path: Path) -> None:
    with pytest.raises(SimHostError, match="already running"):
        BackgroundSimHost(tmp_path, [config("pd-0003")], firmware_dir=FAKE_FIRMWARE).start()


def test_no_simulator_running(tmp_path: Path) -> None:
    with pytest.raises(SimNotRunning, match="no simulator is running in"):
        request(tmp_path, {"op": "list"})
    host_file(tmp_path).parent.mkdir(parents=True)
    host_file(tmp_path).write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pid": 999_999_999}))
    with pytest.raises(SimNotRunning):  # a stale host.json from a crashed simulator
        request(tmp_path, {"op": "list"})


def test_duplicate_or_invalid_devices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SimHostError, match="given twice"):
        BackgroundSimHost(
            tmp_path, [config("pd-0001"), config("pd-0001")], firmware_dir=FAKE_FIRMWARE
        ).start()
    with pytest.raises(SimHostError, match="device_id"):
        BackgroundSimHost(tmp_path, [{"device_id": "../x"}], firmware_dir=FAKE_FIRMWARE).start()


@pytest.mark.broker
def test_mqtt_connection_is_reported(
    sim: BackgroundSimHost, tmp_path: Path, bench_broker: BenchBroker
) -> None:
    with pytest.raises(TimeoutError):
        sim.wait_for_mqtt("pd-0001", timeout=0.2)
    # Play the firmware's part on the modem's UART (this replaces the stand-in firmware's connection).
    at = AtClient(request(tmp_path, {"op": "list"})["devices"][0]["modem_port"])
    try:
        at.command("AT+CMQTTSTART")
        at.command('AT+CMQTTACCQ=0,"pd-0001"')
        at.command(bench_broker.connect_line())
        sim.wait_for_mqtt("pd-0001")
        assert request(tmp_path, {"op": "state", "device": "pd-0001"})["mqtt_connected"] is True
        assert request(tmp_path, {"op": "list"})["devices"][0]["mqtt_connected"] is True
    finally:
        at.close()


def test_synchronous_api_power_cut_and_battery(sim: BackgroundSimHost) -> None:
    sim.wait_for_line("pd-0001", "modem: imei")
    sim.power_cut("pd-0001")
    sim.wait_for_line("pd-0001", "[bench] boot 2")
    sim.set_battery("pd-0001", 3300)
    state = sim.state("pd-0001")
    assert state["boots"] == 2 and state["battery_mv"] == 3300
    with pytest.raises(KeyError, match="no device 'pd-0404'"):
        sim.state("pd-0404")
