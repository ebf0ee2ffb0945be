"""Alarms and their location trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from pendant_backend.models.base import as_utc, utc_field

# The flag of each alarm field that is set aside when it breaks the protocol (payloads.SetAside, by
# payloads.ALARM_OPTIONAL_FIELDS), in the order the console and the CLI list them. What the flag says
# is its name in words: `location_invalid` is "location invalid".
SET_ASIDE_FLAGS = {
    "loc": "location_invalid",
    "loc.tst": "location_time_invalid",
    "cell": "cell_invalid",
    "tst": "time_invalid",
    "batt": "battery_invalid",
    "kind": "kind_invalid",
    "test": "test_flag_invalid",
}


class AlarmBase(SQLModel):
    """What the pendant sent."""

    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    alarm_id: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    test: bool = False
    # `tst` from the pendant's clock, Unix seconds; None when its clock was not yet set.
    device_time: int | None = Field(default=None, sa_type=BigInteger)
    lat: float | None = None
    lon: float | None = None
    acc: int | None = None
    loc_time: int | None = Field(default=None, sa_type=BigInteger)
    loc_src: str | None = Field(default=None, max_length=16)
    cell: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    batt: int | None = None


class Alarm(AlarmBase, table=True):
    """One alarm, stored once however often the pendant resends it, and where it stands."""

    __tablename__ = "alarms"
    __table_args__ = (
        UniqueConstraint("device_id", "alarm_id", "occurrence", name="uq_alarms_device_alarm_occurrence"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # 0, or 1, 2... when a pendant that lost its state reused an alarm id for a different alarm.
    occurrence: int = 0
    id_collision: bool = False
    # Fields the pendant sent that broke the protocol: left out (None, or kind `unknown` and not a test)
    # and kept only in `payload` as sent. The dispatcher must not trust them (SET_ASIDE_FLAGS).
    location_invalid: bool = False
    location_time_invalid: bool = False
    cell_invalid: bool = False
    time_invalid: bool = False
    battery_invalid: bool = False
    kind_invalid: bool = False
    test_flag_invalid: bool = False
    state: str = Field(default="received", max_length=16, index=True)
    received_at: datetime = utc_field(nullable=False, index=True)
    acknowledged_at: datetime | None = utc_field()
    acknowledged_by: str | None = Field(default=None, max_length=64)
    resolved_at: datetime | None = utc_field()
    resolved_by: str | None = Field(default=None, max_length=64)
    resolution: str | None = Field(default=None, max_length=16)
    note: str | None = Field(default=None, max_length=2000)
    escalations: int = 0
    last_escalated_at: datetime | None = utc_field()
    # How many times the same alarm arrived again after it was stored (resends, redeliveries).
    resends: int = 0
    # The payload exactly as received, for the record.
    payload: str = ""
    # The pendant's report of its SMS and voice-call fallback (`evt` `fallback`), when one came.
    fallback: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    fallback_at: datetime | None = utc_field()

    @property
    def raised_at(self) -> datetime:
        """When the alarm was raised: the pendant's time if it had one, else when we received it."""
        if self.device_time is not None:
            return datetime.fromtimestamp(self.device_time, UTC)
        return as_utc(self.received_at)

    @property
    def set_aside(self) -> list[str]:
        """The flags of SET_ASIDE_FLAGS that are set, in their order (`["location_invalid"]`)."""
        return [flag for flag in SET_ASIDE_FLAGS.values() if getattr(self, flag)]

    @property
    def ref(self) -> str:
        """`<device_id>/<alarm_id>` (with `#<occurrence>` after an id collision): what the CLI shows."""
        suffix = f"#{self.occurrence}" if self.occurrence else ""
        return f"{self.device_id}/{self.alarm_id}{suffix}"


class AlarmLocation(SQLModel, table=True):
    """One point of an alarm's location trail: the alarm's own fix, then every fix while it is open."""

    __tablename__ = "alarm_locations"

    id: int | None = Field(default=None, primary_key=True)
    alarm_pk: int = Field(foreign_key="alarms.id", index=True)
    received_at: datetime = utc_field(nullable=False, index=True)
    lat: float
    lon: float
    acc: int
    loc_time: int | None = Field(default=None, sa_type=BigInteger)
    # Which message carried it: `alarm`, `tele` or `evt`.
    source: str = Field(max_length=8)
