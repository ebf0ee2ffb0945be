"""Pure: topics and payloads of protocol v1 (docs/protocol.md) as typed, frozen records.

`parse_topic` and the `parse_*` functions take what came off the wire and either return a record or
raise `InvalidPayload` with a short machine-readable reason; `encode_*` produce the exact compact JSON
of docs/protocol-examples/. No I/O here.

An alarm is the exception to "reject what breaks the protocol": a person pressed a button, so
`parse_alarm` rejects only what cannot be stored and acked (not JSON, not an object, no usable
`alarm_id`) and sets every other bad field aside (`Alarm.set_aside`), keeping the rest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TOPIC_ROOT = "pendant/v1"
MAX_PAYLOAD_BYTES = 2048
DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{2,31}")
ALARM_ID_RE = re.compile(r"[0-9]+-[0-9]+")
MAX_ALARM_ID_LEN = 32
INT32_MAX = 2**31 - 1
# Unix seconds up to 2106: beyond INT32_MAX (2038), so times are stored in 64-bit columns.
MAX_UNIX_TIME = 2**32 - 1
ALARM_KINDS = frozenset({"panic", "power_off", "test"})
# The kind of an alarm whose `kind` (or `test`) was set aside: a real alarm of a kind we cannot tell.
UNKNOWN_KIND = "unknown"
# The fields of an alarm that are set aside, not rejected, when they break the protocol (`loc.tst` on
# its own: a fix with a bad timestamp is still a fix).
ALARM_OPTIONAL_FIELDS = ("kind", "test", "tst", "loc", "loc.tst", "cell", "batt")
ALARM_STATES = ("received", "acknowledged", "resolved")
REGISTRATION_STATES = frozenset({"home", "roaming", "searching", "denied", "none"})
COMMANDS = frozenset({"locate", "test_alarm", "vibrate", "reboot", "selftest"})

# What a device publishes (the backend subscribes to these) and what the backend publishes.
DEVICE_TOPICS = ("status", "alarm", "tele", "evt", "cmd/res")
BACKEND_TOPICS = ("alarm/ack", "config", "cmd")

# The reasons a message is rejected; each is counted separately.
REASONS = (
    "unknown_topic",
    "oversize",
    "bad_encoding",
    "bad_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "out_of_range",
    "bad_alarm_id",
    "unknown_kind",
    "bad_value",
    "unknown_device",
)


class InvalidPayload(ValueError):
    """A message that breaks the protocol. `reason` is one of REASONS; `detail` says where and what;
    `path` names the field (`loc.lat`) without its value, so that it may be logged."""

    def __init__(self, reason: str, detail: str, path: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.path = path


def is_valid_device_id(device_id: str) -> bool:
    """True if `device_id` has the form of protocol.md (also safe as an MQTT username and topic level)."""
    return isinstance(device_id, str) and DEVICE_ID_RE.fullmatch(device_id) is not None


def is_valid_alarm_id(alarm_id: object) -> bool:
    """True if `alarm_id` is `<boot>-<seq>` in decimal and at most 32 characters."""
    return (
        isinstance(alarm_id, str)
        and len(alarm_id) <= MAX_ALARM_ID_LEN
        and ALARM_ID_RE.fullmatch(alarm_id) is not None
    )


@dataclass(frozen=True)
class Topic:
    """A device topic split into its device id and its leaf (`alarm`, `status`, `cmd/res`, ...)."""

    device_id: str
    leaf: str

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.device_id}/{self.leaf}"


def topic_for(device_id: str, leaf: str) -> str:
    """The full topic of `leaf` (e.g. `alarm/ack`) under the root of `device_id`."""
    return f"{TOPIC_ROOT}/{device_id}/{leaf}"


def parse_topic(topic: str) -> Topic:
    """Split a device-to-backend topic; raise InvalidPayload('unknown_topic') for anything else."""
    prefix = TOPIC_ROOT + "/"
    if topic.startswith(prefix):
        device_id, _, leaf = topic[len(prefix) :].partition("/")
        if is_valid_device_id(device_id) and leaf in DEVICE_TOPICS:
            return Topic(device_id, leaf)
    raise InvalidPayload("unknown_topic", f"not a pendant/v1/<device_id>/<{'|'.join(DEVICE_TOPICS)}> topic")


# ---- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A GNSS fix."""

    lat: float
    lon: float
    acc: int
    tst: int | None
    src: str


