"""`pendant user`: the accounts of the people who use the console, the API and the CLI: add, list,
disable, enable, change roles, reset a password. Run on the backend's machine by whoever administers it;
the audit log records `cli:<login name>` for every change."""

from __future__ import annotations

from typing import Any

import click

from pendant_backend.roles import PERMISSIONS, ROLE_TITLES, ROLES
from pendant_tools.backend_cli import CONTEXT, cli_actor, open_engine, print_json, table, user_errors, when

# What each permission of pendant_backend.roles lets a person do, in the words of `--help`.
PERMISSION_WORDS = {
    "alarms.read": "see the alarm queue",
    "alarms.location": "see where an alarm is (every view audited)",
    "alarms.handle": "acknowledge and resolve alarms, send `locate`",
    "alarms.handle_test": "acknowledge and resolve test alarms",
    "alarms.escalations": "get escalations",
    "alarms.export": "export cases",
    "fleet.read": "see the fleet's health",
    "devices.case": "see case references",
    "devices.manage": "register, configure and issue pendants",
    "devices.erase": "erase a pendant's data",
    "users.manage": "manage accounts and tokens",
    "audit.read": "read the audit log",
}


def role_lines(width: int = 78) -> list[str]:
    """Each role and what it may do (from pendant_backend.roles), wrapped to `width` columns between
    permissions, never inside one."""
    name_width = max(len(role) for role in ROLES)
    lines = []
    for role in ROLES:
        phrases = [PERMISSION_WORDS[p] for p, granted in PERMISSIONS.items() if role in granted]
        texts = [phrase + ";" for phrase in phrases[:-1]] + phrases[-1:]
        line = f"  {role:<{name_width}} "
        for number, text in enumerate(texts):
            if number and len(line) + 1 + len(text) > width:
                lines.append(line)
                line = " " * (name_width + 3)
            line += " " + text
        lines.append(line)
    return lines


GROUP_HELP = "\n".join(
    [
        "Add, list, disable and enable accounts, change their roles, reset their passwords.",
        "",
        "A new account, and a reset, get a one-time password that is printed once: give it to the "
        "person, who must choose their own at the first console login. An account may hold several "
        "roles; only a dispatcher or a supervisor ever sees where anyone is.",
        "",
        "\b",
        "Roles:",
        *role_lines(),
        "",
        "\b",
        "Examples:",
        '  pendant user add jjansen --role dispatcher --name "J. Jansen"',
        "  pendant user list",
        "  pendant user roles jjansen --role dispatcher --role supervisor",
        "  pendant user reset-password jjansen",
        "  pendant user disable jjansen",
    ]
)

ROLE_OPTION = click.option(
    "--role",
    "role_names",
    multiple=True,
    required=True,
    type=click.Choice(ROLES),
    help="A role (repeat it for several): " + ", ".join(ROLES) + ".",
)


@click.group(context_settings=CONTEXT, help=GROUP_HELP)
def user() -> None:
    """The `pendant user` group (its help is GROUP_HELP)."""


def _titles(role_names: Any) -> str:
    return ", ".join(ROLE_TITLES[role] for role in role_names) or "-"


def _hand_over(username: str, password: str) -> None:
    click.echo(f"one-time password for {username}: {password}")
    click.echo(
        "give it to the person: they choose their own password at the first console login; "
        "it is not shown again",
        err=True,
    )


@user.command("add", context_settings=CONTEXT)
@click.argument("username")
@ROLE_OPTION
@click.option("--name", "display_name", help="The person's name as the console shows it (1 to 64 chars).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the one-time password).")
@user_errors
def user_add(username: str, role_names: tuple[str, ...], display_name: str | None, as_json: bool) -> None:
    """Add an account and print its one-time password, once.

    USERNAME is 2 to 32 lower-case letters, digits, '.', '_' or '-', starting with a letter.

    \b
    Examples:
      pendant user add jjansen --role dispatcher --name "J. Jansen"
      pendant user add pit --role police_it --role technician
      pendant user add admin --role admin --json
    """
    from pendant_backend import users

    account, password = users.add_user(
        open_engine(create=True),
        username=username,
        role_names=list(role_names),
        display_name=display_name,
        actor=cli_actor(),
    )
    if as_json:
        print_json(
            {
                "username": account.username,
                "display_name": account.display_name,
                "roles": list(account.roles),
                "one_time_password": password,
            }
        )
        return
    click.echo(f"added {account.username} ({_titles(account.roles)})")
    _hand_over(account.username, password)


