"""Accounts of the people who use the console, the API and the CLI: add, list, disable, enable, change
roles, reset and change passwords; log in with a lock-out after repeated failures.

A new account and a reset get a one-time password, shown once to whoever made it; the first login must
replace it. Every change is an audit event; failed logins are logged (not chained, so that nobody can
fill the audit chain by guessing), and a lock-out is an audit event.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, passwords, roles
from pendant_backend.db import session_scope
from pendant_backend.models import Account, WebSession, as_utc, utc_now

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,31}")
MAX_FAILED_LOGINS = 5
LOCK_MINUTES = 15


class UserError(BackendError):
    """An account change or a login that cannot be done; the message says why and what to do."""


class LoginRefused(UserError):
    """Wrong username or password, a locked or a disabled account."""


@dataclass(frozen=True)
class Person:
    """Who is asking, as every layer sees it: from a console session, an API token or the CLI."""

    username: str
    roles: tuple[str, ...]
    display_name: str | None = None
    must_change_password: bool = False

    def can(self, permission: str) -> bool:
        """True if one of the person's roles grants `permission` (pendant_backend.roles)."""
        return roles.can(self.roles, permission)

    @property
    def label(self) -> str:
        """How the console names the person: 'J. Jansen (jjansen)' or the username."""
        return f"{self.display_name} ({self.username})" if self.display_name else self.username


def person_of(account: Account) -> Person:
    """The Person for an account row."""
    return Person(
        username=account.username,
        roles=tuple(account.roles or ()),
        display_name=account.display_name,
        must_change_password=account.must_change_password,
    )