@dataclass(frozen=True)
class Cell:
    """The serving cell, sent when there is no fix."""

    mcc: int
    mnc: int
    lac: str
    cid: str
    rat: str


@dataclass(frozen=True)
class SetAside:
    """A field of an alarm that broke the protocol and was left out of the record (the stored payload
    keeps it as sent). `field` is one of ALARM_OPTIONAL_FIELDS, `reason` one of REASONS, and `path` the
    part that broke (`loc.lat`): never its value, which may be a position."""

    field: str
    reason: str
    path: str


@dataclass(frozen=True)
class Alarm:
    """An alarm as the pendant sent it, less the fields set aside (None, or `kind` UNKNOWN_KIND and
    `test` false: a doubtful alarm is a real one)."""

    alarm_id: str
    kind: str
    tst: int | None
    loc: Location | None
    cell: Cell | None
    batt: int | None
    test: bool
    set_aside: tuple[SetAside, ...] = ()

    def is_set_aside(self, name: str) -> bool:
        """True if the field `name` (one of ALARM_OPTIONAL_FIELDS) was set aside."""
        return any(item.field == name for item in self.set_aside)


@dataclass(frozen=True)
class AlarmAck:
    """The backend's answer to an alarm."""

    alarm_id: str
    state: str = "received"


@dataclass(frozen=True)
class Status:
    """A birth (`online` true, with `fw`) or a will (`online` false)."""

    online: bool
    boot: int
    sess: int
    fw: str | None = None


@dataclass(frozen=True)
class Telemetry:
    """A heartbeat (`tele`)."""

    tst: int | None
    boot: int
    up: int
    batt: int | None
    mv: int | None
    chg: bool
    rssi: int | None
    reg: str
    rat: str | None
    loc: Location | None
    fw: str
    cfg: int
    out: int
    heap: int


@dataclass(frozen=True)
class Event:
    """A device event; `fields` holds the event-specific fields (everything but `evt` and `tst`)."""

    evt: str
    tst: int | None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FallbackReport:
    """What the pendant's SMS and call fallback did for one alarm (`evt` `fallback`)."""

    alarm_id: str
    tst: int | None
    sms: tuple[str, ...]
    sms_failed: tuple[str, ...]
    calls: int
    answered: str | None
    call_s: int
    rounds: int

    def steps(self) -> dict[str, Any]:
        """The report as the alarm keeps it (`Alarm.fallback`): every field but the alarm id."""
        return {
            "sms": list(self.sms),
            "sms_failed": list(self.sms_failed),
            "calls": self.calls,
            "answered": self.answered,
            "call_s": self.call_s,
            "rounds": self.rounds,
            "tst": self.tst,
        }


@dataclass(frozen=True)
class Command:
    """A command to a device; `args` holds its arguments (e.g. `pattern` for `vibrate`)."""

    id: str
    cmd: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandResult:
    """A device's answer to one command."""

    id: str
    ok: bool
    err: str | None = None
    # What the command produced, as it came (`loc`/`cell` of locate, `alarm_id` of test_alarm, `report`).
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceConfig:
    """The device's whole configuration (`config`, retained), with the defaults of protocol.md."""

    rev: int = 0
    heartbeat_s: int = 180
    ack_timeout_s: int = 30
    press_ms: int = 2000
    sms: tuple[str, ...] = ()
    call: tuple[str, ...] = ()
    callback: tuple[str, ...] = ()
    batt_low: int = 20
    batt_critical: int = 5
    loc_s: int = 30
    presses: int = 0
    off_ms: int = 3000
    off_alarm: bool = False
    fix_s: int = 600
    rounds: int = 5


