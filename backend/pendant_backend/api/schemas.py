"""The JSON API's typed models (the FastAPI full-stack template's `*Public` family): what each route
answers and the bodies it takes, so that the OpenAPI document tells a client generator every field.

An alarm never carries where the person is: AlarmPublic says only what kind of location came with it
and how accurate it is. The position, the cell and the trail are LocationPublic and TrailPointPublic,
served only by the two routes that read them through pendant_backend.locations (an audit event each).

The value sets of the filters (Connectivity, LoanState, ...) are spelled out here for the document;
tests/backend/test_api_fleet.py checks that they match the rules they come from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import create_model
from sqlmodel import Field, SQLModel

from pendant_backend import audit, health, lifecycle, queries
from pendant_backend.locations import LocationKind, location_kind
from pendant_backend.models import LOAN_STATES, Alarm, AlarmLocation, AuditEvent, Command, Device, DeviceBase

AlarmState = Literal["received", "acknowledged", "resolved"]
Resolution = Literal["incident", "precautionary", "false", "test"]
Connectivity = Literal["online", "late", "offline", "never_seen"]
Battery = Literal["ok", "low", "critical", "unknown"]
HealthFlag = Literal[
    "charging",
    "weak_signal",
    "gnss_stale",
    "outbox_backlog",
    "firmware_drift",
    "config_drift",
    "test_overdue",
    "renewal_due",
]
LoanState = Literal["in_stock", "provisioned", "issued", "returned", "decommissioned"]
SupervisionProfile = Literal["SP4", "SP3", "custom"]


# ---- alarms ---------------------------------------------------------------------------------------


class FallbackPublic(SQLModel):
    """The pendant's report of its own SMS and call fallback (sent once its data path was back)."""

    sms: list[str] = Field(default_factory=list, description="numbers the SMS reached")
    sms_failed: list[str] = Field(default_factory=list, description="numbers the SMS did not reach")
    calls: int = Field(default=0, description="calls placed")
    answered: str | None = Field(default=None, description="the number that answered, if one did")
    call_s: int = Field(default=0, description="seconds talked")
    rounds: int = Field(default=0, description="rounds of SMS and calls")


class AlarmPublic(SQLModel):
    """An alarm and where it stands, without its position (GET .../location has that, audited)."""

    id: int = Field(description="the alarm's number: a reference in URLs, like `ref`")
    ref: str = Field(description="`<device_id>/<alarm_id>`, with `#<n>` after an alarm id was reused")
    device_id: str
    alarm_id: str
    occurrence: int
    id_collision: bool
    kind: str
    test: bool = Field(description="a test alarm: never dispatched, never escalated")
    state: AlarmState
    raised_at: datetime = Field(description="the pendant's time of the press, else when it was received")
    received_at: datetime
    device_time: int | None = Field(description="the pendant's clock at the press, Unix seconds")
    location_kind: LocationKind = Field(description="what came with the alarm: a GNSS fix, a cell, nothing")
    location_accuracy_m: int | None = Field(description="the fix's accuracy in metres (GNSS only)")
    batt: int | None = Field(description="battery, percent")
    location_invalid: bool = Field(
        description="the fix it sent broke the protocol (e.g. `loc.lat` 200): set aside, not to be trusted"
    )
    location_time_invalid: bool = Field(description="the fix is kept but its time (`loc.tst`) was invalid")
    cell_invalid: bool = Field(description="the cell it sent was invalid: set aside")
    time_invalid: bool = Field(
        description="its time (`tst`) was invalid (e.g. in milliseconds): `raised_at` is the time of receipt"
    )
    battery_invalid: bool = Field(description="its battery (`batt`) was out of 0..100: `batt` is null")
    kind_invalid: bool = Field(
        description="its `kind` was invalid: kind `unknown`, handled as a real alarm (never as a test)"
    )
    test_flag_invalid: bool = Field(description="its `test` was not true or false: handled as a real alarm")
    set_aside: list[str] = Field(description="the flags above that are set, in order")
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(description="the username of who acknowledged it")
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="the username of who resolved it")
    resolution: Resolution | None
    note: str | None
    escalations: int
    last_escalated_at: datetime | None
    resends: int
    fallback: FallbackPublic | None
    fallback_at: datetime | None

    @classmethod
    def of(cls, alarm: Alarm) -> AlarmPublic:
        """The public view of a stored alarm."""
        fields = alarm.model_dump(exclude={"lat", "lon", "acc", "loc_time", "loc_src", "cell", "payload"})
        return cls(
            **fields,
            ref=alarm.ref,
            raised_at=alarm.raised_at,
            set_aside=alarm.set_aside,
            location_kind=location_kind(alarm),
            location_accuracy_m=alarm.acc if alarm.lat is not None else None,
        )