def check_username(username: str) -> str:
    """A username: 2 to 32 of a-z, 0-9, '.', '_' and '-', starting with a letter."""
    if not USERNAME_RE.fullmatch(username or ""):
        raise UserError(
            f"{username!r} is not a username: 2 to 32 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    return username


def _check_display_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise UserError("the display name must be 1 to 64 printable characters")
    return name


def _roles(wanted: list[str] | tuple[str, ...]) -> list[str]:
    try:
        checked = roles.check_roles(wanted)
    except roles.UnknownRole as exc:
        raise UserError(str(exc)) from None
    if not checked:
        raise UserError(f"give the account at least one role: {', '.join(roles.ROLES)}")
    return checked


def _existing(session: Session, username: str) -> Account:
    account = session.exec(select(Account).where(Account.username == username)).first()
    if account is None:
        raise UserError(f"there is no account {username!r}: see `pendant user list`")
    return account


def _end_sessions(session: Session, account_id: int, now: datetime) -> None:
    for row in session.exec(
        select(WebSession).where(WebSession.account_id == account_id, col(WebSession.ended_at).is_(None))
    ):
        row.ended_at = now
        session.add(row)


def add_user(
    engine: Engine,
    *,
    username: str,
    role_names: list[str] | tuple[str, ...],
    display_name: str | None = None,
    actor: str = audit.SYSTEM,
    now: datetime | None = None,
) -> tuple[Account, str]:
    """A new account with a one-time password; returns the account and that password (shown once)."""
    check_username(username)
    wanted = _roles(role_names)
    display_name = _check_display_name(display_name)
    now = now or utc_now()
    secret = passwords.one_time_password()
    try:
        with session_scope(engine) as session:
            account = Account(
                username=username,
                display_name=display_name,
                roles=wanted,
                password_hash=passwords.hash_password(secret),
                must_change_password=True,
                created_at=now,
            )
            session.add(account)
            session.flush()
            audit.append(
                session,
                kind="account_created",
                at=now,
                actor=actor,
                data={"username": username, "roles": wanted},
            )
    except IntegrityError:
        raise UserError(f"there is already an account {username!r}: see `pendant user list`") from None
    return account, secret


def list_users(engine: Engine) -> list[Account]:
    """Every account by username (disabled ones too)."""
    with Session(engine) as session:
        return list(session.exec(select(Account).order_by(col(Account.username))))


def get_user(engine: Engine, username: str) -> Account:
    """The account, or UserError saying how to list them."""
    with Session(engine) as session:
        return _existing(session, username)


def set_disabled(
    engine: Engine, *, username: str, disabled: bool, actor: str = audit.SYSTEM, now: datetime | None = None
) -> Account:
    """Disable an account (its sessions end and its tokens are refused at once) or enable it again."""
    now = now or utc_now()
    with session_scope(engine) as session:
        account = _existing(session, username)
        if disabled:
            account.disabled_at = account.disabled_at or now
            _end_sessions(session, account.id, now)
        else:
            account.disabled_at, account.failed_logins, account.locked_until = None, 0, None
        session.add(account)
        audit.append(
            session,
            kind="account_disabled" if disabled else "account_enabled",
            at=now,
            actor=actor,
            data={"username": username},
        )
    return account


def set_roles(
    engine: Engine,
    *,
    username: str,
    role_names: list[str] | tuple[str, ...],
    actor: str = audit.SYSTEM,
    now: datetime | None = None,
) -> Account:
    """Replace the account's roles (its open sessions carry the new ones from their next request)."""
    wanted = _roles(role_names)
    now = now or utc_now()
    with session_scope(engine) as session:
        account = _existing(session, username)
        account.roles = wanted
        session.add(account)
        audit.append(
            session, kind="account_roles", at=now, actor=actor, data={"username": username, "roles": wanted}
        )
    return account


def reset_password(
    engine: Engine, *, username: str, actor: str = audit.SYSTEM, now: datetime | None = None
) -> str:
    """A new one-time password (returned, shown once): the account is unlocked, its sessions end, and
    the next login must choose a new password."""
    now = now or utc_now()
    secret = passwords.one_time_password()
    with session_scope(engine) as session:
        account = _existing(session, username)
        account.password_hash = passwords.hash_password(secret)
        account.must_change_password = True
        account.failed_logins, account.locked_until = 0, None
        _end_sessions(session, account.id, now)
        session.add(account)
        audit.append(session, kind="password_reset", at=now, actor=actor, data={"username": username})
    return secret


def change_password(
    engine: Engine, *, username: str, old: str, new: str, now: datetime | None = None
) -> Account:
    """The person replaces their own password (a one-time one, or any): `old` must be right."""
    now = now or utc_now()
    with session_scope(engine) as session:
        account = _existing(session, username)
        if not passwords.verify_password(account.password_hash, old):
            raise UserError("the current password is wrong")
        try:
            passwords.check_new_password(new, username=username, old=old)
        except passwords.WeakPassword as exc:
            raise UserError(str(exc)) from None
        account.password_hash = passwords.hash_password(new)
        account.must_change_password, account.password_changed_at = False, now
        session.add(account)
        audit.append(session, kind="password_changed", at=now, actor=username, data={"username": username})
    return account


def login(engine: Engine, *, username: str, password: str, now: datetime | None = None) -> Account:
    """The account if the password is right and the account usable; LoginRefused otherwise.

    After MAX_FAILED_LOGINS wrong passwords in a row the account is locked for LOCK_MINUTES (an audit
    event); while locked even the right password is refused. A wrong username costs as much time as a
    wrong password and gets the same answer.
    """
    now = now or utc_now()
    with session_scope(engine) as session:
        account = session.exec(select(Account).where(Account.username == username)).first()
        if account is None:
            passwords.verify_password(None, password)
            log.warning("failed login for an unknown username")
            raise LoginRefused("wrong username or password")
        locked_until = as_utc(account.locked_until)
        if locked_until is not None and now < locked_until:
            log.warning("login refused for %s: locked until %s", username, locked_until.isoformat())
            raise LoginRefused(
                f"too many failed logins: the account is locked until {locked_until:%H:%M} UTC; "
                "an administrator can unlock it with `pendant user reset-password`"
            )
        if not passwords.verify_password(account.password_hash, password):
            account.failed_logins += 1
            log.warning("failed login for %s (%d in a row)", username, account.failed_logins)
            if account.failed_logins >= MAX_FAILED_LOGINS:
                account.locked_until = now + timedelta(minutes=LOCK_MINUTES)
                account.failed_logins = 0
                audit.append(
                    session,
                    kind="account_locked",
                    at=now,
                    actor=audit.SYSTEM,
                    data={"username": username, "minutes": LOCK_MINUTES},
                )
                session.add(account)
                # Committed: the lock must hold even though this login is refused.
                session.commit()
                raise LoginRefused(
                    f"too many failed logins: the account is locked for {LOCK_MINUTES} minutes"
                )
            session.add(account)
            session.commit()
            raise LoginRefused("wrong username or password")
        if account.disabled_at is not None:
            raise LoginRefused("this account is disabled: ask an administrator")
        account.failed_logins, account.locked_until, account.last_login_at = 0, None, now
        if passwords.needs_rehash(account.password_hash):
            account.password_hash = passwords.hash_password(password)
        session.add(account)
        audit.append(session, kind="login", at=now, actor=username, data={"username": username})
    return account


def operator(engine: Engine, username: str, permission: str) -> Person:
    """The CLI's `--operator`: an enabled account that holds `permission`, or UserError saying why."""
    with Session(engine) as session:
        account = session.exec(select(Account).where(Account.username == username)).first()
    if account is None:
        raise UserError(
            f"there is no account {username!r}: --operator names your account "
            "(an administrator adds it with `pendant user add`)"
        )
    if account.disabled_at is not None:
        raise UserError(f"the account {username!r} is disabled")
    person = person_of(account)
    if not person.can(permission):
        raise UserError(
            f"the account {username!r} ({', '.join(person.roles)}) may not do this: "
            f"it needs the role {roles.who_can(permission)}"
        )
    return person