# Fields added to protocol v1 after its first release: a document without them (an older backend's
# retained config) means their defaults.
_LATER_CONFIG_FIELDS = {spec.name: spec.default for spec in fields(DeviceConfig)}


# ---- field readers -------------------------------------------------------------------------------

_MISSING = object()
_PHONE_RE = re.compile(r"\+?[0-9]{2,20}")


class _Fields:
    """Typed access to one JSON object; every failure names the field's path."""

    def __init__(self, obj: object, path: str = "") -> None:
        if not isinstance(obj, dict):
            raise InvalidPayload("not_an_object", f"{path or 'payload'} must be a JSON object", path)
        self.obj = obj
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, *, optional: bool = False) -> Any:
        value = self.obj.get(key, _MISSING)
        if value is _MISSING:
            if optional:
                return None
            raise InvalidPayload("missing_field", f"{self._name(key)} is missing", self._name(key))
        return value

    def integer(self, key: str, *, nullable: bool = False, lo: int = -INT32_MAX, hi: int = INT32_MAX) -> Any:
        """An integer within lo..hi (by default one that fits a 32-bit database column)."""
        value = self.raw(key)
        if value is None and nullable:
            return None
        # bool is an int in Python but `true` is no number in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidPayload(
                "bad_type", f"{self._name(key)} must be an integer{' or null' * nullable}", self._name(key)
            )
        self._check_range(key, value, lo, hi)
        return value

    def number(self, key: str, *, lo: float, hi: float) -> float:
        value = self.raw(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidPayload("bad_type", f"{self._name(key)} must be a number", self._name(key))
        self._check_range(key, value, lo, hi)
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise InvalidPayload("bad_type", f"{self._name(key)} must be true or false", self._name(key))
        return value

    def text(self, key: str, *, nullable: bool = False, optional: bool = False, max_len: int = 64) -> Any:
        value = self.raw(key, optional=optional)
        if value is None and (nullable or optional):
            return None
        if not isinstance(value, str):
            raise InvalidPayload("bad_type", f"{self._name(key)} must be a string", self._name(key))
        if not value or len(value) > max_len:
            raise InvalidPayload(
                "out_of_range", f"{self._name(key)} must have 1..{max_len} characters", self._name(key)
            )
        # Control characters have no place in these fields, and PostgreSQL refuses NUL in text.
        if not value.isprintable():
            raise InvalidPayload("bad_value", f"{self._name(key)} holds control characters", self._name(key))
        return value

    def phones(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidPayload("bad_type", f"{self._name(key)} must be a list of strings", self._name(key))
        for number in value:
            if not _PHONE_RE.fullmatch(number):
                raise InvalidPayload(
                    "bad_value", f"{self._name(key)} holds {number!r}, not `+` and digits", self._name(key)
                )
        return tuple(value)

    def nested(self, key: str, *, nullable: bool = True) -> _Fields | None:
        value = self.raw(key)
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            raise InvalidPayload(
                "bad_type", f"{self._name(key)} must be an object{' or null' * nullable}", self._name(key)
            )
        return _Fields(value, self._name(key))

    def _check_range(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"{lo}..{hi}"
            raise InvalidPayload(
                "out_of_range", f"{self._name(key)} is {value}, outside {bounds}", self._name(key)
            )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_json(payload: bytes) -> _Fields:
    """Size, encoding and JSON checks shared by every message; returns the top-level object."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload("oversize", f"{len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload("bad_encoding", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # NaN and Infinity are accepted by Python's json but are not JSON.
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidPayload("bad_json", str(exc)) from None
    except RecursionError:
        raise InvalidPayload("bad_json", "nested too deeply") from None
    return _Fields(value)


def _location(fields: _Fields, key: str) -> Location | None:
    loc = fields.nested(key)
    if loc is None:
        return None
    return Location(
        lat=loc.number("lat", lo=-90, hi=90),
        lon=loc.number("lon", lo=-180, hi=180),
        acc=loc.integer("acc", lo=0),
        tst=loc.integer("tst", nullable=True, lo=0, hi=MAX_UNIX_TIME),
        src=loc.text("src"),
    )


def parse_location(obj: object) -> Location:
    """Validate a `loc` object found inside another message (e.g. an `evt`)."""
    location = _location(_Fields({"loc": obj}), "loc")
    if location is None:
        raise InvalidPayload("bad_type", "loc must be an object")
    return location


def _cell(fields: _Fields, key: str) -> Cell | None:
    cell = fields.nested(key)
    if cell is None:
        return None
    return Cell(
        mcc=cell.integer("mcc", lo=0, hi=999),
        mnc=cell.integer("mnc", lo=0, hi=999),
        lac=cell.text("lac", max_len=16),
        cid=cell.text("cid", max_len=16),
        rat=cell.text("rat", max_len=16),
    )


# ---- parsers: device -> backend -------------------------------------------------------------------


def parse_alarm(payload: bytes) -> Alarm:
    """Validate an `alarm` payload. Unknown extra fields are ignored (v1 may add fields).

    Rejected (InvalidPayload) only when the alarm cannot be stored and acked: not JSON or not an object
    (nothing to read), or no `alarm_id` of the protocol's form (the ack names it, the pendant clears its
    outbox by it, and resends are told apart by it; the topic gives only the device). Every other field
    that breaks the protocol is set aside (`Alarm.set_aside`) and the rest kept.
    """
    f = decode_json(payload)
    alarm_id = f.raw("alarm_id")
    if not is_valid_alarm_id(alarm_id):
        raise InvalidPayload(
            "bad_alarm_id", f"alarm_id {alarm_id!r} is not <boot>-<seq> of at most 32 characters", "alarm_id"
        )
    aside: list[SetAside] = []

    def keep(name: str, read: Callable[[], Any], default: Any) -> Any:
        try:
            return read()
        except InvalidPayload as exc:
            aside.append(SetAside(name, exc.reason, exc.path or name))
            return default

    kind = keep("kind", lambda: _alarm_kind(f), UNKNOWN_KIND)
    test = keep("test", lambda: f.flag("test"), False)
    tst = keep("tst", lambda: f.integer("tst", nullable=True, lo=0, hi=MAX_UNIX_TIME), None)
    loc = _alarm_location(f, keep)
    cell = keep("cell", lambda: _cell(f, "cell"), None)
    batt = keep("batt", lambda: f.integer("batt", nullable=True, lo=0, hi=100), None)
    return Alarm(
        alarm_id=alarm_id,
        kind=kind,
        tst=tst,
        loc=loc,
        cell=cell,
        batt=batt,
        # An alarm of a kind we cannot tell is a real one, whatever its `test` says.
        test=test and kind != UNKNOWN_KIND,
        set_aside=tuple(aside),
    )


def _alarm_kind(f: _Fields) -> str:
    kind = f.raw("kind")
    if not isinstance(kind, str):
        raise InvalidPayload("bad_type", "kind must be a string", "kind")
    if kind not in ALARM_KINDS:
        raise InvalidPayload(
            "unknown_kind", f"kind {kind!r} is not one of {', '.join(sorted(ALARM_KINDS))}", "kind"
        )
    return kind


def _alarm_location(f: _Fields, keep: Callable[[str, Callable[[], Any], Any], Any]) -> Location | None:
    """An alarm's fix: set aside whole when its position, accuracy or source is bad (a point that cannot
    be drawn with its accuracy misleads); kept without its time when only `loc.tst` is bad."""
    loc = keep("loc", lambda: f.nested("loc"), None)
    if loc is None:
        return None
    fix = keep(
        "loc",
        lambda: (
            loc.number("lat", lo=-90, hi=90),
            loc.number("lon", lo=-180, hi=180),
            loc.integer("acc", lo=0),
            loc.text("src"),
        ),
        None,
    )
    if fix is None:
        return None
    lat, lon, acc, src = fix
    tst = keep("loc.tst", lambda: loc.integer("tst", nullable=True, lo=0, hi=MAX_UNIX_TIME), None)
    return Location(lat=lat, lon=lon, acc=acc, tst=tst, src=src)


def parse_status(payload: bytes) -> Status:
    """Validate a birth or will on `status`."""
    f = decode_json(payload)
    online = f.flag("online")
    return Status(
        online=online,
        boot=f.integer("boot", lo=0),
        sess=f.integer("sess", lo=0),
        fw=f.text("fw", optional=not online),
    )


def parse_telemetry(payload: bytes) -> Telemetry:
    """Validate a heartbeat on `tele`."""
    f = decode_json(payload)
    reg = f.text("reg")
    if reg not in REGISTRATION_STATES:
        raise InvalidPayload(
            "bad_value", f"reg {reg!r} is not one of {', '.join(sorted(REGISTRATION_STATES))}"
        )
    return Telemetry(
        tst=f.integer("tst", nullable=True, lo=0, hi=MAX_UNIX_TIME),
        boot=f.integer("boot", lo=0),
        up=f.integer("up", lo=0),
        batt=f.integer("batt", nullable=True, lo=0, hi=100),
        mv=f.integer("mv", nullable=True, lo=0),
        chg=f.flag("chg"),
        rssi=f.integer("rssi", nullable=True),
        reg=reg,
        rat=f.text("rat", nullable=True, max_len=16),
        loc=_location(f, "loc"),
        fw=f.text("fw"),
        cfg=f.integer("cfg", lo=0),
        out=f.integer("out", lo=0),
        heap=f.integer("heap", lo=0),
    )


def parse_event(payload: bytes) -> Event:
    """Validate an `evt`; the event-specific fields are kept as they came."""
    f = decode_json(payload)
    evt = f.text("evt")
    tst = f.integer("tst", nullable=True, lo=0, hi=MAX_UNIX_TIME)
    rest = {k: v for k, v in f.obj.items() if k not in ("evt", "tst")}
    return Event(evt=evt, tst=tst, fields=rest)


def parse_fallback(event: Event) -> FallbackReport:
    """Validate the fields of a `fallback` event (already parsed by `parse_event`)."""
    f = _Fields(dict(event.fields), "fallback")
    alarm_id = f.raw("alarm_id")
    if not is_valid_alarm_id(alarm_id):
        raise InvalidPayload("bad_alarm_id", f"fallback.alarm_id {alarm_id!r} is not <boot>-<seq>")
    answered = f.text("answered", nullable=True, max_len=21)
    if answered is not None and not _PHONE_RE.fullmatch(answered):
        raise InvalidPayload("bad_value", "fallback.answered is not `+` and digits")
    return FallbackReport(
        alarm_id=alarm_id,
        tst=event.tst,
        sms=f.phones("sms"),
        sms_failed=f.phones("sms_failed"),
        calls=f.integer("calls", lo=0),
        answered=answered,
        call_s=f.integer("call_s", lo=0),
        rounds=f.integer("rounds", lo=0),
    )


def parse_command_result(payload: bytes) -> CommandResult:
    """Validate a `cmd/res`; `err` is required when `ok` is false."""
    f = decode_json(payload)
    ok = f.flag("ok")
    rest = {k: v for k, v in f.obj.items() if k not in ("id", "ok", "err")}
    return CommandResult(id=f.text("id"), ok=ok, err=f.text("err", optional=ok, max_len=200), fields=rest)


# ---- parsers and encoders: backend -> device ------------------------------------------------------


def parse_alarm_ack(payload: bytes) -> AlarmAck:
    """Validate an `alarm/ack` (the firmware side's view; used by tests and tools)."""
    f = decode_json(payload)
    alarm_id = f.raw("alarm_id")
    if not is_valid_alarm_id(alarm_id):
        raise InvalidPayload("bad_alarm_id", f"alarm_id {alarm_id!r} is not <boot>-<seq>")
    state = f.text("state")
    if state not in ALARM_STATES:
        raise InvalidPayload("bad_value", f"state {state!r} is not one of {', '.join(ALARM_STATES)}")
    return AlarmAck(alarm_id=alarm_id, state=state)


def parse_config(payload: bytes) -> DeviceConfig:
    """Validate a `config` with the ranges of protocol.md; unknown fields are ignored."""
    f = decode_json(payload)
    return DeviceConfig(
        rev=f.integer("rev", lo=0),
        heartbeat_s=f.integer("heartbeat_s", lo=60, hi=86400),
        ack_timeout_s=f.integer("ack_timeout_s", lo=5, hi=300),
        press_ms=f.integer("press_ms", lo=300, hi=10000),
        sms=f.phones("sms"),
        call=f.phones("call"),
        callback=f.phones("callback"),
        batt_low=f.integer("batt_low", lo=5, hi=50),
        batt_critical=f.integer("batt_critical", lo=1, hi=20),
        loc_s=f.integer("loc_s", lo=10, hi=600),
        presses=_presses(f),
        off_ms=_later(f, "off_ms", lambda: f.integer("off_ms", lo=1000, hi=10000)),
        off_alarm=_later(f, "off_alarm", lambda: f.flag("off_alarm")),
        fix_s=_later(f, "fix_s", lambda: f.integer("fix_s", lo=60, hi=86400)),
        rounds=_later(f, "rounds", lambda: f.integer("rounds", lo=1, hi=10)),
    )


def _later(f: _Fields, key: str, read: Callable[[], Any]) -> Any:
    """A field added after v1's first release: its default when absent, else read and checked."""
    return _LATER_CONFIG_FIELDS[key] if key not in f.obj else read()


def _presses(f: _Fields) -> int:
    presses = _later(f, "presses", lambda: f.integer("presses", lo=0, hi=6))
    if presses == 1:
        raise InvalidPayload("out_of_range", "presses must be 0 (off) or 2..6")
    return presses


def parse_command(payload: bytes) -> Command:
    """Validate a `cmd`."""
    f = decode_json(payload)
    cmd = f.text("cmd")
    if cmd not in COMMANDS:
        raise InvalidPayload("bad_value", f"cmd {cmd!r} is not one of {', '.join(sorted(COMMANDS))}")
    args = {k: v for k, v in f.obj.items() if k not in ("id", "cmd")}
    return Command(id=f.text("id"), cmd=cmd, args=args)


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encode_alarm_ack(ack: AlarmAck) -> bytes:
    """The compact JSON of an `alarm/ack`."""
    return _compact({"alarm_id": ack.alarm_id, "state": ack.state})


def encode_config(config: DeviceConfig) -> bytes:
    """The compact JSON of a `config`, fields in the order of protocol.md; validated before it leaves."""
    data = asdict(config)
    for key in ("sms", "call", "callback"):
        data[key] = list(data[key])
    payload = _compact(data)
    parse_config(payload)
    return payload


def encode_command(command: Command) -> bytes:
    """The compact JSON of a `cmd`."""
    return _compact({"id": command.id, "cmd": command.cmd, **command.args})


PARSERS = {
    "alarm": parse_alarm,
    "status": parse_status,
    "tele": parse_telemetry,
    "evt": parse_event,
    "cmd/res": parse_command_result,
}
