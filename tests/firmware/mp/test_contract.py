"""The protocol contract on MicroPython: decode every example in docs/protocol-examples/ (and its events/
folder: the messages the firmware added) and encode alarm, tele, status, evt and cmd/res from the
example's own values to the same message, with the encoders where the firmware keeps them."""

import json
import os

from mptest import eq, run, test, true
from pendant import commands, config, connect, network, protocol

EXAMPLES = os.getenv("PENDANT_EXAMPLES") or "../../../docs/protocol-examples"
FIX = (52373101, 4892203, 8, 1764403190)


def example(name):
    with open(EXAMPLES + "/" + name, "rb") as f:
        return f.read()


def same(payload, name):
    """The payload is compact JSON equal, once parsed, to the example."""
    eq(json.loads(payload), json.loads(example(name)), name)
    true(b": " not in payload and b", " not in payload, "compact JSON")


@test
def every_example_decodes():
    names = [n for n in os.listdir(EXAMPLES) if n.endswith(".json")]
    names += ["events/" + n for n in os.listdir(EXAMPLES + "/events")]
    true(len(names) >= 17, "examples found")
    for name in names:
        true(type(protocol.decode(example(name))) is dict, name)


@test
def invalid_examples_that_are_not_json_do_not_decode():
    eq(protocol.decode(example("invalid/alarm-truncated.json")), None)
    eq(protocol.decode(b"[1,2]"), None)
    eq(protocol.decode(b"\xff\xfe"), None)


@test
def alarm_with_a_fix():
    same(
        protocol.alarm("12-3", "panic", 1764403200, FIX, ("LTE", 204, 8, "0x2B5C", "0x01A2F30"), 87, False),
        "alarm.json",
    )


@test
def alarm_without_any_fix_has_the_cell():
    cell = ("LTE", 204, 8, "0x2B5C", "0x01A2F30")
    same(protocol.alarm("3-1", "panic", None, None, cell, 54, False), "alarm-no-fix.json")


@test
def tele():
    payload = network.tele(
        1764403380, 12, 3600, 87, 3987, False, -71, "home", "LTE", FIX, "0.1.0", 3, 0, 41216
    )
    same(payload, "tele.json")


@test
def status_birth_and_will():
    same(connect.status(True, 12, 40, "0.1.0"), "status-online.json")
    same(connect.status(False, 12, 40), "status-offline.json")


@test
def evt_config_rejected_as_config_check_words_it():
    field, err = config.check({"rev": 4, "heartbeat_s": 30})
    same(protocol.evt("config_rejected", 1764403400, "rev", 4, "field", field, "err", err), "evt.json")


@test
def events_the_firmware_added():
    same(
        protocol.evt(
            "location", 1764403230, "alarm_id", "12-3", "loc", protocol.loc(FIX), "cell", protocol.cell(None)
        ),
        "events/evt-location.json",
    )
    same(protocol.evt("low_battery", 1764403500, "batt", 18, "mv", 3462), "events/evt-low-battery.json")
    same(
        protocol.evt(
            "power_off",
            1764403600,
            "reason",
            "button",
            "loc",
            protocol.loc(FIX),
            "cell",
            protocol.cell(None),
            "batt",
            64,
        ),
        "events/evt-power-off.json",
    )
    same(
        protocol.evt(
            "fallback",
            1764403300,
            "alarm_id",
            "12-3",
            "sms",
            ["+31612345678"],
            "sms_failed",
            [],
            "calls",
            2,
            "answered",
            "112",
            "call_s",
            95,
            "rounds",
            1,
        ),
        "events/evt-fallback.json",
    )
    same(commands.cmd_res("c-82", None, "alarm_id", "12-4"), "events/cmd-res-test-alarm.json")


@test
def cmd_and_its_result():
    eq(protocol.decode(example("cmd.json"), "id", "cmd"), {"id": "c-81", "cmd": "locate"})
    same(commands.cmd_res("c-81"), "cmd-res.json")
    eq(
        json.loads(commands.cmd_res("c-81", "not supported")),
        {"id": "c-81", "ok": False, "err": "not supported"},
    )


@test
def alarm_ack():
    eq(
        protocol.decode(example("alarm-ack.json"), "alarm_id", "state"),
        {"alarm_id": "12-3", "state": "received"},
    )
    eq(protocol.decode(b'{"alarm_id":12,"state":"received"}', "alarm_id", "state"), None)


@test
def config_example_is_valid_and_applies_whole():
    message = protocol.decode(example("events/config-full.json"))
    settings = {}
    eq(config.check(message, settings), None)
    for key, value in message.items():
        eq(settings[key], value, key)


@test
def config_is_checked_field_by_field():
    base = {"rev": 5}
    for field, value in (
        ("press_ms", 100),
        ("ack_timeout_s", "30"),
        ("loc_s", True),
        ("sms", ["+31 6"]),
        ("call", "112"),
        ("callback", [112]),
    ):
        base[field] = value
        eq(config.check(base)[0], field)
        del base[field]
    eq(config.check({"heartbeat_s": 60}), ("rev", "missing"))
    eq(config.check({"rev": 6, "future_field": 1}), None)  # unknown fields are ignored
    eq(config.check({"rev": 7, "batt_low": 10, "batt_critical": 10})[0], "batt_critical")
    eq(config.check({"rev": 8, "off_alarm": 1})[0], "off_alarm")


@test
def defaults_before_any_config():
    settings = {}
    config.check({}, settings)
    eq(
        (
            settings["heartbeat_s"],
            settings["ack_timeout_s"],
            settings["press_ms"],
            settings["sms"],
            settings["presses"],
            settings["off_alarm"],
        ),
        (180, 30, 2000, [], 0, False),
    )


run()