def _locked_until(account: Any, now: Any) -> Any:
    """When the account's lock-out ends, or None when it is not locked now."""
    from pendant_backend.models import as_utc

    until = as_utc(account.locked_until)
    return until if until is not None and until > now else None


@user.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def user_list(as_json: bool) -> None:
    """List the accounts: username, name, roles, disabled, locked, last login (never a password hash).

    PASSWORD is `one-time` until the person has chosen their own at the first login.

    \b
    Examples:
      pendant user list
      pendant user list --json
    """
    from pendant_backend import users
    from pendant_backend.models import iso, utc_now

    now = utc_now()
    accounts = users.list_users(open_engine())
    if as_json:
        print_json(
            [
                {
                    "username": a.username,
                    "display_name": a.display_name,
                    "roles": list(a.roles or []),
                    "disabled": a.disabled_at is not None,
                    "disabled_at": iso(a.disabled_at),
                    "locked_until": iso(_locked_until(a, now)),
                    "must_change_password": a.must_change_password,
                    "last_login_at": iso(a.last_login_at),
                }
                for a in accounts
            ]
        )
        return
    if not accounts:
        click.echo("no accounts yet: add one with `pendant user add USERNAME --role ROLE`")
        return
    rows = []
    for a in accounts:
        locked = _locked_until(a, now)
        rows.append(
            [
                a.username,
                a.display_name or "-",
                ",".join(a.roles or []),
                "disabled" if a.disabled_at is not None else "-",
                f"until {when(locked)}" if locked is not None else "-",
                "one-time" if a.must_change_password else "set",
                when(a.last_login_at) if a.last_login_at else "never",
            ]
        )
    table(["USERNAME", "NAME", "ROLES", "DISABLED", "LOCKED", "PASSWORD", "LAST LOGIN (UTC)"], rows)


@user.command("disable", context_settings=CONTEXT)
@click.argument("username")
@user_errors
def user_disable(username: str) -> None:
    """Disable an account: its console sessions end and its API tokens are refused, at once.

    \b
    Examples:
      pendant user disable jjansen
    """
    from pendant_backend import users

    users.set_disabled(open_engine(), username=username, disabled=True, actor=cli_actor())
    click.echo(f"disabled {username}: its sessions ended and its tokens are refused")


@user.command("enable", context_settings=CONTEXT)
@click.argument("username")
@user_errors
def user_enable(username: str) -> None:
    """Enable a disabled account again (this also lifts a lock-out).

    \b
    Examples:
      pendant user enable jjansen
    """
    from pendant_backend import users

    users.set_disabled(open_engine(), username=username, disabled=False, actor=cli_actor())
    click.echo(f"enabled {username}")


@user.command("roles", context_settings=CONTEXT)
@click.argument("username")
@ROLE_OPTION
@user_errors
def user_roles(username: str, role_names: tuple[str, ...]) -> None:
    """Replace an account's roles with those given (its console sessions and tokens carry them from
    their next request).

    \b
    Examples:
      pendant user roles jjansen --role supervisor
      pendant user roles pit --role police_it --role technician
    """
    from pendant_backend import users

    account = users.set_roles(
        open_engine(), username=username, role_names=list(role_names), actor=cli_actor()
    )
    click.echo(f"{username} is now {_titles(account.roles)}")


@user.command("reset-password", context_settings=CONTEXT)
@click.argument("username")
@user_errors
def user_reset_password(username: str) -> None:
    """Give an account a new one-time password and print it, once: the account is unlocked, its console
    sessions end, and the person must choose a new password at the next login.

    \b
    Examples:
      pendant user reset-password jjansen
    """
    from pendant_backend import users

    password = users.reset_password(open_engine(), username=username, actor=cli_actor())
    _hand_over(username, password)
