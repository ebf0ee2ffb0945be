"""API tokens: made for an account with the CLI, shown once, kept only as a SHA-256 hash. A token
carries its account's roles at the moment of each request, so disabling the account or changing its
roles takes effect at once; acks and resolutions made with it are recorded under the account's name.
There is no default token and no default password: the API refuses everything until one is created.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, users
from pendant_backend.db import session_scope
from pendant_backend.models import Account, ApiToken, as_utc, utc_now

PREFIX = "pdt_"
LAST_USED_STEP = timedelta(minutes=1)
MAX_LABEL = 64


class TokenError(BackendError):
    """A token could not be created or revoked."""


def token_hash(token: str) -> str:
    """SHA-256 hex of a token (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    engine: Engine, *, username: str, label: str | None = None, actor: str = audit.SYSTEM
) -> str:
    """A new token for the account `username`, named `label` (default: the username); returned once,
    never stored in clear."""
    label = (label or username).strip()
    if not label or len(label) > MAX_LABEL or not label.isprintable():
        raise TokenError(f"a token's label must be 1 to {MAX_LABEL} printable characters")
    token = PREFIX + secrets.token_urlsafe(32)
    now = utc_now()
    try:
        with session_scope(engine) as session:
            account = session.exec(select(Account).where(Account.username == username)).first()
            if account is None:
                raise TokenError(f"there is no account {username!r}: add it with `pendant user add`")
            if account.disabled_at is not None:
                raise TokenError(f"the account {username!r} is disabled")
            session.add(
                ApiToken(name=label, account_id=account.id, token_hash=token_hash(token), created_at=now)
            )
            session.flush()
            audit.append(
                session,
                kind="token_created",
                at=now,
                actor=actor,
                data={"name": label, "username": username},
            )
    except IntegrityError:
        raise TokenError(
            f"there is already a token named {label!r}: revoke it first or give another --label"
        ) from None
    return token


def revoke_token(engine: Engine, *, name: str, actor: str = audit.SYSTEM) -> None:
    """Revoke the token named `name` (it is refused from now on)."""
    now = utc_now()
    with session_scope(engine) as session:
        row = session.exec(
            select(ApiToken).where(ApiToken.name == name, col(ApiToken.revoked_at).is_(None))
        ).first()
        if row is None:
            raise TokenError(f"there is no active token named {name!r}: see `pendant backend token list`")
        # The name is freed for a new token: the revoked row keeps a marker instead.
        row.revoked_at, row.name = now, f"{name}~revoked-{row.id}"[:64]
        session.add(row)
        audit.append(session, kind="token_revoked", at=now, actor=actor, data={"name": name})


def list_tokens(engine: Engine) -> list[tuple[ApiToken, str | None]]:
    """Every token, active and revoked, with its account's username (None for a token without one)."""
    with Session(engine) as session:
        rows = session.exec(
            select(ApiToken, Account)
            .join(Account, col(ApiToken.account_id) == col(Account.id), isouter=True)
            .order_by(col(ApiToken.created_at))
        )
        return [(token, account.username if account else None) for token, account in rows]


def authenticate(engine: Engine, token: str, *, now: datetime | None = None) -> users.Person | None:
    """The person behind a valid token (its account enabled), None otherwise."""
    if not token.startswith(PREFIX):
        return None
    now = now or utc_now()
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).first()
        if row is None or row.revoked_at is not None or row.account_id is None:
            return None
        account = session.get(Account, row.account_id)
        last = as_utc(row.last_used_at)
    if account is None or account.disabled_at is not None:
        return None
    if last is None or now - last > LAST_USED_STEP:
        with session_scope(engine) as session:
            stored = session.get(ApiToken, row.id)
            stored.last_used_at = now
            session.add(stored)
    return users.person_of(account)
