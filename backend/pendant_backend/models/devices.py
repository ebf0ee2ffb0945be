"""The device registry: Base -> Create/Update -> table (the API's DevicePublic: api/schemas.py). No victim
names or addresses anywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, event, inspect
from sqlmodel import Field, SQLModel

from pendant_backend.models.base import utc_field

LOAN_STATES = ("in_stock", "provisioned", "issued", "returned", "decommissioned")
# What the health rules read from a device row (pendant_backend.monitor builds its snapshot from them).
HEALTH_INPUTS = (
    "last_seen_at",
    "online",
    "last_heartbeat_at",
    "last_fix_at",
    "fw",
    "firmware_version",
    "config_doc",
    "config_rev",
    "config_applied_rev",
    "config_error",
    "heartbeat_prev_s",
    "heartbeat_since_rev",
    "loan_state",
    "issued_at",
    "last_test_alarm_at",
    "renewal_due",
    "revoked_at",
)
# `health_due_at` of a device whose health must be classified again at the next tick: earlier than any
# clock the backend runs on, so that every look for due devices finds it.
RECHECK = datetime(1970, 1, 1, tzinfo=UTC)


class DeviceBase(SQLModel):
    """What a technician or police IT records about a pendant."""

    imei: str | None = Field(default=None, max_length=16, unique=True)
    iccid: str | None = Field(default=None, max_length=22, unique=True)
    phone: str | None = Field(default=None, max_length=20)
    hardware_rev: str | None = Field(default=None, max_length=32)
    # The firmware the pendant should run (set when it is flashed); drift when it reports another.
    firmware_version: str | None = Field(default=None, max_length=32)
    # The police case the loan belongs to: a reference only, never a name or an address.
    case_ref: str | None = Field(default=None, max_length=64)


class DeviceCreate(DeviceBase):
    """A new pendant, in stock."""

    device_id: str = Field(max_length=32)


class DeviceUpdate(SQLModel):
    """Registry fields to change; None leaves a field as it is."""

    imei: str | None = None
    iccid: str | None = None
    phone: str | None = None
    hardware_rev: str | None = None
    firmware_version: str | None = None
    case_ref: str | None = None


class Device(DeviceBase, table=True):
    """A pendant: registered by a technician, provisioned, or first seen on the broker."""

    __tablename__ = "devices"
    # The fleet summary counts from this index alone (pendant_backend.monitor.fleet_summary).
    __table_args__ = (
        Index(
            "ix_devices_fleet_counts",
            "loan_state",
            "revoked_at",
            "recall",
            "connectivity",
            "battery",
            "health_flags",
        ),
    )

    device_id: str = Field(primary_key=True, max_length=32)
    loan_state: str = Field(default="in_stock", max_length=16, index=True)
    provisioned_at: datetime | None = utc_field()
    issued_at: datetime | None = utc_field()
    returned_at: datetime | None = utc_field()
    decommissioned_at: datetime | None = utc_field()
    renewal_due: datetime | None = utc_field()
    recall: bool = False
    # What was missing when it was issued with an override (`sms`, `call`, `bench`); None when ready.
    issued_without: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # pbkdf2 of the broker password: the password itself exists only in the device's config.json.
    password_hash: str | None = None
    revoked_at: datetime | None = utc_field()
    rotated_at: datetime | None = utc_field()
    erased_at: datetime | None = utc_field()
    # What the pendant reported.
    first_seen_at: datetime | None = utc_field()
    last_seen_at: datetime | None = utc_field()
    last_heartbeat_at: datetime | None = utc_field()
    last_fix_at: datetime | None = utc_field()
    last_test_alarm_at: datetime | None = utc_field()
    online: bool | None = None
    # `sess` of the last birth: a will with a lower `sess` belongs to an older connection.
    sess: int | None = None
    boot: int | None = None
    # `up` of the newest heartbeat taken of boot `boot` (None until one came, and again after a birth
    # of another boot): a heartbeat older than it (another worker's, handled late) changes no reading.
    heartbeat_up: int | None = None
    fw: str | None = Field(default=None, max_length=64)
    # Config: the revision published to the device, the one it says it applies, and its last refusal.
    config_rev: int = 0
    config_doc: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    config_applied_rev: int | None = None
    config_error: str | None = Field(default=None, max_length=200)
    # Supervision (pendant_backend.supervision): after a change of the config's `heartbeat_s`, the
    # interval before it, and the revision that brought the new one; the old interval holds until a
    # heartbeat reports that revision. None when no change was ever made.
    heartbeat_prev_s: int | None = None
    heartbeat_since_rev: int | None = None
    # Health as last classified (pendant_backend.health), and when it last changed. `connectivity`,
    # `battery` and `health_flags` (health.flag_bits) repeat `health` in columns the fleet counts use.
    connectivity: str = Field(default="never_seen", max_length=16, index=True)
    battery: str = Field(default="unknown", max_length=16)
    health_flags: int = 0
    health: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    health_changed_at: datetime | None = utc_field()
    # When its health can next change with nothing new arriving (a heartbeat falling late...); RECHECK
    # after a change of one of HEALTH_INPUTS; None when only news can change it. The rules look at the
    # devices due, never at the whole fleet.
    health_due_at: datetime | None = utc_field(index=True, default=RECHECK)


@event.listens_for(Device, "before_update")
def _recheck_health(mapper: Any, connection: Any, device: Device) -> None:
    """Whoever changes what the health rules read (ingest, a config, the registry, a loan, in this process
    or another) makes the device due at once, in the same transaction: nothing has to remember to tell
    the rules. The monitor's own writes set `health_due_at` themselves and are left alone."""
    state = inspect(device)
    if state.attrs.health_due_at.history.has_changes():
        return
    if any(state.attrs[name].history.has_changes() for name in HEALTH_INPUTS):
        device.health_due_at = RECHECK
