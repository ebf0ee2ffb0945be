"""The technician's day on real parts: virtual pendants running the real firmware on MicroPython (the
bench's modem simulator, board and serial port), the project's Mosquitto and the backend service. Each
test is one story: deploy a firmware change, provision a batch of pendants, bench-test one that passes,
and one whose GNSS sees no satellites."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from pendant_backend import configs, readiness
from pendant_backend.accounts import provision_device
from pendant_backend.db import engine_for
from pendant_backend.models import Command
from pendant_backend.queries import list_alarms
from pendant_backend.registry import bench_reports, find_device, verify_report
from pendant_backend.service import BackendService
from pendant_hardware.flash import default_firmware_dir
from pendant_hardware.modem_sim import ModemSettings
from pendant_hardware.sim_host import BackgroundSimHost
from pendant_tools.cli import main
from pendant_tools.probes import BUTTON_PROMPT

from support import add_account

pytestmark = pytest.mark.e2e

BOOT_S = 90
TEST_PHONE = "+31612345678"


def pendant(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def backend_env(broker: Any, backend: BackendService, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The running broker and backend, and the environment the technician's commands read them from."""
    settings = broker.settings
    monkeypatch.setenv("PENDANT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PENDANT_MQTT_HOST", settings.mqtt_host)
    monkeypatch.setenv("PENDANT_MQTT_PORT", str(settings.mqtt_port))
    # Provisioning renders the TLS listener into the pendant's config: this broker's, not 8883.
    monkeypatch.setenv("PENDANT_MQTT_TLS_PORT", str(settings.mqtt_tls_port))
    monkeypatch.delenv("PENDANT_DB_URL", raising=False)
    monkeypatch.delenv("PENDANT_PORT", raising=False)
    # The technician's own account: provisioning and the bench run as it.
    add_account(engine_for(settings), "tester", "technician")
    monkeypatch.setenv("PENDANT_TECHNICIAN", "tester")
    return broker


def unprovisioned(broker: Any, device_id: str) -> dict[str, Any]:
    """A config the broker does not accept (as left by an earlier owner, or a factory default)."""
    return {
        "device_id": device_id,
        "mqtt": {
            "host": broker.settings.mqtt_host,
            "port": broker.settings.mqtt_port,
            "user": device_id,
            "password": "not-provisioned",
            "tls": False,
            "keepalive": 60,
        },
        "apn": "internet",
    }


def wait_for_repl_or_firmware(sim: BackgroundSimHost, device_id: str) -> None:
    deadline = time.monotonic() + BOOT_S
    while sim.pendant(device_id).pty is None or sim.state(device_id)["mode"] not in ("firmware", "repl"):
        assert time.monotonic() < deadline, f"{device_id} did not boot"
        time.sleep(0.1)


def consoles(sim: BackgroundSimHost, *device_ids: str) -> str:
    """The end of each pendant's console, for a failure's message."""
    return "\n".join(f"--- {d}\n" + "\n".join(sim.pendant(d).console_tail(30)) for d in device_ids)


def deploy_firmware(sim: BackgroundSimHost, device_id: str) -> str:
    """The technician's step before provisioning: `pendant deploy` of this repository's firmware (the
    bench's own build of it differs, and it is the deployed build that runs in the pendant's heap).
    Returns the pendant's port."""
    wait_for_repl_or_firmware(sim, device_id)
    port = sim.pty(device_id)
    code, _, err = pendant("deploy", "--port", port)
    assert code == 0, err
    return port


# -- deploy ----------------------------------------------------------------------------------------


