"""sqlmodel tables. Importing this package registers every table with SQLModel.metadata."""

from pendant_backend.models.alarms import SET_ASIDE_FLAGS, Alarm, AlarmBase, AlarmLocation
from pendant_backend.models.base import as_utc, iso, utc_now
from pendant_backend.models.devices import (
    LOAN_STATES,
    Device,
    DeviceBase,
    DeviceCreate,
    DeviceUpdate,
)
from pendant_backend.models.people import Account, WebSession
from pendant_backend.models.records import (
    ApiToken,
    AuditEvent,
    BenchReport,
    Command,
    ConfigDocument,
    HealthEvent,
    Heartbeat,
    Notification,
    Outbound,
    ServiceBeat,
)

__all__ = [
    "LOAN_STATES",
    "SET_ASIDE_FLAGS",
    "Account",
    "Alarm",
    "AlarmBase",
    "AlarmLocation",
    "ApiToken",
    "AuditEvent",
    "BenchReport",
    "Command",
    "ConfigDocument",
    "Device",
    "DeviceBase",
    "DeviceCreate",
    "DeviceUpdate",
    "HealthEvent",
    "Heartbeat",
    "Notification",
    "Outbound",
    "ServiceBeat",
    "WebSession",
    "as_utc",
    "iso",
    "utc_now",
]
