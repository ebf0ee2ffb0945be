"""`pendant user`: an administrator adds, lists, disables, enables and re-roles accounts and resets
passwords; the one-time passwords it prints work at the first login and must be replaced there."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from pendant_backend import users
from pendant_backend.models import AuditEvent
from pendant_tools.cli import main

from support import PASSWORD, cli_env, run_cli


def one_time_password(result) -> str:
    """The password from `user add` or `user reset-password` (its one line on stdout)."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("one-time password for ")]
    assert len(lines) == 1, result.output
    return lines[0].rsplit(": ", 1)[1]


@pytest.fixture
def settings(pendant_settings):
    """Settings on a fresh database (SQLite and PostgreSQL); no broker is needed for accounts."""
    return pendant_settings


def test_group_help_lists_every_role_and_what_it_may_do() -> None:
    result = CliRunner().invoke(main, ["user", "--help"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for role in ("dispatcher", "supervisor", "police_it", "technician", "admin"):
        assert any(line.split()[:1] == [role] for line in lines), f"{role} missing:\n{result.output}"
    # The help is wrapped to the terminal's width: compare with the line breaks taken out.
    words = " ".join(result.output.split())
    assert "admin see the fleet's health" in words and "manage accounts and tokens" in words
    assert "see where an alarm is" in words


def test_add_prints_a_one_time_password_that_must_be_replaced(settings, engine) -> None:
    added = run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher", "--name", "J. Jansen")
    assert added.exit_code == 0, added.output
    password = one_time_password(added)
    assert "first console login" in added.stderr
    account = users.login(engine, username="jjansen", password=password)
    assert account.must_change_password is True
    assert list(account.roles) == ["dispatcher"] and account.display_name == "J. Jansen"
    with Session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.kind == "account_created")).one()
    assert event.actor.startswith("cli:") and password not in event.body


def test_list_json_shows_the_accounts_without_a_hash(settings, engine) -> None:
    run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher", "--role", "supervisor")
    password = one_time_password(run_cli(settings, "user", "add", "pit", "--role", "police_it"))
    users.login(engine, username="pit", password=password)
    output = run_cli(settings, "user", "list", "--json").output
    assert "hash" not in output and "$argon2" not in output and password not in output
    listed = {row["username"]: row for row in json.loads(output)}
    assert set(listed) == {"jjansen", "pit"}
    assert listed["jjansen"]["roles"] == ["dispatcher", "supervisor"]
    assert listed["jjansen"]["disabled"] is False and listed["jjansen"]["locked_until"] is None
    assert listed["jjansen"]["last_login_at"] is None and listed["pit"]["last_login_at"] is not None
    table = run_cli(settings, "user", "list").output
    assert "jjansen" in table and "dispatcher,supervisor" in table and "never" in table


def test_disable_refuses_the_login_and_enable_allows_it_again(settings, engine) -> None:
    password = one_time_password(run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher"))
    disabled = run_cli(settings, "user", "disable", "jjansen")
    assert disabled.exit_code == 0, disabled.output
    with pytest.raises(users.LoginRefused, match="disabled"):
        users.login(engine, username="jjansen", password=password)
    assert json.loads(run_cli(settings, "user", "list", "--json").output)[0]["disabled"] is True
    assert run_cli(settings, "user", "enable", "jjansen").exit_code == 0
    assert users.login(engine, username="jjansen", password=password).username == "jjansen"


def test_roles_replaces_the_roles(settings, engine) -> None:
    run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher")
    changed = run_cli(settings, "user", "roles", "jjansen", "--role", "supervisor", "--role", "technician")
    assert changed.exit_code == 0, changed.output
    assert list(users.get_user(engine, "jjansen").roles) == ["supervisor", "technician"]


def test_reset_password_gives_a_new_working_one_time_password(settings, engine) -> None:
    first = one_time_password(run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher"))
    users.change_password(engine, username="jjansen", old=first, new=PASSWORD)
    reset = run_cli(settings, "user", "reset-password", "jjansen")
    assert reset.exit_code == 0, reset.output
    second = one_time_password(reset)
    assert second not in (first, PASSWORD)
    with pytest.raises(users.LoginRefused):
        users.login(engine, username="jjansen", password=PASSWORD)
    assert users.login(engine, username="jjansen", password=second).must_change_password is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "jjansen", "--role", "boss"], "'boss' is not one of"),
        (["add", "jjansen"], "Missing option '--role'"),
        (["add", "J Jansen", "--role", "admin"], "is not a username"),
        (["disable", "nobody"], "there is no account 'nobody'"),
        (["enable", "nobody"], "there is no account 'nobody'"),
        (["roles", "nobody", "--role", "admin"], "there is no account 'nobody'"),
        (["reset-password", "nobody"], "there is no account 'nobody'"),
    ],
)
def test_unknown_roles_and_users_are_one_clear_error(settings, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["user", *args], env=cli_env(settings))
    # click's own exit (1 for ours, 2 for a usage error), not an exception escaping as a traceback.
    assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit)
    assert message in result.output and "Traceback" not in result.output
    assert json.loads(run_cli(settings, "user", "list", "--json").output) == []


def test_adding_the_same_username_twice_is_one_clear_line(settings) -> None:
    assert run_cli(settings, "user", "add", "jjansen", "--role", "dispatcher").exit_code == 0
    again = run_cli(settings, "user", "add", "jjansen", "--role", "admin")
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        "Error: there is already an account 'jjansen': see `pendant user list`"
    ]
