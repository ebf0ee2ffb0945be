"""Ready to issue: a pendant goes to a person at risk only when its fallback can work and it has passed
the bench. Three things can be missing, each a short code:

- `sms`: its config (fleet default and its own overrides) has no SMS number, so an alarm that cannot
  reach the backend reaches nobody by SMS;
- `call`: its config has no number to call;
- `bench`: no passing bench-test report since it was last provisioned (or came back from a loan).

`pendant device issue` refuses a pendant that is not ready unless an override reason is given; the
override is an audit event and the codes stay on the device (`issued_without`) until it is returned.
The fleet view lists the pendants that are not ready (`not_ready`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, configs, lifecycle, registry
from pendant_backend.models import BenchReport, ConfigDocument, Device, as_utc

# In the order they are shown.
CODES = ("sms", "call", "bench")

DESCRIPTIONS = {
    "sms": "no SMS number in its config",
    "call": "no number to call in its config",
    "bench": "no passing bench test since it was last provisioned",
}

# What to do about each, for the CLI's refusal.
FIXES = {
    "sms": "set one: `pendant device config {device_id} --set sms=+31612345678 --operator USERNAME`, "
    "or --fleet instead of the id for every pendant",
    "call": "set one: `pendant device config {device_id} --set call=112 --operator USERNAME`, "
    "or --fleet instead of the id for every pendant",
    "bench": "test it: `pendant bench` with the pendant on the bench",
}

# Pendants that may be issued now or are with a person: the ones whose readiness matters. A pendant in
# stock is provisioned (and so bench-tested) before it can be issued.
ISSUABLE_STATES = ("provisioned", "issued")
MAX_REASON = 200


class NotReady(BackendError):
    """A pendant that is not ready to issue; the message lists what is missing and how to fix it."""

    def __init__(self, device_id: str, missing: list[str]) -> None:
        self.device_id, self.missing = device_id, missing
        what = "; ".join(
            f"{DESCRIPTIONS[code]} ({FIXES[code].format(device_id=device_id)})" for code in missing
        )
        super().__init__(
            f"{device_id} is not ready to issue: {what}; or issue it anyway with --override REASON"
        )


def describe(codes: Iterable[str]) -> str:
    """The codes in words: 'no SMS number in its config, no passing bench test ...'."""
    return ", ".join(DESCRIPTIONS[code] for code in codes)


def check(
    *, config: Mapping[str, Any], since: datetime | None, passed_bench_at: datetime | None
) -> list[str]:
    """Pure: the missing codes for a pendant whose effective config is `config`, last provisioned (or
    returned) at `since`, whose newest passing bench report is from `passed_bench_at`."""
    missing = []
    if not config.get("sms"):
        missing.append("sms")
    if not config.get("call"):
        missing.append("call")
    # A pendant never provisioned has no `since`: any passing report counts, none means not tested.
    if passed_bench_at is None or (since is not None and as_utc(passed_bench_at) < as_utc(since)):
        missing.append("bench")
    return missing


def _since(device: Device) -> datetime | None:
    """The moment its last bench test must be newer than: its provisioning, or its return from a loan
    (a pendant back from a person is bench-tested again before it goes out again)."""
    moments = [as_utc(m) for m in (device.provisioned_at, device.returned_at) if m is not None]
    return max(moments) if moments else None


def _latest_values(session: Session, scopes: list[str]) -> dict[str, dict[str, Any]]:
    """The newest config values of each scope (the fleet and devices), read in one query."""
    rows = session.exec(
        select(ConfigDocument)
        .where(col(ConfigDocument.scope).in_(scopes))
        .order_by(col(ConfigDocument.scope), col(ConfigDocument.version))
    )
    # Ordered by version: the last row seen of a scope is its newest.
    return {row.scope: dict(row.values) for row in rows}


def _passed_bench(session: Session, device_ids: list[str]) -> dict[str, datetime]:
    """The newest passing bench report of each device."""
    newest: dict[str, datetime] = {}
    rows = session.exec(
        select(BenchReport).where(
            col(BenchReport.device_id).in_(device_ids), col(BenchReport.passed).is_(True)
        )
    )
    for report in rows:
        at = as_utc(report.created_at)
        if report.device_id not in newest or at > newest[report.device_id]:
            newest[report.device_id] = at
    return newest


def missing_of(session: Session, devices: list[Device]) -> dict[str, list[str]]:
    """What each of `devices` lacks (device id -> codes, [] when ready), read in the caller's session."""
    if not devices:
        return {}
    ids = [d.device_id for d in devices]
    values = _latest_values(session, [configs.FLEET, *ids])
    passed = _passed_bench(session, ids)
    fleet = values.get(configs.FLEET, {})
    return {
        d.device_id: check(
            config=configs.effective(fleet, values.get(d.device_id, {})),
            since=_since(d),
            passed_bench_at=passed.get(d.device_id),
        )
        for d in devices
    }


def missing(engine: Engine, *, device_id: str) -> list[str]:
    """What the pendant lacks to be issued (codes of CODES, [] when ready); RegistryError for a device
    that does not exist."""
    with Session(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise registry.RegistryError(f"there is no device {device_id}: see `pendant fleet`")
        return missing_of(session, [device])[device_id]


def not_ready(engine: Engine) -> dict[str, list[str]]:
    """Every provisioned or issued pendant (not revoked) that lacks something: device id -> codes."""
    with Session(engine) as session:
        devices = list(
            session.exec(
                select(Device)
                .where(col(Device.loan_state).in_(ISSUABLE_STATES), col(Device.revoked_at).is_(None))
                .order_by(col(Device.device_id))
            )
        )
        found = missing_of(session, devices)
    return {device_id: codes for device_id, codes in found.items() if codes}


def check_reason(reason: str) -> str:
    """An override reason as kept in the audit log: 1 to 200 printable characters."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise BackendError(f"the override reason must be 1 to {MAX_REASON} printable characters")
    return reason


def issue(
    engine: Engine,
    *,
    device_id: str,
    case_ref: str,
    renewal_due: datetime | None = None,
    actor: str = audit.SYSTEM,
    override: str | None = None,
    now: datetime | None = None,
) -> tuple[Device, list[str]]:
    """Lend the pendant for a case if it is ready; with an `override` reason also when it is not (the
    override is an audit event and the device keeps what it was issued without). Returns the device and
    the codes it was issued without ([] when it was ready). Raises NotReady without an override."""
    reason = check_reason(override) if override is not None else None
    # A pendant that cannot be issued at all (in stock, already issued) is told so first.
    current = registry.get_device(engine, device_id=device_id).loan_state
    lifecycle.check_loan_transition(device_id, current, "issued")
    lacking = missing(engine, device_id=device_id)
    if lacking and reason is None:
        raise NotReady(device_id, lacking)
    device = registry.set_loan_state(
        engine,
        device_id=device_id,
        state="issued",
        case_ref=case_ref,
        renewal_due=renewal_due,
        actor=actor,
        issued_without=lacking,
        override_reason=reason if lacking else None,
        now=now,
    )
    return device, lacking
