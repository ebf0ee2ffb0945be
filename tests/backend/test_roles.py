"""Who may do what: the roles' permissions, and the rule that matters most: only a dispatcher or a
supervisor sees where anyone is."""

from __future__ import annotations

import pytest

from pendant_backend import roles
from pendant_backend.roles import PERMISSIONS, ROLES, UnknownRole


def test_only_a_dispatcher_or_a_supervisor_sees_locations() -> None:
    assert {role for role in ROLES if roles.can([role], "alarms.location")} == {"dispatcher", "supervisor"}
    for role in ("technician", "police_it", "admin"):
        assert not roles.can([role], "alarms.location")
    # Police IT sees the fleet's health and gets locations only with a dispatcher's or supervisor's role.
    assert roles.can(["police_it"], "fleet.read")
    assert roles.can(["police_it", "dispatcher"], "alarms.location")


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        ("dispatcher", {"alarms.read", "alarms.handle", "devices.case"}, {"alarms.export", "users.manage"}),
        ("supervisor", {"alarms.escalations", "alarms.export", "audit.read"}, {"devices.manage"}),
        ("police_it", {"fleet.read", "devices.manage", "devices.erase"}, {"alarms.handle"}),
        ("technician", {"devices.manage", "alarms.handle_test"}, {"alarms.read", "devices.case"}),
        ("admin", {"users.manage", "audit.read"}, {"alarms.read", "alarms.handle", "devices.manage"}),
    ],
)
def test_each_role_grants_its_permissions_and_no_others(role: str, allowed: set, refused: set) -> None:
    held = roles.permissions_of([role])
    assert allowed <= held and not refused & held
    assert all(roles.can([role], p) for p in allowed)


def test_every_permission_is_granted_by_known_roles_only() -> None:
    for permission, granted in PERMISSIONS.items():
        assert granted and granted <= set(ROLES), permission
    assert roles.permissions_of(ROLES) == frozenset(PERMISSIONS)
    assert roles.permissions_of([]) == frozenset()


def test_several_roles_grant_what_each_grants() -> None:
    assert roles.permissions_of(["technician", "dispatcher"]) == roles.permissions_of(
        ["technician"]
    ) | roles.permissions_of(["dispatcher"])
    assert not roles.can([], "fleet.read")


def test_an_unknown_permission_is_a_key_error_not_a_silent_no() -> None:
    with pytest.raises(KeyError):
        roles.can(["admin"], "alarms.delete")


def test_check_roles_orders_removes_duplicates_and_names_an_unknown_role() -> None:
    assert roles.check_roles(["admin", "dispatcher", "admin"]) == ["dispatcher", "admin"]
    assert roles.check_roles([]) == []
    with pytest.raises(UnknownRole, match="'boss' is not a role: the roles are dispatcher, supervisor"):
        roles.check_roles(["dispatcher", "boss"])


def test_who_can_names_the_roles_for_an_error_message() -> None:
    assert roles.who_can("alarms.location") == "dispatcher or supervisor"
    assert roles.who_can("users.manage") == "administrator"
    assert roles.who_can("alarms.handle_test") == "dispatcher, supervisor or technician"


def test_a_test_alarm_needs_less_than_a_real_one_and_every_handler_may_handle_both() -> None:
    assert roles.handling_permission(False) == "alarms.handle"
    assert roles.handling_permission(True) == "alarms.handle_test"
    # The API first refuses whoever may handle not even a test alarm: that only holds if every role
    # that handles real alarms also handles test alarms.
    assert roles.PERMISSIONS["alarms.handle"] <= roles.PERMISSIONS["alarms.handle_test"]
    assert roles.can(["technician"], roles.handling_permission(True))
    assert not roles.can(["technician"], roles.handling_permission(False))
