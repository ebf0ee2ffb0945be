"""The people who use the console and the API: accounts with roles, and their login sessions.

An account belongs to a member of police staff (a dispatcher, a supervisor, police IT, a technician, an
admin), never to a victim. Passwords are kept only as argon2 hashes (pendant_backend.passwords), session
tokens only as SHA-256 hashes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from pendant_backend.models.base import utc_field


class Account(SQLModel, table=True):
    """A person who logs in to the console, runs the CLI as themselves, or owns API tokens."""

    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=32, unique=True)
    display_name: str | None = Field(default=None, max_length=64)
    # A subset of pendant_backend.roles.ROLES.
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    password_hash: str = Field(max_length=200)
    # A one-time password (new account, reset): the first login must set a new one.
    must_change_password: bool = True
    created_at: datetime = utc_field(nullable=False)
    password_changed_at: datetime | None = utc_field()
    disabled_at: datetime | None = utc_field()
    # Failed logins in a row; at the limit the account is locked until `locked_until`.
    failed_logins: int = 0
    locked_until: datetime | None = utc_field()
    last_login_at: datetime | None = utc_field()


class WebSession(SQLModel, table=True):
    """One login to the console: the cookie holds the token, the table its hash."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    # Sent back with every form and state-changing request (synchroniser token against CSRF).
    csrf_token: str = Field(max_length=64)
    created_at: datetime = utc_field(nullable=False)
    last_seen_at: datetime = utc_field(nullable=False)
    # The session's hard end, whatever the activity.
    expires_at: datetime = utc_field(nullable=False, index=True)
    ended_at: datetime | None = utc_field()
