"""API tokens for operators: created by police IT with the CLI, shown once, kept only as a SHA-256 hash.
A token is named after the operator; acks and resolutions made with it are recorded under that name.
There is no default token and no default password: the API refuses everything until one is created."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, lifecycle
from pendant_backend.db import session_scope
from pendant_backend.models import ApiToken, as_utc, utc_now

PREFIX = "pdt_"
LAST_USED_STEP = timedelta(minutes=1)


class TokenError(BackendError):
    """A token could not be created or revoked."""


def token_hash(token: str) -> str:
    """SHA-256 hex of a token (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, *, name: str, actor: str = audit.SYSTEM) -> str:
    """A new token for the operator `name`; returned once, never stored in clear."""
    name = lifecycle.check_operator(name)
    token = PREFIX + secrets.token_urlsafe(32)
    now = utc_now()
    try:
        with session_scope(engine) as session:
            session.add(ApiToken(name=name, token_hash=token_hash(token), created_at=now))
            session.flush()
            audit.append(session, kind="token_created", at=now, actor=actor, data={"name": name})
    except IntegrityError:
        raise TokenError(f"there is already a token named {name!r}: revoke it first") from None
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


def list_tokens(engine: Engine) -> list[ApiToken]:
    """Every token, active and revoked, without its hash."""
    with Session(engine) as session:
        return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at))))


def authenticate(engine: Engine, token: str, *, now: datetime | None = None) -> str | None:
    """The operator's name for a valid token, None otherwise."""
    if not token.startswith(PREFIX):
        return None
    now = now or utc_now()
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).first()
        if row is None or row.revoked_at is not None:
            return None
        name, last = row.name, as_utc(row.last_used_at)
    if last is None or now - last > LAST_USED_STEP:
        with session_scope(engine) as session:
            stored = session.get(ApiToken, row.id)
            stored.last_used_at = now
            session.add(stored)
    return name
