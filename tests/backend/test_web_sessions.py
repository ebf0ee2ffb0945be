"""Console sessions on both databases: a token kept only as a hash, an idle expiry that activity pushes
back, a hard end after the login whatever the activity, logout, and accounts changed under a session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backend_samples import T0
from sqlmodel import Session, select

from pendant_backend import users, web_sessions
from pendant_backend.models import WebSession

from support import add_account

LIFETIME = timedelta(hours=12)
IDLE = timedelta(minutes=30)


@pytest.fixture
def account(engine):
    add_account(engine, "jjansen", "dispatcher")
    return users.get_user(engine, "jjansen")


def test_a_session_is_found_by_its_token_which_is_kept_only_as_a_hash(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    active = web_sessions.lookup(engine, token, idle=IDLE, now=T0)
    assert active is not None
    assert (active.person.username, active.person.roles) == ("jjansen", ("dispatcher",))
    assert active.expires_at == T0 + LIFETIME and len(active.csrf_token) >= 32
    with Session(engine) as session:
        [row] = session.exec(select(WebSession))
    assert row.token_hash == web_sessions.token_hash(token) and token not in (row.token_hash, row.csrf_token)
    # A second login is a second session with its own CSRF token.
    other = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    assert web_sessions.lookup(engine, other, idle=IDLE, now=T0).csrf_token != active.csrf_token


@pytest.mark.parametrize("token", [None, "", "not-a-session-token"])
def test_no_token_or_an_unknown_one_is_no_session(engine, account, token) -> None:
    web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0) is None


def test_a_session_left_idle_too_long_ends(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0 + IDLE) is not None
    # That request was activity: the idle time counts again from it.
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0 + 2 * IDLE) is not None
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0 + 3 * IDLE + timedelta(seconds=1)) is None


def test_activity_is_written_at_most_every_thirty_seconds(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    web_sessions.lookup(engine, token, idle=IDLE, now=T0 + timedelta(seconds=10))
    with Session(engine) as session:
        assert session.exec(select(WebSession)).one().last_seen_at == T0
    web_sessions.lookup(engine, token, idle=IDLE, now=T0 + web_sessions.TOUCH_EVERY)
    with Session(engine) as session:
        assert session.exec(select(WebSession)).one().last_seen_at == T0 + web_sessions.TOUCH_EVERY


def test_a_session_ends_at_its_lifetime_however_active(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    moment = T0
    while moment < T0 + LIFETIME - IDLE:
        moment += IDLE - timedelta(minutes=1)
        assert web_sessions.lookup(engine, token, idle=IDLE, now=moment) is not None
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0 + LIFETIME - timedelta(seconds=1)) is not None
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0 + LIFETIME) is None


def test_logout_ends_only_that_session(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    other = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    web_sessions.end(engine, token, now=T0)
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0) is None
    assert web_sessions.lookup(engine, other, idle=IDLE, now=T0) is not None
    web_sessions.end(engine, token, now=T0 + IDLE)  # twice: nothing more happens
    web_sessions.end(engine, None)
    with Session(engine) as session:
        ended = session.exec(
            select(WebSession).where(WebSession.token_hash == web_sessions.token_hash(token))
        )
        assert ended.one().ended_at == T0


def test_a_password_reset_ends_the_sessions_and_new_roles_apply_at_once(engine, account) -> None:
    token = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    users.set_roles(engine, username="jjansen", role_names=["supervisor"])
    active = web_sessions.lookup(engine, token, idle=IDLE, now=T0)
    assert active.person.roles == ("supervisor",)
    assert web_sessions.refresh_person(engine, active.session_id).roles == ("supervisor",)
    users.reset_password(engine, username="jjansen")
    assert web_sessions.lookup(engine, token, idle=IDLE, now=T0) is None


def test_ended_and_expired_sessions_are_purged(engine, account) -> None:
    ended = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    web_sessions.end(engine, ended, now=T0)
    web_sessions.start(engine, account=account, lifetime=timedelta(hours=1), now=T0)
    live = web_sessions.start(engine, account=account, lifetime=LIFETIME, now=T0)
    assert web_sessions.purge_ended(engine, before=T0 + timedelta(hours=2)) == 2
    with Session(engine) as session:
        assert [row.token_hash for row in session.exec(select(WebSession))] == [web_sessions.token_hash(live)]
