"""What every route of the API and the console shares: the engine and settings of the app, who is
asking (an API token, or a console session with its CSRF token), and the permission a route needs.

A request is refused with 401 when nobody is logged in (or the token or session is not valid any more),
403 when the person's roles do not allow it or a state-changing request lacks the session's CSRF token,
and every refusal is logged with the path and the reason (never a password or a token).

FastAPI reads the annotations of these functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from pendant_backend import roles, tokens, web_sessions
from pendant_backend.settings import Settings
from pendant_backend.users import Person

log = logging.getLogger(__name__)

SESSION_COOKIE = "pendant_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The one route a person with a one-time password may use (besides logging out).
PASSWORD_CHANGE_PATHS = frozenset({"/account/password", "/logout"})

bearer = HTTPBearer(auto_error=False, description="An API token from `pendant backend token create`.")


@dataclass(frozen=True)
class Caller:
    """Who is asking and how: `via` is `token` (API) or `session` (console, with its CSRF token)."""

    person: Person
    via: str
    session: web_sessions.Active | None = None

    @property
    def username(self) -> str:
        return self.person.username


class LoginRequired(HTTPException):
    """401: nobody (valid) is logged in. The console turns it into the login page."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


class PasswordChangeRequired(HTTPException):
    """403: the person logged in with a one-time password and must choose a new one first."""

    def __init__(self) -> None:
        super().__init__(403, "choose a new password first")


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def refuse(request: Request, status: int, detail: str, who: str | None = None) -> HTTPException:
    """Log a refusal and make its exception (403 and 404 answers go through here)."""
    log.warning("refused %s %s (%s): %d %s", request.method, request.url.path, who or "-", status, detail)
    return HTTPException(status, detail)


async def _csrf_ok(request: Request, active: web_sessions.Active) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get(CSRF_FIELD)
    return isinstance(sent, str) and hmac.compare_digest(sent, active.csrf_token)


async def get_caller(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The person behind the request's API token or console session; 401/403 as the module says."""
    cached = getattr(request.state, "caller", None)
    if cached is not None:
        return cached
    if credentials is not None:
        person = tokens.authenticate(engine, credentials.credentials)
        if person is None:
            log.warning("refused %s %s: 401 invalid API token", request.method, request.url.path)
            raise LoginRequired("a valid API token is needed: `pendant backend token create`")
        caller = Caller(person=person, via="token")
    else:
        active = web_sessions.lookup(
            engine,
            request.cookies.get(SESSION_COOKIE),
            idle=timedelta(minutes=settings.session_idle_min),
        )
        if active is None:
            if request.cookies.get(SESSION_COOKIE):
                log.info("%s %s: the session has ended or expired", request.method, request.url.path)
                raise LoginRequired("your session has ended: log in again")
            raise LoginRequired("log in first (or send an API token)")
        if request.method not in SAFE_METHODS and not await _csrf_ok(request, active):
            raise refuse(
                request,
                403,
                "the request did not carry this session's CSRF token: reload the page and try again",
                active.person.username,
            )
        if active.person.must_change_password and request.url.path not in PASSWORD_CHANGE_PATHS:
            log.info(
                "%s %s: %s must choose a new password first",
                request.method,
                request.url.path,
                active.person.username,
            )
            raise PasswordChangeRequired()
        caller = Caller(person=active.person, via="session", session=active)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require(permission: str):  # noqa: ANN201 - a FastAPI dependency
    """A dependency: the caller, if one of their roles grants `permission`; 403 otherwise."""
    roles.PERMISSIONS[permission]  # a typo in a route fails at import time, not at the first request

    def check(request: Request, caller: CallerDep) -> Caller:
        if not caller.person.can(permission):
            raise refuse(
                request,
                403,
                f"your roles ({', '.join(caller.person.roles) or 'none'}) do not allow this: "
                f"it needs the role {roles.who_can(permission)}",
                caller.username,
            )
        return caller

    return Depends(check)
