"""Provisioning's rules without a pendant: which registry record a pendant gets (its IMEI names the
hardware, its ICCID the SIM), refusals that need a technician's decision, device-id allocation, and
reading the identity probe's answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from pendant_backend.db import engine_for
from pendant_backend.models import Device, DeviceCreate
from pendant_backend.registry import find_device, register_device
from pendant_backend.settings import Settings
from pendant_tools.probes import Identity, ProbeError, parse_identity
from pendant_tools.provisioning import ProvisionError, _register, decide, next_device_id

IMEI, ICCID = "869731050000010", "89314404000000000010"


def record(
    device_id: str, imei: str | None = None, iccid: str | None = None, state: str = "in_stock"
) -> Device:
    return Device(device_id=device_id, imei=imei, iccid=iccid, loan_state=state)


def test_a_known_pendant_keeps_its_id_and_a_new_sim_is_noted() -> None:
    mine = record("pd-0007", IMEI, "89314404000000000099")
    decision = decide(IMEI, ICCID, by_imei=mine, by_iccid=None, by_id=None, requested_id=None)
    assert (decision.device_id, decision.register, decision.new_iccid) == ("pd-0007", False, True)
    same = decide(
        IMEI, ICCID, by_imei=record("pd-0007", IMEI, ICCID), by_iccid=None, by_id=None, requested_id=None
    )
    assert same.new_iccid is False


def test_an_unknown_pendant_is_registered_under_the_requested_or_a_new_id() -> None:
    assert decide(IMEI, ICCID, by_imei=None, by_iccid=None, by_id=None, requested_id=None).register
    decision = decide(IMEI, ICCID, by_imei=None, by_iccid=None, by_id=None, requested_id="pd-0042")
    assert (decision.device_id, decision.register) == ("pd-0042", True)


def test_a_record_made_without_hardware_is_adopted() -> None:
    empty = record("pd-0042")  # e.g. made earlier with `pendant device provision pd-0042`
    decision = decide(IMEI, ICCID, by_imei=None, by_iccid=None, by_id=empty, requested_id="pd-0042")
    assert (decision.device_id, decision.adopt, decision.register) == ("pd-0042", True, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"by_imei": None, "by_iccid": record("pd-0003", "869731050000099", ICCID), "by_id": None},
            f"the SIM (ICCID {ICCID}) is registered to pd-0003, another pendant: take it out, or retire",
        ),
        (
            {"by_imei": record("pd-0001", IMEI), "by_iccid": record("pd-0003", None, ICCID), "by_id": None},
            "is registered to pd-0003, but this pendant is pd-0001",
        ),
        (
            {"by_imei": record("pd-0001", IMEI), "by_iccid": None, "by_id": None, "requested_id": "pd-0009"},
            f"this pendant (IMEI {IMEI}) is registered as pd-0001, not pd-0009: leave out --device-id",
        ),
        (
            {
                "by_imei": None,
                "by_iccid": None,
                "by_id": record("pd-0009", "869731050000099"),
                "requested_id": "pd-0009",
            },
            "pd-0009 is registered with another pendant (IMEI 869731050000099): choose another id",
        ),
        (
            {"by_imei": record("pd-0001", IMEI, ICCID, "decommissioned"), "by_iccid": None, "by_id": None},
            "pd-0001 is decommissioned: it must not be provisioned again",
        ),
    ],
)
def test_conflicts_are_refused_with_what_to_do(kwargs: dict, message: str) -> None:
    kwargs.setdefault("requested_id", None)
    with pytest.raises(ProvisionError) as refused:
        decide(IMEI, ICCID, **kwargs)
    assert message in str(refused.value)


def test_next_device_id_follows_the_highest_number_of_the_prefix() -> None:
    assert next_device_id([]) == "pd-0001"
    assert next_device_id(["pd-0001", "pd-0012", "pd-0003", "test-0099", "pd-x"]) == "pd-0013"
    assert next_device_id(["pd-9999"]) == "pd-10000"
    assert next_device_id(["pd-0005"], prefix="lab-") == "lab-0001"


def test_register_against_the_real_registry(tmp_path: Path) -> None:
    engine = engine_for(Settings.for_data_dir(tmp_path))
    register_device(engine, device=DeviceCreate(device_id="pd-0004"))
    identity = Identity(imei=IMEI, iccid=ICCID, firmware="0.2.0")

    device, how, sim_changed = _register(engine, identity, None, "pd-", "technician:test")
    assert (device.device_id, how, sim_changed) == ("pd-0005", "new", False)
    again, how, _ = _register(engine, identity, None, "pd-", "technician:test")
    assert (again.device_id, how) == ("pd-0005", "found")

    swapped = Identity(imei=IMEI, iccid="89314404000000000028", firmware="0.2.1")
    device, how, sim_changed = _register(engine, swapped, None, "pd-", "technician:test")
    assert (how, sim_changed) == ("found", True)
    stored = find_device(engine, device_id="pd-0005")
    assert stored is not None and (stored.iccid, stored.firmware_version) == ("89314404000000000028", "0.2.1")


def test_identity_probe_answers() -> None:
    answer = {
        "fw": "0.2.0",
        "imei": ["869731055375273", "OK"],
        "iccid": ["+CMQTTRXSTART: 0,5,2", "+ICCID: 89314404008000864094", "OK"],  # a URC in between
    }
    assert parse_identity(answer) == Identity("869731055375273", "89314404008000864094", "0.2.0")
    assert parse_identity({**answer, "iccid": ["+CME ERROR: SIM not inserted"]}).iccid is None
    with pytest.raises(ProbeError, match="run `pendant deploy` first"):
        parse_identity({"error": "firmware"})
    with pytest.raises(ProbeError, match="modem does not answer"):
        parse_identity({"fw": "0.2.0", "imei": None})
