"""Accounts on both databases: add with a one-time password that must be replaced, list, disable and
enable, change roles, reset; logins locked out after five failures; the CLI's `--operator` check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backend_samples import T0
from sqlmodel import Session, col, select

from pendant_backend import passwords, users, web_sessions
from pendant_backend.models import Account, AuditEvent
from pendant_backend.users import LoginRefused, UserError

from support import PASSWORD


def kinds(engine) -> list[str]:
    with Session(engine) as session:
        return [e.kind for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)))]


def test_a_new_account_gets_a_one_time_password_that_must_be_replaced(engine) -> None:
    account, one_time = users.add_user(
        engine, username="jjansen", role_names=["dispatcher"], display_name=" J. Jansen ", actor="cli:root"
    )
    assert (account.username, account.roles, account.display_name) == ("jjansen", ["dispatcher"], "J. Jansen")
    stored = users.get_user(engine, "jjansen")
    assert stored.password_hash.startswith("$argon2id$") and one_time not in stored.password_hash
    logged_in = users.login(engine, username="jjansen", password=one_time, now=T0)
    assert logged_in.must_change_password is True and users.person_of(logged_in).must_change_password

    users.change_password(engine, username="jjansen", old=one_time, new=PASSWORD, now=T0)
    changed = users.login(engine, username="jjansen", password=PASSWORD, now=T0)
    assert changed.must_change_password is False and changed.last_login_at == T0
    with pytest.raises(LoginRefused):
        users.login(engine, username="jjansen", password=one_time, now=T0)
    assert kinds(engine) == ["account_created", "login", "password_changed", "login"]


def test_the_one_time_password_cannot_be_kept_and_a_weak_one_is_refused(engine) -> None:
    _, one_time = users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    with pytest.raises(UserError, match="other than the one-time password"):
        users.change_password(engine, username="jjansen", old=one_time, new=one_time)
    with pytest.raises(UserError, match="at least 12 characters"):
        users.change_password(engine, username="jjansen", old=one_time, new="short")
    with pytest.raises(UserError, match="current password is wrong"):
        users.change_password(engine, username="jjansen", old="not it at all", new=PASSWORD)
    assert users.get_user(engine, "jjansen").must_change_password is True


@pytest.mark.parametrize(
    ("username", "roles", "message"),
    [
        ("J Jansen", ["dispatcher"], "is not a username"),
        ("j", ["dispatcher"], "is not a username"),
        ("jjansen", [], "at least one role"),
        ("jjansen", ["dispatcher", "boss"], "'boss' is not a role"),
    ],
)
def test_a_bad_username_or_role_adds_nothing(engine, username: str, roles: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        users.add_user(engine, username=username, role_names=roles)
    assert users.list_users(engine) == [] and kinds(engine) == []


def test_a_username_is_taken_once(engine) -> None:
    users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    with pytest.raises(UserError, match="already an account 'jjansen'"):
        users.add_user(engine, username="jjansen", role_names=["admin"])
    assert [a.roles for a in users.list_users(engine)] == [["dispatcher"]]


def test_list_is_by_username_and_includes_disabled_accounts(engine) -> None:
    for name in ("zoe", "ann", "bob"):
        users.add_user(engine, username=name, role_names=["dispatcher"])
    users.set_disabled(engine, username="bob", disabled=True)
    assert [(a.username, a.disabled_at is not None) for a in users.list_users(engine)] == [
        ("ann", False),
        ("bob", True),
        ("zoe", False),
    ]


def test_a_disabled_account_cannot_log_in_and_its_sessions_end(engine) -> None:
    _, kept_password = users.add_user(engine, username="kept", role_names=["dispatcher"])
    _, password = users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    account = users.login(engine, username="jjansen", password=password, now=T0)
    token = web_sessions.start(engine, account=account, lifetime=timedelta(hours=12), now=T0)
    idle = timedelta(minutes=30)
    assert web_sessions.lookup(engine, token, idle=idle, now=T0) is not None

    users.set_disabled(engine, username="jjansen", disabled=True, actor="cli:root", now=T0)
    with pytest.raises(LoginRefused, match="disabled"):
        users.login(engine, username="jjansen", password=password, now=T0)
    assert web_sessions.lookup(engine, token, idle=idle, now=T0) is None
    assert users.login(engine, username="kept", password=kept_password, now=T0).disabled_at is None

    users.set_disabled(engine, username="jjansen", disabled=False, now=T0)
    assert users.login(engine, username="jjansen", password=password, now=T0).username == "jjansen"
    # Enabling does not bring an ended session back: the person logs in again.
    assert web_sessions.lookup(engine, token, idle=idle, now=T0) is None
    assert "account_disabled" in kinds(engine) and "account_enabled" in kinds(engine)


def test_roles_are_replaced_and_the_change_is_audited(engine) -> None:
    users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    changed = users.set_roles(engine, username="jjansen", role_names=["technician", "supervisor"], actor="a")
    assert changed.roles == ["supervisor", "technician"]
    assert users.get_user(engine, "jjansen").roles == ["supervisor", "technician"]
    with pytest.raises(UserError, match="at least one role"):
        users.set_roles(engine, username="jjansen", role_names=[])
    with pytest.raises(UserError, match="there is no account 'nobody'"):
        users.set_roles(engine, username="nobody", role_names=["admin"])
    assert kinds(engine).count("account_roles") == 1


def test_reset_gives_a_new_one_time_password_and_the_old_one_stops_working(engine) -> None:
    _, first = users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    users.change_password(engine, username="jjansen", old=first, new=PASSWORD)
    second = users.reset_password(engine, username="jjansen", actor="cli:root")
    assert second != first and len(second) == 16
    with pytest.raises(LoginRefused):
        users.login(engine, username="jjansen", password=PASSWORD)
    assert users.login(engine, username="jjansen", password=second).must_change_password is True
    with pytest.raises(UserError, match="there is no account"):
        users.reset_password(engine, username="nobody")


def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(engine) -> None:
    _, password = users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    for attempt in range(users.MAX_FAILED_LOGINS - 1):
        with pytest.raises(LoginRefused, match="wrong username or password"):
            users.login(engine, username="jjansen", password=f"guess {attempt}", now=T0)
    with pytest.raises(LoginRefused, match="locked for 15 minutes"):
        users.login(engine, username="jjansen", password="guess 5", now=T0)
    # While locked, even the right password is refused.
    just_before = T0 + timedelta(minutes=users.LOCK_MINUTES) - timedelta(seconds=1)
    with pytest.raises(LoginRefused, match="locked until"):
        users.login(engine, username="jjansen", password=password, now=just_before)
    assert kinds(engine).count("account_locked") == 1

    after = T0 + timedelta(minutes=users.LOCK_MINUTES)
    assert users.login(engine, username="jjansen", password=password, now=after).username == "jjansen"
    stored = users.get_user(engine, "jjansen")
    assert stored.failed_logins == 0 and stored.locked_until is None


def test_a_right_password_before_the_limit_starts_the_count_again(engine) -> None:
    _, password = users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    for attempt in range(users.MAX_FAILED_LOGINS - 1):
        with pytest.raises(LoginRefused):
            users.login(engine, username="jjansen", password=f"guess {attempt}", now=T0)
    users.login(engine, username="jjansen", password=password, now=T0)
    with pytest.raises(LoginRefused, match="wrong username or password"):
        users.login(engine, username="jjansen", password="one more guess", now=T0)
    assert users.get_user(engine, "jjansen").locked_until is None


def test_a_reset_unlocks_a_locked_account(engine) -> None:
    users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    for attempt in range(users.MAX_FAILED_LOGINS):
        with pytest.raises(LoginRefused):
            users.login(engine, username="jjansen", password=f"guess {attempt}", now=T0)
    fresh = users.reset_password(engine, username="jjansen", now=T0)
    assert users.login(engine, username="jjansen", password=fresh, now=T0).username == "jjansen"


def test_an_unknown_username_gets_the_same_answer_as_a_wrong_password(engine) -> None:
    users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    with pytest.raises(LoginRefused) as unknown:
        users.login(engine, username="nobody", password="anything at all")
    with pytest.raises(LoginRefused) as wrong:
        users.login(engine, username="jjansen", password="anything at all")
    assert str(unknown.value) == str(wrong.value) == "wrong username or password"
    # Failed logins are logged, not chained: guessing cannot fill the audit chain.
    assert kinds(engine) == ["account_created"]


def test_a_login_upgrades_a_hash_made_with_weaker_parameters(engine) -> None:
    from argon2 import PasswordHasher

    users.add_user(engine, username="jjansen", role_names=["dispatcher"])
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with Session(engine) as session:
        row = session.exec(select(Account).where(Account.username == "jjansen")).one()
        row.password_hash = weak
        session.add(row)
        session.commit()
    users.login(engine, username="jjansen", password=PASSWORD)
    upgraded = users.get_user(engine, "jjansen").password_hash
    assert upgraded != weak and not passwords.needs_rehash(upgraded)


def test_operator_is_an_enabled_account_holding_the_permission(engine) -> None:
    users.add_user(engine, username="jjansen", role_names=["dispatcher"], display_name="J. Jansen")
    users.add_user(engine, username="tech", role_names=["technician"])
    person = users.operator(engine, "jjansen", "alarms.location")
    assert (person.username, person.roles, person.label) == (
        "jjansen",
        ("dispatcher",),
        "J. Jansen (jjansen)",
    )
    with pytest.raises(UserError, match=r"'tech' \(technician\) may not do this: .*dispatcher or supervisor"):
        users.operator(engine, "tech", "alarms.location")
    with pytest.raises(UserError, match="there is no account 'Ann'.*pendant user add"):
        users.operator(engine, "Ann", "alarms.handle")
    users.set_disabled(engine, username="jjansen", disabled=True)
    with pytest.raises(UserError, match="'jjansen' is disabled"):
        users.operator(engine, "jjansen", "alarms.location")