class AlarmResolve(SQLModel):
    """The body of POST /alarms/{ref}/resolve."""

    resolution: Resolution = Field(description="what the alarm turned out to be")
    note: str = Field(default="", max_length=lifecycle.MAX_NOTE, description="what was done")


class PositionPublic(SQLModel):
    """The fix the alarm came with."""

    lat: float
    lon: float
    acc: int | None = Field(description="accuracy, metres")
    loc_time: int | None = Field(description="when the fix was taken, Unix seconds")
    loc_src: str | None = Field(description="where the fix came from (`gnss`)")


class CellPublic(SQLModel):
    """The serving cell, for an alarm that came without a fix."""

    mcc: int
    mnc: int
    lac: str
    cid: str
    rat: str | None = None


class CellAreaPublic(SQLModel):
    """The area the serving cell covers, from the force's own cell database (PENDANT_CELL_DB)."""

    lat: float
    lon: float
    range_m: int
    source: str


class TrailPointPublic(SQLModel):
    """One point of an alarm's trail: its own fix, then every fix while it was open."""

    id: int = Field(description="give it as `after_point` to get only newer points")
    at: datetime = Field(description="when the backend received it")
    lat: float
    lon: float
    acc: int = Field(description="accuracy, metres")
    loc_time: int | None = Field(description="when the fix was taken, Unix seconds")
    source: str = Field(
        description="the message that carried it: alarm, resend (a resent alarm with a newer fix), tele, "
        "evt or locate"
    )

    @classmethod
    def of(cls, point: AlarmLocation) -> TrailPointPublic:
        """The public view of a stored trail point."""
        return cls(
            id=point.id,
            at=point.received_at,
            lat=point.lat,
            lon=point.lon,
            acc=point.acc,
            loc_time=point.loc_time,
            source=point.source,
        )


class LocationPublic(SQLModel):
    """Where the alarm says the person is: its fix, or its cell (and the cell's area when the force's
    cell database knows it), and its trail. Reading it is a `location_viewed` audit event."""

    alarm_id: int = Field(description="the alarm's number")
    ref: str
    state: AlarmState
    location_kind: LocationKind
    position: PositionPublic | None
    cell: CellPublic | None
    cell_area: CellAreaPublic | None
    trail: list[TrailPointPublic]


class TimelineEventPublic(SQLModel):
    """One audit event of an alarm: what happened, when and who did it (digests, never the data)."""

    seq: int = Field(description="its place in the audit chain")
    at: datetime
    kind: str = Field(description="alarm_received, alarm_acknowledged, location_viewed, command_sent, ...")
    actor: str = Field(description="a username, or `system`")
    data: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> TimelineEventPublic:
        """The public view of a stored audit event, its data read from its body."""
        return cls(
            seq=event.seq, at=event.at, kind=event.kind, actor=event.actor, data=audit.event_data(event)
        )


class CommandPublic(SQLModel):
    """A command sent to a pendant (its answer, if one came, joins the alarm's trail)."""

    command_id: str = Field(description="the correlation id on the wire")
    device_id: str
    cmd: str
    alarm_id: int | None = Field(description="the number of the alarm it was sent for")
    requested_by: str
    created_at: datetime
    answered_at: datetime | None
    ok: bool | None

    @classmethod
    def of(cls, command: Command) -> CommandPublic:
        """The public view of a stored command (without its result, which may hold a position)."""
        return cls(
            command_id=command.command_id,
            device_id=command.device_id,
            cmd=command.cmd,
            alarm_id=command.alarm_pk,
            requested_by=command.requested_by,
            created_at=command.created_at,
            answered_at=command.answered_at,
            ok=command.ok,
        )


# ---- devices and the fleet ------------------------------------------------------------------------


