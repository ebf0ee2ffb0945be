"""The protocol contract on MicroPython: decode every example in docs/protocol-examples/ and encode
alarm, tele, status, evt and cmd/res from the example's own values to the same message."""

import json
import os

from mptest import eq, run, test, true
from pendant import protocol

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
    true(len(names) >= 11, "examples found")
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
    payload = protocol.tele(
        1764403380, 12, 3600, 87, 3987, False, -71, "home", "LTE", FIX, "0.1.0", 3, 0, 41216
    )
    same(payload, "tele.json")


@test
def status_birth_and_will():
    same(protocol.status(True, 12, 40, "0.1.0"), "status-online.json")
    same(protocol.status(False, 12, 40), "status-offline.json")


@test
def evt_config_rejected_as_check_config_words_it():
    field, err = protocol.check_config({"rev": 4, "heartbeat_s": 30})
    same(protocol.evt("config_rejected", 1764403400, "rev", 4, "field", field, "err", err), "evt.json")


@test
def cmd_and_its_result():
    eq(protocol.decode(example("cmd.json"), "id", "cmd"), ["c-81", "locate"])
    same(protocol.cmd_res("c-81"), "cmd-res.json")
    eq(
        json.loads(protocol.cmd_res("c-81", "not supported")),
        {"id": "c-81", "ok": False, "err": "not supported"},
    )


@test
def alarm_ack():
    eq(protocol.decode(example("alarm-ack.json"), "alarm_id", "state"), ["12-3", "received"])
    eq(protocol.decode(b'{"alarm_id":12,"state":"received"}', "alarm_id", "state"), None)


@test
def config_example_is_valid_and_applies_whole():
    message = protocol.decode(example("config.json"))
    settings = {}
    eq(protocol.check_config(message, settings), None)
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
        eq(protocol.check_config(base)[0], field)
        del base[field]
    eq(protocol.check_config({"heartbeat_s": 60}), ("rev", "missing"))
    eq(protocol.check_config({"rev": 6, "future_field": 1}), None)  # unknown fields are ignored


@test
def defaults_before_any_config():
    settings = {}
    protocol.check_config({}, settings)
    eq(
        (settings["heartbeat_s"], settings["ack_timeout_s"], settings["press_ms"], settings["sms"]),
        (180, 30, 2000, []),
    )


run()
