"""Everything else the backend keeps: heartbeats, health events, the audit chain, config documents,
messages waiting for the broker or the webhook, API tokens and bench-test reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from pendant_backend.models.base import utc_field


class Heartbeat(SQLModel, table=True):
    """One `tele` message. A pendant's boot counter and uptime name one heartbeat: the unique index turns a
    redelivery (after a commit but before the PUBACK, or a QoS 1 resend) into a duplicate, not a row."""

    __tablename__ = "heartbeats"
    __table_args__ = (
        Index("uq_heartbeats_device_boot_up", "device_id", "boot", "up", unique=True),
        # A device's recent readings (the health rules' battery trend) without reading its whole history.
        Index("ix_heartbeats_device_id_received_at", "device_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: both indexes above lead with it.
    device_id: str = Field(foreign_key="devices.device_id", max_length=32)
    received_at: datetime = utc_field(nullable=False, index=True)
    device_time: int | None = Field(default=None, sa_type=BigInteger)
    boot: int
    up: int
    batt: int | None = None
    mv: int | None = None
    chg: bool
    rssi: int | None = None
    reg: str = Field(max_length=16)
    rat: str | None = Field(default=None, max_length=16)
    lat: float | None = None
    lon: float | None = None
    acc: int | None = None
    loc_time: int | None = Field(default=None, sa_type=BigInteger)
    fw: str = Field(max_length=64)
    cfg: int
    out: int
    heap: int


class HealthEvent(SQLModel, table=True):
    """One change of one aspect of a device's health (`connectivity`, `battery`, `weak_signal`...)."""

    __tablename__ = "health_events"

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    at: datetime = utc_field(nullable=False, index=True)
    aspect: str = Field(max_length=32)
    old: str | None = Field(default=None, max_length=32)
    new: str = Field(max_length=32)


class AuditEvent(SQLModel, table=True):
    """One link of the hash chain (pendant_backend.chain). `body` is the canonical JSON that is hashed;
    the other columns repeat parts of it for queries and must agree with it."""

    __tablename__ = "audit_events"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = utc_field(nullable=False, index=True)
    kind: str = Field(max_length=32, index=True)
    actor: str = Field(max_length=64)
    device_id: str | None = Field(default=None, max_length=32, index=True)
    # No foreign key: the event outlives an alarm erased on request.
    alarm_pk: int | None = Field(default=None, index=True)
    body: str = Field(sa_type=Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class ConfigDocument(SQLModel, table=True):
    """One revision of the fleet default (`scope` = `fleet`) or of one device's overrides."""

    __tablename__ = "config_documents"
    __table_args__ = (UniqueConstraint("scope", "version", name="uq_config_documents_scope_version"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=32, index=True)
    version: int
    values: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = utc_field(nullable=False)
    author: str = Field(max_length=64)


class Outbound(SQLModel, table=True):
    """A message for the broker, written in the same transaction as what it announces; the service
    publishes it and marks it sent once the broker has taken it."""

    __tablename__ = "outbound"

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=128)
    payload: str = Field(sa_type=Text)
    retain: bool = False
    created_at: datetime = utc_field(nullable=False)
    sent_at: datetime | None = utc_field(index=True)
    attempts: int = 0
    last_attempt_at: datetime | None = utc_field()


class Notification(SQLModel, table=True):
    """A webhook call waiting to be delivered, retried with backoff."""

    __tablename__ = "notifications"

    id: int | None = Field(default=None, primary_key=True)
    event: str = Field(max_length=32)
    # Whose data the body holds, so that erasing a device's data erases its notifications too.
    device_id: str | None = Field(default=None, max_length=32, index=True)
    body: str = Field(sa_type=Text)
    created_at: datetime = utc_field(nullable=False)
    next_attempt_at: datetime = utc_field(nullable=False, index=True)
    attempts: int = 0
    delivered_at: datetime | None = utc_field()
    failed_at: datetime | None = utc_field()
    last_error: str | None = Field(default=None, max_length=200)


class ApiToken(SQLModel, table=True):
    """A bearer token for the HTTP API, owned by an account whose roles it carries; kept only as a hash."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    # None only for tokens made before accounts existed: those are refused.
    account_id: int | None = Field(default=None, foreign_key="accounts.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = utc_field(nullable=False)
    revoked_at: datetime | None = utc_field()
    last_used_at: datetime | None = utc_field()


class BenchReport(SQLModel, table=True):
    """A bench-test report kept with the device record, signed with the backend's HMAC key."""

    __tablename__ = "bench_reports"

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    created_at: datetime = utc_field(nullable=False)
    actor: str = Field(max_length=64)
    passed: bool
    body: str = Field(sa_type=Text)
    signature: str = Field(max_length=64)


class Command(SQLModel, table=True):
    """A `cmd` sent to a pendant (by a person or the bench) and, once it came, its `cmd/res`."""

    __tablename__ = "commands"

    id: int | None = Field(default=None, primary_key=True)
    # The correlation id on the wire (`cmd.id`, echoed by `cmd/res.id`).
    command_id: str = Field(max_length=32, unique=True)
    device_id: str = Field(foreign_key="devices.device_id", index=True, max_length=32)
    cmd: str = Field(max_length=16)
    args: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The alarm it was sent for (a `locate` from the alarm view), if any.
    alarm_pk: int | None = Field(default=None, index=True)
    requested_by: str = Field(max_length=64)
    created_at: datetime = utc_field(nullable=False)
    answered_at: datetime | None = utc_field()
    ok: bool | None = None
    err: str | None = Field(default=None, max_length=200)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ServiceBeat(SQLModel, table=True):
    """A running backend (ingest) says it is alive, whether it reaches the broker, and when it stopped:
    the console reads it, so that a dispatcher never watches a screen that looks live while no alarm
    can arrive."""

    __tablename__ = "service_beats"

    instance: str = Field(primary_key=True, max_length=64)
    host: str = Field(max_length=64)
    pid: int
    started_at: datetime = utc_field(nullable=False)
    beat_at: datetime = utc_field(nullable=False, index=True)
    stopped_at: datetime | None = utc_field()
    broker_connected: bool = False
    webhook_configured: bool = False