class HealthPublic(SQLModel):
    """A pendant's health as last classified (docs/operations.md, "Fleet health")."""

    connectivity: Connectivity
    battery: Battery = "unknown"
    hours_left: float | None = Field(default=None, description="battery hours left at the recent rate")
    charging: bool = False
    weak_signal: bool = False
    gnss_stale: bool = False
    outbox_backlog: bool = False
    firmware_drift: bool = False
    config_drift: bool = False
    test_overdue: bool = False
    renewal_due: bool = False
    supervision: SupervisionProfile = Field(description="the profile of its config's heartbeat_s")
    heartbeat_s: int = Field(description="its config's heartbeat interval, seconds")
    interval_in_force: int = Field(
        description="the interval the rules hold it to: the one before a change until a heartbeat "
        "reports the new config revision"
    )
    late_after_s: int = Field(description="silence after which it is late")
    offline_after_s: int = Field(description="silence after which it is offline")
    supervision_pending: bool = Field(description="a new interval waits for its next heartbeat")

    @classmethod
    def of(cls, device: Device) -> HealthPublic:
        """The device's stored health (flags are stored as yes/no) and supervision."""
        stored = device.health or {}
        flags = {flag: stored.get(flag) == "yes" for flag in health.FLAGS}
        watch = queries.supervision_as_dict(device)
        return cls(
            connectivity=device.connectivity,
            battery=stored.get("battery", "unknown"),
            hours_left=stored.get("hours_left"),
            **flags,
            supervision=watch["profile"],
            heartbeat_s=watch["heartbeat_s"],
            interval_in_force=watch["interval_in_force"],
            late_after_s=watch["late_after_s"],
            offline_after_s=watch["offline_after_s"],
            supervision_pending=watch["pending"],
        )


class DevicePublic(DeviceBase):
    """A pendant as the API shows it: no password hash; `case_ref` only to those whose roles show case
    references (dispatcher, supervisor, police IT), null to the others."""

    device_id: str
    loan_state: LoanState
    provisioned_at: datetime | None
    issued_at: datetime | None
    returned_at: datetime | None
    decommissioned_at: datetime | None
    renewal_due: datetime | None
    recall: bool
    issued_without: list[str] | None = Field(description="what was missing when it was issued anyway")
    revoked_at: datetime | None
    rotated_at: datetime | None
    erased_at: datetime | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    last_heartbeat_at: datetime | None
    last_fix_at: datetime | None = Field(description="when it last had a fix (the fix itself is not shown)")
    last_test_alarm_at: datetime | None
    online: bool | None
    boot: int | None
    fw: str | None = Field(description="the firmware it reports")
    config_rev: int
    config_applied_rev: int | None
    config_error: str | None
    health: HealthPublic
    health_changed_at: datetime | None

    @classmethod
    def of(cls, device: Device, *, show_case: bool) -> DevicePublic:
        """The public view of a stored device; `show_case` when the caller may see case references."""
        fields = device.model_dump(
            exclude={"password_hash", "sess", "config_doc", "connectivity", "health", "case_ref"}
        )
        return cls(**fields, case_ref=device.case_ref if show_case else None, health=HealthPublic.of(device))


class HealthEventPublic(SQLModel):
    """One change of one aspect of a pendant's health."""

    id: int
    device_id: str
    at: datetime
    aspect: str = Field(description="connectivity, battery or a flag such as weak_signal")
    old: str | None
    new: str


def _counts(name: str, keys: tuple[str, ...], what: str) -> type[SQLModel]:
    # One integer field per state, named after the rules' own tuple so that the two cannot drift.
    fields: dict[str, Any] = {key: (int, 0) for key in keys}
    return create_model(name, __base__=SQLModel, __doc__=f"How many pendants per {what}.", **fields)


ConnectivityCounts = _counts("ConnectivityCounts", health.CONNECTIVITY, "connectivity state")
BatteryCounts = _counts("BatteryCounts", health.BATTERY, "battery level")
FlagCounts = _counts("FlagCounts", health.FLAGS, "health flag that is set")
LoanCounts = _counts("LoanCounts", LOAN_STATES, "loan state")


class AlarmCounts(SQLModel):
    """Alarms that are not test alarms and not resolved yet."""

    open: int
    unacknowledged: int


class FleetSummary(SQLModel):
    """Counts over the fleet: health of the monitored pendants (provisioned or issued, not revoked),
    loan states of all of them, and open alarms."""

    devices: int
    monitored: int
    connectivity: ConnectivityCounts
    battery: BatteryCounts
    flags: FlagCounts
    loan: LoanCounts
    recall: int
    alarms: AlarmCounts


# ---- refusals -------------------------------------------------------------------------------------


class Problem(SQLModel):
    """What a refused request answers: one sentence saying what went wrong and what to do."""

    detail: str


_PROBLEMS = {
    401: "No valid API token (or console session) came with the request.",
    403: "The caller's roles do not allow this.",
    404: "There is no such alarm or device.",
    409: "The alarm or the pendant is not in a state that allows this.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route or router for these refusal statuses (for the OpenAPI document)."""
    return {status: {"model": Problem, "description": _PROBLEMS[status]} for status in statuses}
