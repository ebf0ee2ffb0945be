"""Ready to issue, on both databases: an SMS number and a number to call in the pendant's config, and a
passing bench report since it was last provisioned; refused without them unless overridden, and the
override is audited and kept on the device until it comes back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backend_samples import T0
from sqlmodel import Session, col, select

from pendant_backend import BackendError, configs, readiness, registry
from pendant_backend.db import session_scope
from pendant_backend.lifecycle import TransitionError
from pendant_backend.models import AuditEvent, Device
from pendant_backend.readiness import NotReady

NUMBERS = {"sms": ["+31612345678"], "call": ["112"]}


def add_device(engine, device_id: str, loan_state: str = "provisioned", **fields) -> None:
    with session_scope(engine) as session:
        session.add(Device(device_id=device_id, loan_state=loan_state, provisioned_at=T0, **fields))


def bench(settings, engine, device_id: str, *, passed: bool = True, at=T0 + timedelta(hours=1)) -> None:
    registry.store_bench_report(
        settings, engine, device_id=device_id, report={"passed": passed}, passed=passed, actor="tech", now=at
    )


def events(engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.seq)))
        )


# -- the rule --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "since", "passed_at", "expected"),
    [
        ({"sms": ["+31612345678"], "call": ["112"]}, T0, T0 + timedelta(seconds=1), []),
        ({"sms": [], "call": ["112"]}, T0, T0 + timedelta(seconds=1), ["sms"]),
        ({"sms": ["+31612345678"], "call": []}, T0, T0 + timedelta(seconds=1), ["call"]),
        ({}, T0, None, ["sms", "call", "bench"]),
        (NUMBERS, T0, T0 - timedelta(seconds=1), ["bench"]),  # tested before it was provisioned
        (NUMBERS, T0, T0, []),
        (NUMBERS, None, T0, []),
        (NUMBERS, None, None, ["bench"]),
    ],
)
def test_what_is_missing(config, since, passed_at, expected) -> None:
    assert readiness.check(config=config, since=since, passed_bench_at=passed_at) == expected


def test_every_code_has_words_and_a_fix() -> None:
    assert set(readiness.DESCRIPTIONS) == set(readiness.FIXES) == set(readiness.CODES)
    assert readiness.describe(["sms", "bench"]) == (
        "no SMS number in its config, no passing bench test since it was last provisioned"
    )


# -- a device's readiness --------------------------------------------------------------------------


def test_a_fresh_pendant_lacks_everything_and_each_fix_removes_one(pendant_settings, engine) -> None:
    add_device(engine, "pd-0001")
    assert readiness.missing(engine, device_id="pd-0001") == ["sms", "call", "bench"]
    configs.set_config(engine, scope=configs.FLEET, changes={"sms": ["+31612345678"]})
    assert readiness.missing(engine, device_id="pd-0001") == ["call", "bench"]
    configs.set_config(engine, scope="pd-0001", changes={"call": ["112"]})
    assert readiness.missing(engine, device_id="pd-0001") == ["bench"]
    bench(pendant_settings, engine, "pd-0001", passed=False)
    assert readiness.missing(engine, device_id="pd-0001") == ["bench"]
    bench(pendant_settings, engine, "pd-0001", passed=True)
    assert readiness.missing(engine, device_id="pd-0001") == []


def test_the_newest_config_counts_and_a_device_can_unset_the_fleet_numbers(engine) -> None:
    add_device(engine, "pd-0001")
    configs.set_config(engine, scope=configs.FLEET, changes=NUMBERS)
    configs.set_config(engine, scope="pd-0001", changes={"sms": []})
    assert readiness.missing(engine, device_id="pd-0001") == ["sms", "bench"]
    configs.set_config(engine, scope="pd-0001", changes={}, unset=("sms",))
    assert readiness.missing(engine, device_id="pd-0001") == ["bench"]


def test_a_bench_test_before_the_last_provisioning_or_return_does_not_count(pendant_settings, engine) -> None:
    add_device(engine, "pd-0001")
    configs.set_config(engine, scope=configs.FLEET, changes=NUMBERS)
    bench(pendant_settings, engine, "pd-0001", at=T0 - timedelta(minutes=1))
    assert readiness.missing(engine, device_id="pd-0001") == ["bench"]
    bench(pendant_settings, engine, "pd-0001", at=T0 + timedelta(minutes=1))
    assert readiness.missing(engine, device_id="pd-0001") == []
    # Back from a loan: bench-tested again before it goes out again.
    with session_scope(engine) as session:
        device = session.get(Device, "pd-0001")
        device.returned_at = T0 + timedelta(days=30)
        session.add(device)
    assert readiness.missing(engine, device_id="pd-0001") == ["bench"]


def test_missing_names_an_unknown_device(engine) -> None:
    with pytest.raises(registry.RegistryError, match="there is no device pd-0404"):
        readiness.missing(engine, device_id="pd-0404")


def test_not_ready_lists_provisioned_and_issued_pendants_that_lack_something(
    pendant_settings, engine
) -> None:
    configs.set_config(engine, scope=configs.FLEET, changes=NUMBERS)
    add_device(engine, "pd-0001")  # no bench test
    add_device(engine, "pd-0002", loan_state="issued", case_ref="c-2")  # no bench test
    add_device(engine, "pd-0003")  # ready
    add_device(engine, "pd-0004", loan_state="in_stock")  # not yet issuable
    add_device(engine, "pd-0005", revoked_at=T0)  # revoked: cannot connect at all
    add_device(engine, "pd-0006", loan_state="decommissioned")
    bench(pendant_settings, engine, "pd-0003")
    configs.set_config(engine, scope="pd-0003", changes={})  # (a document of its own changes nothing)
    assert readiness.not_ready(engine) == {"pd-0001": ["bench"], "pd-0002": ["bench"]}
    configs.set_config(engine, scope="pd-0003", changes={"call": []})
    assert readiness.not_ready(engine) == {"pd-0001": ["bench"], "pd-0002": ["bench"], "pd-0003": ["call"]}


def test_not_ready_of_an_empty_fleet_is_empty(engine) -> None:
    assert readiness.not_ready(engine) == {}


# -- issuing ----------------------------------------------------------------------------------------


def test_a_pendant_that_is_not_ready_is_refused_with_what_to_do(engine) -> None:
    add_device(engine, "pd-0001")
    with pytest.raises(NotReady) as refused:
        readiness.issue(engine, device_id="pd-0001", case_ref="2026-000123", actor="it")
    message = str(refused.value)
    assert message.startswith("pd-0001 is not ready to issue: no SMS number in its config (set one: ")
    assert "pendant device config pd-0001 --set sms=" in message and "pendant bench" in message
    assert message.endswith("or issue it anyway with --override REASON")
    assert refused.value.missing == ["sms", "call", "bench"]
    with Session(engine) as session:
        device = session.get(Device, "pd-0001")
    assert (device.loan_state, device.case_ref, device.issued_without) == ("provisioned", None, None)
    assert events(engine, "loan_changed") == []


def test_an_override_issues_it_audited_and_marked_until_it_returns(engine) -> None:
    add_device(engine, "pd-0001")
    configs.set_config(engine, scope=configs.FLEET, changes={"call": ["112"]})
    device, lacking = readiness.issue(
        engine, device_id="pd-0001", case_ref="2026-000123", actor="it", override="  bench broken today  "
    )
    assert lacking == ["sms", "bench"] and device.issued_without == ["sms", "bench"]
    with Session(engine) as session:
        stored = session.get(Device, "pd-0001")
    assert (stored.loan_state, stored.case_ref, stored.issued_without) == (
        "issued",
        "2026-000123",
        ["sms", "bench"],
    )
    [override] = events(engine, "issue_override")
    assert (override.actor, override.device_id) == ("it", "pd-0001")
    assert '"reason":"bench broken today"' in override.body and '"missing":["sms","bench"]' in override.body
    assert readiness.not_ready(engine) == {"pd-0001": ["sms", "bench"]}

    registry.set_loan_state(engine, device_id="pd-0001", state="returned", actor="it")
    with Session(engine) as session:
        assert session.get(Device, "pd-0001").issued_without is None


def test_a_ready_pendant_is_issued_without_an_override_event(pendant_settings, engine) -> None:
    add_device(engine, "pd-0001")
    configs.set_config(engine, scope=configs.FLEET, changes=NUMBERS)
    bench(pendant_settings, engine, "pd-0001")
    device, lacking = readiness.issue(
        engine, device_id="pd-0001", case_ref="2026-000123", actor="it", override="not needed"
    )
    assert lacking == [] and device.loan_state == "issued" and device.issued_without is None
    assert events(engine, "issue_override") == [] and len(events(engine, "loan_changed")) == 1


def test_a_pendant_that_cannot_be_issued_at_all_says_so_first(engine) -> None:
    add_device(engine, "pd-0001", loan_state="in_stock")
    with pytest.raises(TransitionError, match="pd-0001 is in_stock: it can become"):
        readiness.issue(engine, device_id="pd-0001", case_ref="c-1", override="anyway")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "line\nbreak"])
def test_an_override_needs_a_reason(engine, reason: str) -> None:
    add_device(engine, "pd-0001")
    with pytest.raises(BackendError, match="override reason must be 1 to 200 printable"):
        readiness.issue(engine, device_id="pd-0001", case_ref="c-1", override=reason)
    assert events(engine, "loan_changed") == []
