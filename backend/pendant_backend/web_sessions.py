"""Console login sessions: a random token in an HttpOnly cookie, its SHA-256 hash in `web_sessions`.

A session ends when the person logs out, when an administrator disables the account or resets its
password, after `idle` without a request (an open console's live connection counts as activity), and
in any case `lifetime` after the login (a shift). Each carries a CSRF token that every form and
state-changing request must send back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend.db import session_scope
from pendant_backend.models import Account, WebSession, as_utc, utc_now
from pendant_backend.users import Person, person_of

# last_seen_at is written at most this often, so that a busy console does not write on every request.
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class Active:
    """A valid session: who it belongs to, its CSRF token, and its row id."""

    person: Person
    csrf_token: str
    session_id: int
    expires_at: datetime


def token_hash(token: str) -> str:
    """SHA-256 hex of a session token (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(engine: Engine, *, account: Account, lifetime: timedelta, now: datetime | None = None) -> str:
    """A new session for `account`; returns the token for the cookie (never stored in clear)."""
    now = now or utc_now()
    token = secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        session.add(
            WebSession(
                token_hash=token_hash(token),
                account_id=account.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                last_seen_at=now,
                expires_at=now + lifetime,
            )
        )
    return token


def lookup(
    engine: Engine, token: str | None, *, idle: timedelta, now: datetime | None = None
) -> Active | None:
    """The session of `token` if it is still valid (not ended, not expired, not idle too long, its
    account enabled); records the activity. None otherwise."""
    if not token:
        return None
    now = now or utc_now()
    with Session(engine) as session:
        row = session.exec(select(WebSession).where(WebSession.token_hash == token_hash(token))).first()
        if row is None or row.ended_at is not None:
            return None
        account = session.get(Account, row.account_id)
        last_seen, expires = as_utc(row.last_seen_at), as_utc(row.expires_at)
    if account is None or account.disabled_at is not None or now >= expires or now - last_seen > idle:
        return None
    if now - last_seen >= TOUCH_EVERY:
        with session_scope(engine) as session:
            stored = session.get(WebSession, row.id)
            stored.last_seen_at = now
            session.add(stored)
    return Active(person=person_of(account), csrf_token=row.csrf_token, session_id=row.id, expires_at=expires)


def end(engine: Engine, token: str | None, *, now: datetime | None = None) -> None:
    """Log out: the session's token is refused from now on."""
    if not token:
        return
    now = now or utc_now()
    with session_scope(engine) as session:
        row = session.exec(select(WebSession).where(WebSession.token_hash == token_hash(token))).first()
        if row is not None and row.ended_at is None:
            row.ended_at = now
            session.add(row)


def refresh_person(engine: Engine, session_id: int) -> Person | None:
    """The session's account as it is now (after a password change), or None."""
    with Session(engine) as session:
        row = session.get(WebSession, session_id)
        account = session.get(Account, row.account_id) if row is not None else None
    return person_of(account) if account is not None else None


def purge_ended(engine: Engine, *, before: datetime) -> int:
    """Delete sessions that ended or expired before `before`; returns how many."""
    with session_scope(engine) as session:
        rows = list(
            session.exec(
                select(WebSession).where(
                    (col(WebSession.expires_at) < before) | (col(WebSession.ended_at) < before)
                )
            )
        )
        for row in rows:
            session.delete(row)
    return len(rows)
