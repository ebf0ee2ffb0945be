"""sqlmodel tables: devices, alarms (each stored once per device and alarm id) and heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """`moment` as aware UTC (SQLite hands back naive datetimes, which we always store in UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _utc_column(**kwargs: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kwargs))


class Device(SQLModel, table=True):
    """A pendant: provisioned by us, or first seen on the broker (then `password_hash` is None)."""

    __tablename__ = "devices"

    device_id: str = Field(primary_key=True, max_length=32)
    # pbkdf2 of the broker password: the password itself exists only in the device's config.json.
    password_hash: str | None = None
    provisioned_at: datetime | None = _utc_column(nullable=True)
    revoked_at: datetime | None = _utc_column(nullable=True)
    first_seen_at: datetime | None = _utc_column(nullable=True)
    last_seen_at: datetime | None = _utc_column(nullable=True)
    online: bool | None = None
    # `sess` of the last birth: a will with a lower `sess` belongs to an older connection.
    sess: int | None = None
    boot: int | None = None
    fw: str | None = None


class Alarm(SQLModel, table=True):
    """One alarm, stored once however often the pendant resends it."""

    __tablename__ = "alarms"
    __table_args__ = (UniqueConstraint("device_id", "alarm_id", name="uq_alarms_device_alarm"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    alarm_id: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    test: bool = False
    state: str = Field(default="received", max_length=16, index=True)
    # `tst` from the pendant's clock, Unix seconds; None when its clock was not yet set.
    device_time: int | None = Field(default=None, sa_type=BigInteger)
    received_at: datetime = _utc_column(nullable=False, index=True)
    lat: float | None = None
    lon: float | None = None
    acc: int | None = None
    loc_time: int | None = Field(default=None, sa_type=BigInteger)
    loc_src: str | None = None
    cell: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    batt: int | None = None
    # How many times the same alarm arrived again after it was stored (resends, redeliveries).
    resends: int = 0
    # The payload exactly as received, for the record.
    payload: str = ""

    @property
    def raised_at(self) -> datetime:
        """When the alarm was raised: the pendant's time if it had one, else when we received it."""
        if self.device_time is not None:
            return datetime.fromtimestamp(self.device_time, UTC)
        return as_utc(self.received_at)

    @property
    def ref(self) -> str:
        """`<device_id>/<alarm_id>`, the name the CLI shows and accepts."""
        return f"{self.device_id}/{self.alarm_id}"


class Heartbeat(SQLModel, table=True):
    """One `tele` message."""

    __tablename__ = "heartbeats"

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    received_at: datetime = _utc_column(nullable=False, index=True)
    device_time: int | None = Field(default=None, sa_type=BigInteger)
    boot: int
    up: int
    batt: int | None = None
    mv: int | None = None
    chg: bool
    rssi: int | None = None
    reg: str
    rat: str | None = None
    lat: float | None = None
    lon: float | None = None
    acc: int | None = None
    loc_time: int | None = Field(default=None, sa_type=BigInteger)
    fw: str
    cfg: int
    out: int
    heap: int
