"""The device registry and the loan lifecycle, for police IT and for the technician tools.

Every function takes keyword arguments and its own engine; every change of loan state is an audit event.
A device record holds hardware identifiers, a phone number and a case reference: never a victim's name
or address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from pendant_backend import BackendError, audit, chain, lifecycle
from pendant_backend.db import session_scope
from pendant_backend.models import BenchReport, Device, DeviceCreate, DeviceUpdate, utc_now
from pendant_backend.payloads import is_valid_device_id
from pendant_backend.settings import Settings, secret_key

IMEI_RE = re.compile(r"[0-9]{15}")
ICCID_RE = re.compile(r"[0-9]{18,20}F?")
PHONE_RE = re.compile(r"\+?[0-9]{3,20}")
MAX_REPORT_BYTES = 64 * 1024


class RegistryError(BackendError):
    """A registry change that cannot be made; the message says why."""


def _check_fields(fields: dict[str, Any]) -> None:
    checks = {
        "imei": (IMEI_RE, "15 digits"),
        "iccid": (ICCID_RE, "18 to 20 digits"),
        "phone": (PHONE_RE, "`+` and 3 to 20 digits"),
    }
    for name, (pattern, form) in checks.items():
        value = fields.get(name)
        if value is not None and not pattern.fullmatch(value):
            raise RegistryError(f"{name} {value!r} is not {form}")
    for name in ("hardware_rev", "firmware_version", "case_ref"):
        value = fields.get(name)
        if value is not None and (not value or len(value) > 64 or not value.isprintable()):
            raise RegistryError(f"{name} must be 1 to 64 printable characters")


def register_device(engine: Engine, *, device: DeviceCreate, actor: str = audit.SYSTEM) -> Device:
    """Add a pendant to the registry, in stock. Raises RegistryError if its id, IMEI or ICCID is taken."""
    if not is_valid_device_id(device.device_id):
        raise RegistryError(f"{device.device_id!r} is not a device id (3 to 32 of a-z, 0-9 and '-')")
    fields = device.model_dump()
    _check_fields(fields)
    now = utc_now()
    try:
        with session_scope(engine) as session:
            if session.get(Device, device.device_id) is not None:
                raise RegistryError(f"{device.device_id} is already registered")
            row = Device(**fields, loan_state="in_stock")
            session.add(row)
            session.flush()
            audit.append(session, kind="device_registered", at=now, actor=actor, device_id=row.device_id)
    except IntegrityError:
        raise RegistryError("that IMEI or ICCID belongs to another registered pendant") from None
    return row


def find_device(
    engine: Engine, *, device_id: str | None = None, imei: str | None = None, iccid: str | None = None
) -> Device | None:
    """The device with this id, IMEI or ICCID (the first given that matches), or None."""
    conditions = []
    if device_id:
        conditions.append(Device.device_id == device_id)
    if imei:
        conditions.append(Device.imei == imei)
    if iccid:
        conditions.append(Device.iccid == iccid)
    if not conditions:
        raise RegistryError("name a device id, an IMEI or an ICCID")
    with Session(engine) as session:
        return session.exec(select(Device).where(or_(*conditions))).first()


def _existing(session: Session, device_id: str) -> Device:
    """The device's row, or RegistryError saying how to list them."""
    device = session.get(Device, device_id)
    if device is None:
        raise RegistryError(f"there is no device {device_id}: see `pendant fleet`")
    return device


def get_device(engine: Engine, *, device_id: str) -> Device:
    """The device, or RegistryError saying how to list them."""
    with Session(engine) as session:
        return _existing(session, device_id)


def update_device(
    engine: Engine, *, device_id: str, changes: DeviceUpdate, actor: str = audit.SYSTEM
) -> Device:
    """Set registry fields (IMEI, ICCID, phone, hardware revision, firmware version, case reference);
    fields left None are unchanged."""
    fields = changes.model_dump(exclude_none=True)
    _check_fields(fields)
    try:
        with session_scope(engine) as session:
            device = _existing(session, device_id)
            for name, value in fields.items():
                setattr(device, name, value)
            session.add(device)
            audit.append(
                session,
                kind="device_updated",
                at=utc_now(),
                actor=actor,
                device_id=device_id,
                data={"fields": sorted(fields)},
            )
    except IntegrityError:
        raise RegistryError("that IMEI or ICCID belongs to another registered pendant") from None
    return device


