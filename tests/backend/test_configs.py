"""Config documents: fleet default and per-device overrides with revisions, published retained with a
per-device rev that only grows; invalid values refused before they reach a pendant."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, col, select

from pendant_backend import configs, payloads
from pendant_backend.models import Device, Outbound


def published(engine) -> list[tuple[str, dict, bool]]:
    with Session(engine) as session:
        rows = session.exec(select(Outbound).order_by(col(Outbound.id)))
        return [(m.topic, json.loads(m.payload), m.retain) for m in rows]


def test_fleet_default_goes_to_every_active_device_with_its_own_rev(engine, devices) -> None:
    document, count = configs.set_config(
        engine, scope="fleet", changes={"heartbeat_s": 300, "call": ["112"]}, author="it"
    )
    assert (document.version, count) == (1, 2)
    messages = published(engine)
    assert [(t, p["rev"], p["heartbeat_s"], p["call"], r) for t, p, r in messages] == [
        ("pendant/v1/pd-0001/config", 1, 300, ["112"], True),
        ("pendant/v1/pd-0002/config", 1, 300, ["112"], True),
    ]
    # Every document published is one the firmware accepts (same parser as the contract tests).
    for _, payload, _ in messages:
        payloads.parse_config(json.dumps(payload).encode())


def test_device_overrides_win_and_only_that_device_gets_a_new_rev(engine, devices) -> None:
    configs.set_config(engine, scope="fleet", changes={"heartbeat_s": 300}, author="it")
    configs.set_config(
        engine, scope="pd-0001", changes={"sms": ["+31612345678"], "heartbeat_s": 120}, author="it"
    )
    view = configs.device_config_view(engine, device_id="pd-0001")
    assert view["effective"]["heartbeat_s"] == 120 and view["effective"]["sms"] == ["+31612345678"]
    assert view["published_rev"] == 2
    assert configs.device_config_view(engine, device_id="pd-0002")["published_rev"] == 1
    # Unsetting the override brings the fleet's value back, with a newer rev.
    configs.set_config(engine, scope="pd-0001", changes={}, unset=("heartbeat_s",), author="it")
    last = published(engine)[-1][1]
    assert (last["rev"], last["heartbeat_s"], last["sms"]) == (3, 300, ["+31612345678"])


def test_a_document_that_changes_nothing_for_a_device_is_not_published_again(engine, devices) -> None:
    configs.set_config(engine, scope="fleet", changes={"heartbeat_s": 300}, author="it")
    _, count = configs.set_config(engine, scope="fleet", changes={"heartbeat_s": 300}, author="it")
    assert count == 0 and len(published(engine)) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"heartbeat_s": 10}, "heartbeat_s"),
        ({"sms": ["not a number"]}, "sms"),
        ({"colour": "red"}, "unknown config fields colour"),
        ({"batt_low": 10, "batt_critical": 15}, "batt_critical must be below batt_low"),
    ],
)
def test_invalid_values_are_refused_and_nothing_is_published(engine, devices, changes, message) -> None:
    with pytest.raises(configs.ConfigError, match=message):
        configs.set_config(engine, scope="fleet", changes=changes, author="it")
    assert published(engine) == []
    assert configs.fleet_config_view(engine)["version"] == 0


def test_inactive_devices_get_no_config(engine, devices) -> None:
    with Session(engine) as session:
        device = session.get(Device, "pd-0002")
        device.loan_state = "returned"
        session.add(device)
        session.commit()
    _, count = configs.set_config(engine, scope="fleet", changes={"loc_s": 60}, author="it")
    assert count == 1


def test_an_unknown_device_has_no_config(engine, devices) -> None:
    with pytest.raises(configs.ConfigError, match="no device pd-0404"):
        configs.set_config(engine, scope="pd-0404", changes={"loc_s": 60}, author="it")
