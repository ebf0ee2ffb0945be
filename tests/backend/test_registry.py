"""The registry: register and find by IMEI or ICCID, set fields, the loan lifecycle with dates, and
bench-test reports signed with the backend's key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from pendant_backend import registry
from pendant_backend.lifecycle import TransitionError
from pendant_backend.models import DeviceCreate, DeviceUpdate
from pendant_backend.settings import Settings

IMEI, ICCID = "861234567890123", "8931081234567890123"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, db_url="")


def register(engine, device_id: str = "pd-0001", **fields) -> None:
    registry.register_device(engine, device=DeviceCreate(device_id=device_id, **fields), actor="tech")


def test_register_and_find_by_imei_or_iccid(engine) -> None:
    register(engine, imei=IMEI, iccid=ICCID, hardware_rev="B", firmware_version="0.1.0")
    by_imei = registry.find_device(engine, imei=IMEI)
    assert by_imei.device_id == "pd-0001" and by_imei.loan_state == "in_stock"
    assert registry.find_device(engine, iccid=ICCID).device_id == "pd-0001"
    assert registry.find_device(engine, imei="861234567890999") is None
    registry.update_device(
        engine, device_id="pd-0001", changes=DeviceUpdate(phone="+31612345678", firmware_version="0.2.0")
    )
    device = registry.get_device(engine, device_id="pd-0001")
    assert (device.phone, device.firmware_version, device.hardware_rev) == ("+31612345678", "0.2.0", "B")


def test_identifiers_are_unique_and_checked(engine) -> None:
    register(engine, imei=IMEI)
    with pytest.raises(registry.RegistryError, match="already registered"):
        register(engine)
    with pytest.raises(registry.RegistryError, match="another registered pendant"):
        register(engine, "pd-0002", imei=IMEI)
    with pytest.raises(registry.RegistryError, match="15 digits"):
        register(engine, "pd-0003", imei="12345")
    with pytest.raises(registry.RegistryError, match="not a device id"):
        register(engine, "PD 4")


def test_loan_lifecycle_with_dates(engine) -> None:
    register(engine)
    moment = datetime(2026, 5, 1, tzinfo=UTC)
    registry.set_loan_state(engine, device_id="pd-0001", state="provisioned", now=moment)
    with pytest.raises(registry.RegistryError, match="case reference"):
        registry.set_loan_state(engine, device_id="pd-0001", state="issued")
    renewal = datetime(2026, 11, 1, tzinfo=UTC)
    issued = registry.set_loan_state(
        engine, device_id="pd-0001", state="issued", case_ref="2026-000123", renewal_due=renewal, now=moment
    )
    assert (issued.loan_state, issued.case_ref, issued.issued_at, issued.renewal_due) == (
        "issued",
        "2026-000123",
        moment,
        renewal,
    )
    registry.set_recall(engine, device_id="pd-0001", recall=True)
    with pytest.raises(TransitionError, match="issued: it can become returned"):
        registry.set_loan_state(engine, device_id="pd-0001", state="decommissioned")
    back = registry.set_loan_state(engine, device_id="pd-0001", state="returned", now=moment)
    # The case reference and the recall go with the loan.
    assert (back.case_ref, back.recall, back.returned_at) == (None, False, moment)
    registry.set_loan_state(engine, device_id="pd-0001", state="decommissioned")
    with pytest.raises(TransitionError):
        registry.set_loan_state(engine, device_id="pd-0001", state="provisioned")


def test_bench_report_is_signed_and_a_changed_report_is_found(engine, settings) -> None:
    register(engine)
    report = registry.store_bench_report(
        settings,
        engine,
        device_id="pd-0001",
        report={"steps": [{"name": "alarm", "ok": True}]},
        passed=True,
        actor="tech",
    )
    assert settings.signing_key_path.exists()
    [stored] = registry.bench_reports(engine, device_id="pd-0001")
    assert registry.verify_report(settings, stored)
    assert registry.report_data(stored) == {"steps": [{"name": "alarm", "ok": True}]}
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE bench_reports SET body = :body WHERE id = :id"),
            {"body": '{"steps":[{"name":"alarm","ok":false}]}', "id": report.id},
        )
    [changed] = registry.bench_reports(engine, device_id="pd-0001")
    assert not registry.verify_report(settings, changed)


def test_the_signing_key_is_created_once_and_private(settings) -> None:
    first = registry.sign_report(settings, "x")
    assert registry.sign_report(settings, "x") == first
    assert oct(settings.signing_key_path.stat().st_mode & 0o777) == "0o600"
