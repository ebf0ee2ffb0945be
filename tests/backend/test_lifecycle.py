"""The alarm state machine, escalation timing and the loan lifecycle, as pure functions."""

from __future__ import annotations

import pytest

from pendant_backend import lifecycle
from pendant_backend.lifecycle import TransitionError


def test_only_a_received_alarm_can_be_acknowledged() -> None:
    lifecycle.check_acknowledge("received", "pd-0001/1-1", None)
    with pytest.raises(TransitionError, match="already acknowledged by Ann"):
        lifecycle.check_acknowledge("acknowledged", "pd-0001/1-1", "Ann")
    with pytest.raises(TransitionError, match="already resolved"):
        lifecycle.check_acknowledge("resolved", "pd-0001/1-1", "Ann")


def test_only_an_acknowledged_alarm_can_be_resolved() -> None:
    lifecycle.check_resolve("acknowledged", "r", "incident", "note")
    with pytest.raises(TransitionError, match="acknowledge it first"):
        lifecycle.check_resolve("received", "r", "incident", "")
    with pytest.raises(TransitionError, match="already resolved"):
        lifecycle.check_resolve("resolved", "r", "false", "")


@pytest.mark.parametrize("resolution", ["incident", "precautionary", "false", "test"])
def test_every_class_resolves(resolution: str) -> None:
    lifecycle.check_resolve("acknowledged", "r", resolution, "")


def test_an_unknown_class_or_a_long_note_is_refused() -> None:
    with pytest.raises(TransitionError, match="one of incident"):
        lifecycle.check_resolve("acknowledged", "r", "maybe", "")
    with pytest.raises(TransitionError, match="more than 2000"):
        lifecycle.check_resolve("acknowledged", "r", "false", "x" * 2001)


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\nb"])
def test_an_operator_needs_a_printable_name(name: str) -> None:
    with pytest.raises(TransitionError):
        lifecycle.check_operator(name)


def due(**kw: object) -> bool:
    args = {
        "state": "received",
        "test": False,
        "received_s": 1000.0,
        "now_s": 1000.0,
        "escalations": 0,
        "after_s": 60,
        "max_count": 3,
    }
    args.update(kw)
    return lifecycle.escalation_due(**args)


def test_escalation_comes_every_after_s_until_the_maximum() -> None:
    assert not due(now_s=1059.9)
    assert due(now_s=1060.0)
    assert not due(now_s=1100.0, escalations=1)
    assert due(now_s=1120.0, escalations=1)
    assert not due(now_s=9999.0, escalations=3)


def test_with_no_maximum_escalation_repeats_until_acknowledged() -> None:
    # max_count 0, the default of PENDANT_ESCALATE_MAX: every after_s, however long it takes.
    for level in range(1000):
        assert not due(now_s=1000.0 + 60 * (level + 1) - 0.1, escalations=level, max_count=0)
        assert due(now_s=1000.0 + 60 * (level + 1), escalations=level, max_count=0)
    assert not due(now_s=10**9, escalations=10**6, max_count=0, state="acknowledged")


def test_acknowledged_and_test_alarms_never_escalate() -> None:
    assert not due(now_s=5000.0, state="acknowledged")
    assert not due(now_s=5000.0, state="resolved")
    assert not due(now_s=5000.0, test=True)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("in_stock", "provisioned"),
        ("provisioned", "issued"),
        ("issued", "returned"),
        ("returned", "provisioned"),
        ("returned", "decommissioned"),
        ("in_stock", "decommissioned"),
    ],
)
def test_allowed_loan_moves(current: str, target: str) -> None:
    lifecycle.check_loan_transition("pd-0001", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("in_stock", "issued"),
        ("issued", "decommissioned"),
        ("issued", "in_stock"),
        ("decommissioned", "provisioned"),
        ("provisioned", "lost"),
    ],
)
def test_refused_loan_moves(current: str, target: str) -> None:
    with pytest.raises(TransitionError):
        lifecycle.check_loan_transition("pd-0001", current, target)
