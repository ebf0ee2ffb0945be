"""Helpers shared by the tables: aware UTC times and their columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """`moment` as aware UTC (SQLite hands back naive datetimes, which we always store in UTC; PostgreSQL
    hands back the session's time zone)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with microseconds, or None."""
    return as_utc(moment).isoformat(timespec="microseconds") if moment is not None else None


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back as aware UTC, on SQLite (which keeps no zone)
    as on PostgreSQL (which answers in the session's zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        # A naive time is taken as UTC, the zone of everything stored.
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value)


def utc_field(*, nullable: bool = True, index: bool = False, **kwargs: Any) -> Any:
    """A timezone-aware timestamp column."""
    if nullable and "default" not in kwargs:
        kwargs["default"] = None
    return Field(sa_type=UTCDateTime, nullable=nullable, index=index, **kwargs)