def test_deploy_to_a_virtual_pendant_copies_only_the_change_and_the_firmware_boots(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    shutil.copytree(default_firmware_dir(), firmware, ignore=shutil.ignore_patterns("__pycache__"))
    config = {"device_id": "pd-0001", "mqtt": {"host": "127.0.0.1", "port": 9}, "apn": "internet"}
    with BackgroundSimHost(tmp_path / "data", [config]) as sim:
        wait_for_repl_or_firmware(sim, "pd-0001")
        port = sim.pendant("pd-0001").pty
        assert port is not None
        code, out, err = pendant("deploy", "--port", port, "--firmware", str(firmware), "--json")
        assert code == 0, err
        first = json.loads(out)  # the bench put this firmware on the flash, built its own way
        assert first["verified"] is True and first["rebooted"] is True
        code, out, err = pendant("deploy", "--port", port, "--firmware", str(firmware), "--json")
        assert code == 0, err
        again = json.loads(out)
        assert again["copied"] == [] and again["removed"] == [] and again["unchanged"] == first["files"]

        package = firmware / "pendant/__init__.py"
        package.write_text(package.read_text() + "\nDEPLOYED_BY_TEST = 1\n")
        lines = sim.pendant("pd-0001").line_count
        code, out, err = pendant("deploy", "--port", port, "--firmware", str(firmware), "--json")
        assert code == 0, err
        second = json.loads(out)
        assert second["copied"] == ["pendant/__init__.mpy"] and second["verified"] is True
        stages = [line.split()[0].rstrip(".") for line in err.replace("\r", "\n").splitlines() if line]
        assert list(dict.fromkeys(stages)) == ["connect", "compile", "compare", "copy", "verify"]  # progress
        flashed = (tmp_path / "data/sim/pd-0001/flash/pendant/__init__.mpy").read_bytes()
        assert b"DEPLOYED_BY_TEST" in flashed
        # It rebooted into the new firmware, which starts.
        sim.wait_for_line("pd-0001", "app: started", after=lines, timeout=BOOT_S)


# -- provision -------------------------------------------------------------------------------------


def test_provision_a_batch_then_again_rotates_the_credentials(backend_env: Any) -> None:
    broker = backend_env
    devices = ("pd-0001", "pd-0002")
    with BackgroundSimHost(broker.data_dir, [unprovisioned(broker, d) for d in devices]) as sim:
        ports = {device_id: deploy_firmware(sim, device_id) for device_id in devices}

        code, out, err = pendant(
            "provision", "-p", ports["pd-0001"], "-p", ports["pd-0002"], "--prefix", "lab-", "--json"
        )

        assert code == 0, err + consoles(sim, *devices)
        result = json.loads(out)
        assert result["failed"] == []
        by_port = {item["port"]: item for item in result["provisioned"]}
        engine = engine_for(broker.settings)
        for device_id, port in ports.items():
            item = by_port[port]
            modem = ModemSettings.for_device(device_id)  # the identity the bench gave that virtual modem
            assert (item["imei"], item["iccid"]) == (modem.imei, modem.iccid)
            assert item["registered"] == "new" and item["credentials"] == "new"
            record = find_device(engine, imei=modem.imei)
            assert record is not None and record.device_id == item["device_id"]
            assert record.iccid == modem.iccid and record.loan_state == "provisioned"
            assert record.last_heartbeat_at is not None
            on_device = json.loads((broker.data_dir / f"sim/{device_id}/flash/config.json").read_text())
            assert (
                on_device["device_id"] == item["device_id"]
                and on_device["mqtt"]["password"] != "not-provisioned"
            )
        assert sorted(item["device_id"] for item in result["provisioned"]) == ["lab-0001", "lab-0002"]
        assert "password" not in out and "password" not in err

        # Again on one of them, now on SP3: found by its IMEI, a new password, online again.
        before = (broker.data_dir / "sim/pd-0001/flash/config.json").read_text()
        code, out, err = pendant("provision", "-p", ports["pd-0001"], "--supervision", "SP3")
        assert code == 0, err + consoles(sim, "pd-0001")
        again = by_port[ports["pd-0001"]]["device_id"]
        assert f"{again} (found, rotated credentials)" in out
        assert (broker.data_dir / "sim/pd-0001/flash/config.json").read_text() != before
        view = configs.device_config_view(engine, device_id=again)
        assert view["device"]["values"] == {"heartbeat_s": 1800} and view["effective"]["heartbeat_s"] == 1800


def test_provision_a_pendant_fresh_from_the_factory(backend_env: Any) -> None:
    broker = backend_env
    with BackgroundSimHost(broker.data_dir, [unprovisioned(broker, "pd-0003")]) as sim:
        (broker.data_dir / "sim/pd-0003/flash/config.json").unlink()  # never provisioned
        sim.reset("pd-0003")
        port = deploy_firmware(sim, "pd-0003")
        code, out, err = pendant("provision", "-p", port, "--device-id", "pd-0003", "--json")
        assert code == 0, err + consoles(sim, "pd-0003")
        [item] = json.loads(out)["provisioned"]
        assert (item["device_id"], item["registered"]) == ("pd-0003", "new")


# -- bench -----------------------------------------------------------------------------------------


@pytest.fixture
def provisioned(backend_env: Any) -> Iterator[BackgroundSimHost]:
    """pd-0001, provisioned, with this repository's firmware deployed, running and online."""
    config = provision_device(backend_env.settings, "pd-0001")
    with BackgroundSimHost(backend_env.data_dir, [config]) as sim:
        deploy_firmware(sim, "pd-0001")
        sim.wait_for_mqtt("pd-0001", timeout=BOOT_S)
        yield sim


def press_when_asked(sim: BackgroundSimHost, device_id: str) -> threading.Thread:
    """The technician's thumb: presses the button once the pendant waits for it."""
    after = sim.pendant(device_id).line_count

    def press() -> None:
        sim.wait_for_line(device_id, BUTTON_PROMPT, after=after, timeout=300)
        sim.press(device_id, 300)  # short: no alarm, whatever runs

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def run_bench_cli(sim: BackgroundSimHost, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    thumb = press_when_asked(sim, "pd-0001")
    report_file = tmp_path / "report.json"
    port = sim.pendant("pd-0001").pty
    assert port is not None
    code, out, err = pendant(
        "bench",
        "-p",
        port,
        "--test-number",
        TEST_PHONE,
        "--report",
        str(report_file),
        "--json",
        *extra,
        input="y\ny\n",  # it vibrated; the test phone got the SMS and the call
    )
    thumb.join(5)
    document = json.loads(out)
    assert json.loads(report_file.read_text()) == document
    return code, document, err


def test_bench_passes_every_step_and_the_signed_report_is_stored(
    backend_env: Any, provisioned: BackgroundSimHost, tmp_path: Path
) -> None:
    code, document, err = run_bench_cli(provisioned, tmp_path, "--gnss-timeout", "60")

    report = document["report"]
    assert [(step["key"], step["status"]) for step in report["steps"]] == [
        (key, "pass")
        for key in (
            "serial_console",
            "firmware",
            "modem",
            "sim",
            "registration",
            "signal",
            "gnss",
            "battery",
            "button",
            "vibration",
            "sms_voice",
            "test_alarm",
        )
    ], err
    assert code == 0 and report["passed"] is True
    # What the bench observed really happened on the (virtual) hardware and in the backend.
    state = provisioned.state("pd-0001")
    assert "acknowledged" in [v["pattern"] for v in state["vibrations"]]
    assert provisioned.calls("pd-0001")[-1]["number"] == TEST_PHONE
    engine = engine_for(backend_env.settings)
    [alarm] = [a for a in list_alarms(engine, device_id="pd-0001") if a.test]
    assert (alarm.state, alarm.resolution, alarm.acknowledged_by) == ("resolved", "test", "tester")
    # The bench's test_alarm command is recorded as asked for by the technician's account.
    with Session(engine) as session:
        [command] = session.exec(select(Command).where(Command.device_id == "pd-0001"))
    assert (command.cmd, command.requested_by) == ("test_alarm", "tester")
    assert report["steps"][-1]["data"]["command"] == command.command_id
    # Stored with the device record, signed with the backend's key; the signature holds.
    [stored] = bench_reports(engine, device_id="pd-0001")
    assert stored.id == document["stored"]["id"] and stored.signature == document["stored"]["signature"]
    assert stored.passed and verify_report(backend_env.settings, stored)
    assert json.loads(stored.body)["steps"] == report["steps"]
    # A passing bench since its provisioning: that is no longer what keeps it from being issued.
    assert "bench" not in readiness.missing(engine, device_id="pd-0001")


def test_bench_with_no_gnss_fix_fails_that_step_only(
    backend_env: Any, provisioned: BackgroundSimHost, tmp_path: Path
) -> None:
    provisioned.inject_fault("pd-0001", "gnss_no_fix")

    code, document, err = run_bench_cli(provisioned, tmp_path, "--gnss-timeout", "5")

    report = document["report"]
    statuses = {step["key"]: step["status"] for step in report["steps"]}
    assert statuses.pop("gnss") == "fail"
    assert set(statuses.values()) == {"pass"}, [
        (step["key"], step["detail"]) for step in report["steps"] if step["status"] != "pass"
    ]
    gnss = next(step for step in report["steps"] if step["key"] == "gnss")
    assert gnss["detail"] == "no fix within 5 s: check the GNSS antenna and the view of the sky"
    assert code == 1 and report["passed"] is False
    assert err.splitlines()[-1] == "Error: the pendant failed the bench test: GNSS fix"
    [stored] = bench_reports(engine_for(backend_env.settings), device_id="pd-0001")
    assert not stored.passed and verify_report(backend_env.settings, stored)
