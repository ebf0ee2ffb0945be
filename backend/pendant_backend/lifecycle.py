"""Pure: the alarm state machine and the loan lifecycle of a pendant. No I/O.

Alarm: raised (on the pendant) -> received (stored by the backend) -> acknowledged (an operator took it)
-> resolved (with a class and a note). Loan: in_stock -> provisioned -> issued -> returned ->
provisioned again or decommissioned; in stock or provisioned pendants may also be decommissioned.
"""

from __future__ import annotations

from pendant_backend import BackendError

ALARM_STATES = ("raised", "received", "acknowledged", "resolved")
RESOLUTIONS = ("incident", "precautionary", "false", "test")
MAX_NOTE = 2000
MAX_OPERATOR = 64

LOAN_TRANSITIONS: dict[str, frozenset[str]] = {
    "in_stock": frozenset({"provisioned", "decommissioned"}),
    "provisioned": frozenset({"issued", "decommissioned"}),
    "issued": frozenset({"returned"}),
    "returned": frozenset({"provisioned", "in_stock", "decommissioned"}),
    "decommissioned": frozenset(),
}


class TransitionError(BackendError):
    """A change of state that the lifecycle does not allow; the message says why."""


def check_operator(name: str) -> str:
    """An operator's name as recorded with an ack or a resolution: 1..64 printable characters."""
    name = (name or "").strip()
    if not name or len(name) > MAX_OPERATOR or not name.isprintable():
        raise TransitionError("the operator's name must be 1 to 64 printable characters")
    return name


def check_acknowledge(state: str, ref: str, acknowledged_by: str | None) -> None:
    """Raise TransitionError unless an alarm in `state` may be acknowledged."""
    if state == "received":
        return
    if state == "acknowledged":
        raise TransitionError(f"alarm {ref} is already acknowledged by {acknowledged_by}")
    if state == "resolved":
        raise TransitionError(f"alarm {ref} is already resolved")
    raise TransitionError(f"alarm {ref} is {state}, not received: it cannot be acknowledged")


def check_resolve(state: str, ref: str, resolution: str, note: str) -> None:
    """Raise TransitionError unless an alarm in `state` may be resolved with `resolution` and `note`."""
    if resolution not in RESOLUTIONS:
        raise TransitionError(f"the resolution must be one of {', '.join(RESOLUTIONS)}, not {resolution!r}")
    if len(note) > MAX_NOTE:
        raise TransitionError(f"the note has {len(note)} characters, more than {MAX_NOTE}")
    if state == "received":
        raise TransitionError(f"alarm {ref} is not acknowledged yet: acknowledge it first")
    if state == "resolved":
        raise TransitionError(f"alarm {ref} is already resolved")
    if state != "acknowledged":
        raise TransitionError(f"alarm {ref} is {state}: it cannot be resolved")


def escalation_due(
    *, state: str, test: bool, received_s: float, now_s: float, escalations: int, after_s: int, max_count: int
) -> bool:
    """True when an unacknowledged alarm has waited another `after_s` seconds: the first escalation
    `after_s` after it was received, the next `after_s` later, and so on until someone acknowledges it
    (or up to `max_count`, when that is not 0). Test alarms are never dispatched, so they never escalate."""
    if test or state != "received" or (max_count and escalations >= max_count):
        return False
    return now_s - received_s >= after_s * (escalations + 1)


def check_loan_transition(device_id: str, current: str, target: str) -> None:
    """Raise TransitionError unless a pendant may go from loan state `current` to `target`."""
    if target not in LOAN_TRANSITIONS:
        raise TransitionError(f"{target!r} is not a loan state ({', '.join(LOAN_TRANSITIONS)})")
    if target not in LOAN_TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(LOAN_TRANSITIONS.get(current, ()))) or "nothing"
        raise TransitionError(f"{device_id} is {current}: it can become {allowed}, not {target}")
