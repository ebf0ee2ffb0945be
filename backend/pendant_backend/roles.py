"""Pure: who may do what. Roles are given to accounts (an account may hold several); permissions are
asked for by the console, the API and the CLI. No I/O.

The rule that matters most: a victim's location (an alarm's position, its trail, a `locate` answer) is
seen only by a dispatcher or a supervisor. Police IT see the fleet's health, technicians the pendants
they prepare; neither sees where anyone is unless the account also holds one of those two roles.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("dispatcher", "supervisor", "police_it", "technician", "admin")

ROLE_TITLES = {
    "dispatcher": "Dispatcher",
    "supervisor": "Supervisor",
    "police_it": "Police IT",
    "technician": "Technician",
    "admin": "Administrator",
}

# permission -> the roles that grant it
PERMISSIONS: dict[str, frozenset[str]] = {
    # The alarm queue and an alarm's details, without its position.
    "alarms.read": frozenset({"dispatcher", "supervisor", "police_it"}),
    # An alarm's position, trail and `locate` answers: every use is an audit event.
    "alarms.location": frozenset({"dispatcher", "supervisor"}),
    # Acknowledge and resolve an alarm, send `locate` to its pendant.
    "alarms.handle": frozenset({"dispatcher", "supervisor"}),
    # Acknowledge and resolve test alarms only (the bench test does).
    "alarms.handle_test": frozenset({"dispatcher", "supervisor", "technician"}),
    # Escalations of unacknowledged alarms alert this console.
    "alarms.escalations": frozenset({"supervisor"}),
    # Signed case exports (they hold the trail).
    "alarms.export": frozenset({"supervisor"}),
    # The fleet view and device details (no positions).
    "fleet.read": frozenset(ROLES),
    # Police case references of issued pendants.
    "devices.case": frozenset({"dispatcher", "supervisor", "police_it"}),
    # Register, provision, bench-test, configure, issue, return and revoke pendants.
    "devices.manage": frozenset({"technician", "police_it"}),
    # Erase a device's data on request.
    "devices.erase": frozenset({"police_it", "admin"}),
    # Accounts and API tokens.
    "users.manage": frozenset({"admin"}),
    # The audit log beyond one alarm's timeline.
    "audit.read": frozenset({"supervisor", "admin"}),
}


class UnknownRole(ValueError):
    """A role name that is not one of ROLES."""


def check_roles(roles: Iterable[str]) -> list[str]:
    """The roles in ROLES order, without duplicates; UnknownRole names the first unknown one."""
    wanted = set()
    for role in roles:
        if role not in ROLES:
            raise UnknownRole(f"{role!r} is not a role: the roles are {', '.join(ROLES)}")
        wanted.add(role)
    return [role for role in ROLES if role in wanted]


def can(roles: Iterable[str], permission: str) -> bool:
    """True if any of `roles` grants `permission` (a KeyError for a permission that does not exist)."""
    granted = PERMISSIONS[permission]
    return any(role in granted for role in roles)


def handling_permission(test: bool) -> str:
    """The permission that acknowledging and resolving an alarm needs: `alarms.handle`, or for a test
    alarm `alarms.handle_test` (which every role with `alarms.handle` also holds). The console, the API
    and the CLI all ask this one question."""
    return "alarms.handle_test" if test else "alarms.handle"


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    """Every permission the roles grant together."""
    held = set(roles)
    return frozenset(name for name, granted in PERMISSIONS.items() if held & granted)


def who_can(permission: str) -> str:
    """The roles that grant `permission`, for an error message: 'dispatcher or supervisor'."""
    names = [ROLE_TITLES[role].lower() for role in ROLES if role in PERMISSIONS[permission]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
