"""Contract tests: each file of docs/protocol-examples/ is decoded (or rejected, or decoded with fields set
aside) and encoded as documented."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pendant_backend import payloads
from pendant_backend.payloads import InvalidPayload

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"

# Each valid example and the parser for its topic. A new example file fails
# test_every_example_is_covered until it is added here.
VALID = {
    "alarm.json": payloads.parse_alarm,
    "alarm-no-fix.json": payloads.parse_alarm,
    "alarm-ack.json": payloads.parse_alarm_ack,
    "status-online.json": payloads.parse_status,
    "status-offline.json": payloads.parse_status,
    "tele.json": payloads.parse_telemetry,
    "evt.json": payloads.parse_event,
    "cmd.json": payloads.parse_command,
    "cmd-res.json": payloads.parse_command_result,
    "config.json": payloads.parse_config,
    # events/: the later messages of protocol.md (location updates, fallback reports, command answers).
    "events/cmd-res-locate.json": payloads.parse_command_result,
    "events/cmd-res-selftest.json": payloads.parse_command_result,
    "events/cmd-res-test-alarm.json": payloads.parse_command_result,
    "events/cmd-vibrate.json": payloads.parse_command,
    "events/config-full.json": payloads.parse_config,
    "events/evt-fallback.json": payloads.parse_event,
    "events/evt-location.json": payloads.parse_event,
    "events/evt-low-battery.json": payloads.parse_event,
    "events/evt-power-off.json": payloads.parse_event,
}
# device-config.json is the pendant's flash file, not an MQTT message: see test_accounts.
NOT_MESSAGES = {"device-config.json"}

# Alarms that cannot be stored and acked: rejected whole.
INVALID = {
    "alarm-id-not-a-string.json": ("bad_alarm_id", "alarm_id"),
    "alarm-long-id.json": ("bad_alarm_id", "alarm_id"),
    "alarm-no-id.json": ("missing_field", "alarm_id"),
    "alarm-not-an-object.json": ("not_an_object", "payload"),
    "alarm-truncated.json": ("bad_json", ""),
}
# Alarms with one field broken: decoded, that field set aside as (field, reason, path), and what stands
# in for it.
SET_ASIDE = {
    "alarm-bad-accuracy.json": (("loc", "out_of_range", "loc.acc"), {"loc": None}),
    "alarm-bad-cell.json": (("cell", "bad_type", "cell.mcc"), {"cell": None}),
    "alarm-battery-1000.json": (("batt", "out_of_range", "batt"), {"batt": None}),
    "alarm-fix-time-in-ms.json": (("loc.tst", "out_of_range", "loc.tst"), {}),
    "alarm-kind-not-a-string.json": (("kind", "bad_type", "kind"), {"kind": "unknown", "test": False}),
    "alarm-lat-200.json": (("loc", "out_of_range", "loc.lat"), {"loc": None}),
    "alarm-negative-battery.json": (("batt", "out_of_range", "batt"), {"batt": None}),
    "alarm-test-not-a-flag.json": (("test", "bad_type", "test"), {"test": False}),
    "alarm-time-in-ms.json": (("tst", "out_of_range", "tst"), {"tst": None}),
    "alarm-unknown-kind.json": (("kind", "unknown_kind", "kind"), {"kind": "unknown"}),
}


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def test_every_example_is_covered() -> None:
    found = {p.name for p in EXAMPLES.glob("*.json")}
    found |= {f"events/{p.name}" for p in EXAMPLES.glob("events/*.json")}
    assert found == set(VALID) | NOT_MESSAGES
    assert {p.name for p in (EXAMPLES / "invalid").glob("*.json")} == set(INVALID)
    assert {p.name for p in (EXAMPLES / "set-aside").glob("*.json")} == set(SET_ASIDE)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_example_decodes(name: str) -> None:
    record = VALID[name](example(name))
    source = json.loads(example(name))
    # Every field of the file lands in the record: nothing is silently dropped.
    if isinstance(record, payloads.Event):
        assert (record.evt, record.tst) == (source["evt"], source["tst"])
        assert dict(record.fields) == {k: v for k, v in source.items() if k not in ("evt", "tst")}
    elif isinstance(record, payloads.CommandResult):
        assert (record.id, record.ok) == (source["id"], source["ok"])
        assert dict(record.fields) == {k: v for k, v in source.items() if k not in ("id", "ok", "err")}
    elif isinstance(record, payloads.Command):
        assert (record.id, record.cmd) == (source["id"], source["cmd"])
        assert dict(record.args) == {k: v for k, v in source.items() if k not in ("id", "cmd")}
        assert payloads.encode_command(record) == example(name).rstrip(b"\n")
    else:
        assert set(source) <= {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_example_is_rejected_with_its_reason(name: str) -> None:
    reason, where = INVALID[name]
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_alarm(example(f"invalid/{name}"))
    assert caught.value.reason == reason
    assert where in caught.value.detail


@pytest.mark.parametrize("name", sorted(SET_ASIDE))
def test_an_alarm_with_a_broken_field_keeps_everything_else(name: str) -> None:
    (field, reason, path), stand_ins = SET_ASIDE[name]
    alarm = payloads.parse_alarm(example(f"set-aside/{name}"))
    assert alarm.set_aside == (payloads.SetAside(field, reason, path),)
    assert alarm.is_set_aside(field)
    for key, value in stand_ins.items():
        assert getattr(alarm, key) == value, key
    # Everything else as sent.
    source = json.loads(example(f"set-aside/{name}"))
    for key in ("alarm_id", "kind", "tst", "batt", "test"):
        if key not in stand_ins:
            assert getattr(alarm, key) == source[key], key
    if "loc" not in stand_ins and source["loc"] is not None:
        sent = {**source["loc"], "tst": None} if field == "loc.tst" else source["loc"]
        assert alarm.loc == payloads.Location(**sent)
    if "cell" not in stand_ins and source["cell"] is not None:
        assert alarm.cell == payloads.Cell(**source["cell"])


def test_a_doubtful_alarm_is_never_a_test() -> None:
    # `test: true` with a kind that cannot be read: a person may have pressed the button.
    alarm = payloads.parse_alarm(example("set-aside/alarm-kind-not-a-string.json"))
    assert json.loads(example("set-aside/alarm-kind-not-a-string.json"))["test"] is True
    assert (alarm.kind, alarm.test) == ("unknown", False)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"loc": "here", "batt": "full", "tst": -1}, ("tst", "loc", "batt")),
        ({"kind": ["panic"], "test": 1, "cell": []}, ("kind", "test", "cell")),
        ({"loc": {"lat": 52.1, "lon": 4.2, "acc": 5, "tst": None}}, ("loc",)),
    ],
)
def test_several_broken_fields_are_each_set_aside(changes: dict, fields: tuple[str, ...]) -> None:
    data = {**json.loads(example("alarm.json")), **changes}
    alarm = payloads.parse_alarm(json.dumps(data).encode())
    assert tuple(item.field for item in alarm.set_aside) == fields
    assert alarm.alarm_id == "12-3"


@pytest.mark.parametrize("missing", ["kind", "test", "tst", "loc", "cell", "batt"])
def test_a_missing_field_is_set_aside_too(missing: str) -> None:
    data = json.loads(example("alarm.json"))
    del data[missing]
    alarm = payloads.parse_alarm(json.dumps(data).encode())
    assert [(item.field, item.reason) for item in alarm.set_aside] == [(missing, "missing_field")]


def test_alarm_fields() -> None:
    alarm = payloads.parse_alarm(example("alarm.json"))
    assert alarm == payloads.Alarm(
        alarm_id="12-3",
        kind="panic",
        tst=1764403200,
        loc=payloads.Location(lat=52.373101, lon=4.892203, acc=8, tst=1764403190, src="gnss"),
        cell=None,
        batt=87,
        test=False,
    )
    no_fix = payloads.parse_alarm(example("alarm-no-fix.json"))
    assert no_fix.loc is None and no_fix.tst is None
    assert no_fix.cell == payloads.Cell(mcc=204, mnc=8, lac="0x2B5C", cid="0x01A2F30", rat="LTE")


def test_status_birth_and_will() -> None:
    assert payloads.parse_status(example("status-online.json")) == payloads.Status(True, 12, 40, "0.1.0")
    assert payloads.parse_status(example("status-offline.json")) == payloads.Status(False, 12, 40, None)
    with pytest.raises(InvalidPayload, match="fw is missing"):
        payloads.parse_status(b'{"online":true,"boot":1,"sess":2}')


def test_alarm_ack_encodes_to_the_example() -> None:
    ack = payloads.AlarmAck(alarm_id="12-3", state="received")
    assert payloads.encode_alarm_ack(ack) == example("alarm-ack.json").rstrip(b"\n")
    assert payloads.parse_alarm_ack(payloads.encode_alarm_ack(ack)) == ack


def test_config_encodes_to_the_example() -> None:
    config = payloads.DeviceConfig(
        rev=3, sms=("+31612345678",), call=("112", "+31612345678"), callback=("+31201234567",)
    )
    assert payloads.encode_config(config) == example("config.json").rstrip(b"\n")
    assert payloads.parse_config(example("config.json")) == config


def test_config_out_of_range_is_not_encoded() -> None:
    with pytest.raises(InvalidPayload, match="heartbeat_s"):
        payloads.encode_config(payloads.DeviceConfig(heartbeat_s=10))
    with pytest.raises(InvalidPayload, match="sms"):
        payloads.encode_config(payloads.DeviceConfig(sms=("call me",)))


def test_command_encodes_to_the_example() -> None:
    command = payloads.parse_command(example("cmd.json"))
    assert payloads.encode_command(command) == example("cmd.json").rstrip(b"\n")


def test_command_result_needs_err_when_not_ok() -> None:
    assert payloads.parse_command_result(b'{"id":"c-1","ok":false,"err":"no fix"}').err == "no fix"
    with pytest.raises(InvalidPayload, match="err is missing"):
        payloads.parse_command_result(b'{"id":"c-1","ok":false}')


def test_fallback_report_reads_the_example() -> None:
    report = payloads.parse_fallback(payloads.parse_event(example("events/evt-fallback.json")))
    assert report == payloads.FallbackReport(
        alarm_id="12-3",
        tst=1764403300,
        sms=("+31612345678",),
        sms_failed=(),
        calls=2,
        answered="112",
        call_s=95,
        rounds=1,
    )
    # What the alarm keeps: every field of the example but the alarm id, under the same names.
    source = json.loads(example("events/evt-fallback.json"))
    assert report.steps() == {k: v for k, v in source.items() if k not in ("evt", "alarm_id")}


GOOD_FALLBACK = json.loads(example("events/evt-fallback.json"))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"alarm_id": "12"}, "bad_alarm_id"),
        ({"sms": "+31612345678"}, "bad_type"),
        ({"sms_failed": ["0612 345"]}, "bad_value"),
        ({"calls": -1}, "out_of_range"),
        ({"calls": None}, "bad_type"),
        ({"answered": 112}, "bad_type"),
        ({"answered": "the police"}, "bad_value"),
        ({"rounds": ...}, "missing_field"),
    ],
)
def test_fallback_report_rejections(changes: dict, reason: str) -> None:
    data = {k: v for k, v in {**GOOD_FALLBACK, **changes}.items() if v is not ...}
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_fallback(payloads.parse_event(json.dumps(data).encode()))
    assert caught.value.reason == reason


def test_a_fallback_nobody_answered() -> None:
    data = {**GOOD_FALLBACK, "answered": None, "call_s": 0}
    assert payloads.parse_fallback(payloads.parse_event(json.dumps(data).encode())).answered is None


GOOD_ALARM = json.loads(example("alarm.json"))


def alarm_with(**changes: object) -> bytes:
    data = {**GOOD_ALARM, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad_json"),
        (b"\xff\xfe{}", "bad_encoding"),
        (b"[1,2]", "not_an_object"),
        (b'"alarm"', "not_an_object"),
        (alarm_with(batt=float("nan")), "bad_json"),
        (alarm_with(alarm_id=...), "missing_field"),
        (alarm_with(alarm_id=None), "bad_alarm_id"),
        (alarm_with(alarm_id=12), "bad_alarm_id"),
        (alarm_with(alarm_id="12_3"), "bad_alarm_id"),
        (alarm_with(alarm_id="12-3\n"), "bad_alarm_id"),
        (alarm_with(alarm_id="-3"), "bad_alarm_id"),
    ],
)
def test_alarm_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_alarm(payload)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (alarm_with(batt=True), "batt", "bad_type"),
        (alarm_with(batt="87"), "batt", "bad_type"),
        (alarm_with(batt=101), "batt", "out_of_range"),
        (alarm_with(tst=1.5), "tst", "bad_type"),
        (alarm_with(tst=-1), "tst", "out_of_range"),
        (alarm_with(test="no"), "test", "bad_type"),
        (alarm_with(test=...), "test", "missing_field"),
        (alarm_with(kind=...), "kind", "missing_field"),
        (alarm_with(kind=None), "kind", "bad_type"),
        (alarm_with(kind={"a": 1}), "kind", "bad_type"),
        (alarm_with(loc="52.3,4.8"), "loc", "bad_type"),
        (alarm_with(loc={"lat": 52.3, "lon": 4.8, "acc": 8, "tst": None}), "loc", "missing_field"),
        (
            alarm_with(loc={"lat": 52.3, "lon": -181, "acc": 8, "tst": None, "src": "gnss"}),
            "loc",
            "out_of_range",
        ),
        (
            alarm_with(loc={"lat": "52.3", "lon": 4.8, "acc": 8, "tst": None, "src": "gnss"}),
            "loc",
            "bad_type",
        ),
        (
            alarm_with(loc={"lat": 52.3, "lon": 4.8, "acc": 8, "tst": None, "src": "gn\u0000ss"}),
            "loc",
            "bad_value",
        ),
        (
            alarm_with(loc={"lat": 52.3, "lon": 4.8, "acc": 8, "tst": "now", "src": "gnss"}),
            "loc.tst",
            "bad_type",
        ),
        (
            alarm_with(cell={"mcc": 204, "mnc": 8, "lac": 11100, "cid": "0x1", "rat": "LTE"}),
            "cell",
            "bad_type",
        ),
        (alarm_with(cell=[]), "cell", "bad_type"),
    ],
)
def test_alarm_fields_set_aside(payload: bytes, field: str, reason: str) -> None:
    # Once rejected whole; now the alarm is kept without the field.
    alarm = payloads.parse_alarm(payload)
    assert alarm.alarm_id == "12-3"
    assert [(item.field, item.reason) for item in alarm.set_aside] == [(field, reason)]


def test_oversize_payload_is_rejected_before_parsing() -> None:
    padded = alarm_with(note="x" * payloads.MAX_PAYLOAD_BYTES)
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_alarm(padded)
    assert caught.value.reason == "oversize"
    exactly = alarm_with(note="")
    exactly = alarm_with(note="x" * (payloads.MAX_PAYLOAD_BYTES - len(exactly)))
    assert len(exactly) == payloads.MAX_PAYLOAD_BYTES
    assert payloads.parse_alarm(exactly).alarm_id == "12-3"


def test_unknown_fields_are_ignored() -> None:
    assert payloads.parse_alarm(alarm_with(future_field={"x": 1})).alarm_id == "12-3"


def test_tele_rejects_unknown_registration_state() -> None:
    tele = json.loads(example("tele.json"))
    tele["reg"] = "maybe"
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_telemetry(json.dumps(tele).encode())
    assert caught.value.reason == "bad_value"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("pendant/v1/pd-0001/alarm", ("pd-0001", "alarm")),
        ("pendant/v1/pd-0001/cmd/res", ("pd-0001", "cmd/res")),
        ("pendant/v1/abc/status", ("abc", "status")),
    ],
)
def test_topic_parsing(topic: str, expected: tuple[str, str]) -> None:
    parsed = payloads.parse_topic(topic)
    assert (parsed.device_id, parsed.leaf) == expected
    assert str(parsed) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "pendant/v1/pd-0001/alarm/ack",
        "pendant/v1/pd-0001/config",
        "pendant/v2/pd-0001/alarm",
        "pendant/v1/PD-0001/alarm",
        "pendant/v1/ab/alarm",
        "pendant/v1/+/alarm",
        "pendant/v1/pd-0001",
    ],
)
def test_topic_rejections(topic: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_topic(topic)
    assert caught.value.reason == "unknown_topic"


@pytest.mark.parametrize("device_id", ["pd-0001", "abc", "0-a", "a" * 32])
def test_valid_device_ids(device_id: str) -> None:
    assert payloads.is_valid_device_id(device_id)


@pytest.mark.parametrize(
    "device_id", ["ab", "-abc", "Pd-0001", "pd_0001", "pd/1", "pd+1", "a" * 33, "pd-0001\n", ""]
)
def test_invalid_device_ids(device_id: str) -> None:
    assert not payloads.is_valid_device_id(device_id)


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_alarm(b"[" * 1024 + b"]" * 1024)
    assert caught.value.reason == "bad_json"


@pytest.mark.parametrize("field", ["tst", "batt"])
def test_integers_that_no_database_column_holds_are_set_aside(field: str) -> None:
    alarm = payloads.parse_alarm(alarm_with(**{field: 10**30}))
    assert getattr(alarm, field) is None
    assert [(item.field, item.reason) for item in alarm.set_aside] == [(field, "out_of_range")]
    # Other messages are still rejected whole for it.
    tele = {**json.loads(example("tele.json")), field: 10**30}
    with pytest.raises(InvalidPayload) as caught:
        payloads.parse_telemetry(json.dumps(tele).encode())
    assert caught.value.reason == "out_of_range"


def test_times_after_2038_are_accepted() -> None:
    assert payloads.parse_alarm(alarm_with(tst=2**31 + 5)).tst == 2**31 + 5
