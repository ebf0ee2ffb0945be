"""API tokens on both databases: made for an account and shown once, kept as a hash, carrying the
account's roles at every request; refused once revoked or once the account is disabled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backend_samples import T0
from sqlmodel import Session, col, select

from pendant_backend import tokens, users
from pendant_backend.models import ApiToken, AuditEvent
from pendant_backend.tokens import TokenError

from support import add_account


@pytest.fixture
def dispatcher(engine) -> str:
    add_account(engine, "jjansen", "dispatcher")
    return "jjansen"


def test_a_token_acts_as_its_account_and_is_stored_only_as_a_hash(engine, dispatcher) -> None:
    token = tokens.create_token(engine, username=dispatcher, label="desk 2", actor="cli:root")
    assert token.startswith(tokens.PREFIX) and len(token) > 40
    person = tokens.authenticate(engine, token)
    assert (person.username, person.roles) == ("jjansen", ("dispatcher",))
    assert person.can("alarms.location") and not person.can("users.manage")
    with Session(engine) as session:
        [row] = session.exec(select(ApiToken))
        event = session.exec(select(AuditEvent).where(AuditEvent.kind == "token_created")).one()
    assert row.token_hash == tokens.token_hash(token) and token not in row.token_hash
    assert (row.name, event.actor) == ("desk 2", "cli:root") and token not in event.body
    [(listed, username)] = tokens.list_tokens(engine)
    assert (listed.name, username) == ("desk 2", "jjansen")


def test_the_label_defaults_to_the_username_and_is_unique_among_active_tokens(engine, dispatcher) -> None:
    tokens.create_token(engine, username=dispatcher)
    with pytest.raises(TokenError, match="already a token named 'jjansen'"):
        tokens.create_token(engine, username=dispatcher)
    second = tokens.create_token(engine, username=dispatcher, label="laptop")
    assert tokens.authenticate(engine, second).username == "jjansen"
    assert [t.name for t, _ in tokens.list_tokens(engine)] == ["jjansen", "laptop"]


@pytest.mark.parametrize("token", ["", "pdt_", "pdt_not-a-token-we-made", "Bearer x", "jjansen"])
def test_anything_else_is_nobody(engine, dispatcher, token: str) -> None:
    tokens.create_token(engine, username=dispatcher)
    assert tokens.authenticate(engine, token) is None


def test_a_revoked_token_is_refused_and_its_label_is_free_again(engine, dispatcher) -> None:
    token = tokens.create_token(engine, username=dispatcher, label="desk 2")
    tokens.revoke_token(engine, name="desk 2", actor="cli:root")
    assert tokens.authenticate(engine, token) is None
    with pytest.raises(TokenError, match="no active token named 'desk 2'"):
        tokens.revoke_token(engine, name="desk 2")
    again = tokens.create_token(engine, username=dispatcher, label="desk 2")
    assert tokens.authenticate(engine, again).username == "jjansen"
    assert tokens.authenticate(engine, token) is None
    [(revoked, owner), (active, _)] = tokens.list_tokens(engine)
    assert revoked.revoked_at is not None and owner == "jjansen" and active.revoked_at is None


def test_a_disabled_account_gets_no_token_and_its_tokens_are_refused(engine, dispatcher) -> None:
    token = tokens.create_token(engine, username=dispatcher)
    users.set_disabled(engine, username=dispatcher, disabled=True)
    assert tokens.authenticate(engine, token) is None
    with pytest.raises(TokenError, match="'jjansen' is disabled"):
        tokens.create_token(engine, username=dispatcher, label="another")
    users.set_disabled(engine, username=dispatcher, disabled=False)
    assert tokens.authenticate(engine, token).username == "jjansen"


def test_the_roles_follow_the_account(engine, dispatcher) -> None:
    token = tokens.create_token(engine, username=dispatcher)
    users.set_roles(engine, username=dispatcher, role_names=["technician"])
    person = tokens.authenticate(engine, token)
    assert person.roles == ("technician",) and not person.can("alarms.location")


def test_no_token_for_an_account_that_does_not_exist_or_a_bad_label(engine, dispatcher) -> None:
    with pytest.raises(TokenError, match="there is no account 'nobody'"):
        tokens.create_token(engine, username="nobody")
    for label in ("   ", "x" * 65, "tab\there"):
        with pytest.raises(TokenError, match="label must be 1 to 64 printable characters"):
            tokens.create_token(engine, username=dispatcher, label=label)
    assert tokens.list_tokens(engine) == []


def test_last_use_is_recorded_at_most_once_a_minute(engine, dispatcher) -> None:
    token = tokens.create_token(engine, username=dispatcher)
    tokens.authenticate(engine, token, now=T0)
    tokens.authenticate(engine, token, now=T0 + timedelta(seconds=30))

    def last_used():
        with Session(engine) as session:
            return session.exec(select(ApiToken).order_by(col(ApiToken.id))).one().last_used_at

    assert last_used() == T0
    tokens.authenticate(engine, token, now=T0 + timedelta(minutes=2))
    assert last_used() == T0 + timedelta(minutes=2)
