"""Password hashing (argon2id, argon2-cffi's defaults: RFC 9106's low-memory profile) and one-time
passwords. Nothing here keeps a password: callers store only the hash."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 128
# A one-time password people can read out and type: no 0/O, 1/l/I.
_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_hasher = PasswordHasher()
# Verified against when the username does not exist, so that a wrong username takes as long as a wrong
# password and the answer does not tell which accounts exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    """A new password that the policy refuses; the message says why."""


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (with its own random salt)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches the hash; a missing or damaged hash never matches."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def one_time_password() -> str:
    """A random password of 16 characters (about 92 bits), for a new account or a reset."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def check_new_password(password: str, *, username: str, old: str | None = None) -> None:
    """Raise WeakPassword unless `password` may be chosen: 12 to 128 characters, not the username,
    not the password it replaces."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password must have at most {MAX_LENGTH} characters")
    if username.lower() in password.lower():
        raise WeakPassword("the password must not contain the username")
    if old is not None and password == old:
        raise WeakPassword("choose a password other than the one-time password")
