"""Passwords: argon2id hashes with their own salt, verification that never accepts a missing or damaged
hash, one-time passwords people can read out, and the rules for a password a person chooses."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from pendant_backend import passwords
from pendant_backend.passwords import WeakPassword


def test_a_hash_is_argon2id_salted_and_verifies_only_its_password() -> None:
    first = passwords.hash_password("correct horse battery staple")
    second = passwords.hash_password("correct horse battery staple")
    assert first.startswith("$argon2id$") and "correct horse" not in first
    assert first != second  # each hash has its own salt
    assert passwords.verify_password(first, "correct horse battery staple")
    assert passwords.verify_password(second, "correct horse battery staple")
    assert not passwords.verify_password(first, "correct horse battery stapler")
    assert not passwords.verify_password(first, "")


@pytest.mark.parametrize("stored", [None, "", "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$broken"])
def test_a_missing_or_damaged_hash_never_matches(stored: str | None) -> None:
    assert passwords.verify_password(stored, "anything at all") is False
    assert passwords.verify_password(stored, "") is False


def test_a_hash_made_with_weaker_parameters_needs_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("an old password here")
    assert passwords.verify_password(weak, "an old password here")  # still accepted, then upgraded
    assert passwords.needs_rehash(weak) is True
    assert passwords.needs_rehash(passwords.hash_password("a new password here")) is False


def test_one_time_passwords_are_long_random_and_unambiguous() -> None:
    made = {passwords.one_time_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert len(password) == 16
        assert not set(password) & set("0O1lI")  # nothing to misread when it is read out
        assert set(password) <= set(passwords._ALPHABET)


@pytest.mark.parametrize(
    ("new", "old", "message"),
    [
        ("short one", None, "at least 12 characters"),
        ("x" * 129, None, "at most 128 characters"),
        ("my name is JJansen ok", None, "must not contain the username"),
        ("the one-time secret", "the one-time secret", "other than the one-time password"),
    ],
)
def test_a_chosen_password_is_refused_with_the_reason(new: str, old: str | None, message: str) -> None:
    with pytest.raises(WeakPassword, match=message):
        passwords.check_new_password(new, username="jjansen", old=old)


def test_a_good_chosen_password_is_accepted() -> None:
    passwords.check_new_password("x" * 12, username="jjansen", old="something else")
    passwords.check_new_password("y" * 128, username="jjansen")