def set_loan_state(
    engine: Engine,
    *,
    device_id: str,
    state: str,
    actor: str = audit.SYSTEM,
    case_ref: str | None = None,
    renewal_due: datetime | None = None,
    issued_without: list[str] | None = None,
    override_reason: str | None = None,
    now: datetime | None = None,
) -> Device:
    """Move a pendant along its loan: `issued` (needs a case reference; a renewal date is advised),
    `returned` (the case reference is cleared), `decommissioned`, `in_stock`, `provisioned`.

    `issued_without` (with `override_reason`) records a pendant issued although it was not ready
    (pendant_backend.readiness decides): an `issue_override` event, and the codes stay on the device
    until it is returned."""
    now = now or utc_now()
    with session_scope(engine) as session:
        device = _existing(session, device_id)
        lifecycle.check_loan_transition(device_id, device.loan_state, state)
        if state == "issued":
            if not case_ref:
                raise RegistryError("a pendant is issued for a case: give its case reference")
            _check_fields({"case_ref": case_ref})
            device.case_ref, device.issued_at, device.renewal_due = case_ref, now, renewal_due
            device.returned_at, device.recall = None, False
            device.issued_without = list(issued_without) if issued_without else None
        elif state == "returned":
            device.returned_at, device.case_ref, device.renewal_due, device.recall = now, None, None, False
            device.issued_without = None
        elif state == "decommissioned":
            device.decommissioned_at = now
        elif state == "provisioned":
            device.provisioned_at = device.provisioned_at or now
        previous, device.loan_state = device.loan_state, state
        session.add(device)
        audit.append(
            session,
            kind="loan_changed",
            at=now,
            actor=actor,
            device_id=device_id,
            data={"from": previous, "to": state, "case_ref": chain.digest(case_ref) if case_ref else None},
        )
        if state == "issued" and issued_without:
            audit.append(
                session,
                kind="issue_override",
                at=now,
                actor=actor,
                device_id=device_id,
                data={"missing": list(issued_without), "reason": override_reason},
            )
    return device


def set_renewal(
    engine: Engine, *, device_id: str, renewal_due: datetime | None, actor: str = audit.SYSTEM
) -> Device:
    """Set (or clear) the date by which an issued loan must be renewed."""
    with session_scope(engine) as session:
        device = _existing(session, device_id)
        device.renewal_due = renewal_due
        session.add(device)
        audit.append(
            session,
            kind="loan_renewal",
            at=utc_now(),
            actor=actor,
            device_id=device_id,
            data={"renewal_due": renewal_due.isoformat() if renewal_due else None},
        )
    return device


def set_recall(engine: Engine, *, device_id: str, recall: bool, actor: str = audit.SYSTEM) -> Device:
    """Flag (or unflag) a pendant to be brought back (a fault, a firmware campaign, the end of a case)."""
    with session_scope(engine) as session:
        device = _existing(session, device_id)
        device.recall = recall
        session.add(device)
        audit.append(
            session,
            kind="device_recall",
            at=utc_now(),
            actor=actor,
            device_id=device_id,
            data={"recall": recall},
        )
    return device


# ---- bench-test reports --------------------------------------------------------------------------


def sign_report(settings: Settings, body: str) -> str:
    """HMAC-SHA256 (hex) of a report's canonical JSON with the backend's key (secrets/signing.key)."""
    return hmac.new(secret_key(settings.signing_key_path), body.encode(), hashlib.sha256).hexdigest()


def verify_report(settings: Settings, report: BenchReport) -> bool:
    """True if the stored report is exactly what was signed."""
    return hmac.compare_digest(sign_report(settings, report.body), report.signature)


def store_bench_report(
    settings: Settings,
    engine: Engine,
    *,
    device_id: str,
    report: dict[str, Any],
    passed: bool,
    actor: str,
    now: datetime | None = None,
) -> BenchReport:
    """Keep a bench-test report (any JSON object, at most 64 KB) with the device record, signed."""
    body = chain.canonical(report)
    if len(body.encode()) > MAX_REPORT_BYTES:
        raise RegistryError(f"the report has {len(body.encode())} bytes, more than {MAX_REPORT_BYTES}")
    now = now or utc_now()
    with session_scope(engine) as session:
        if session.get(Device, device_id) is None:
            raise RegistryError(f"there is no device {device_id}: register it first")
        row = BenchReport(
            device_id=device_id,
            created_at=now,
            actor=actor,
            passed=passed,
            body=body,
            signature=sign_report(settings, body),
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            kind="bench_report",
            at=now,
            actor=actor,
            device_id=device_id,
            data={"report": row.id, "passed": passed, "digest": chain.digest(report)},
        )
    return row


def bench_reports(engine: Engine, *, device_id: str) -> list[BenchReport]:
    """The device's bench-test reports, newest first."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(BenchReport)
                .where(BenchReport.device_id == device_id)
                .order_by(col(BenchReport.created_at).desc(), col(BenchReport.id).desc())
            )
        )


def report_data(report: BenchReport) -> dict[str, Any]:
    """A stored report's JSON object."""
    return json.loads(report.body)
