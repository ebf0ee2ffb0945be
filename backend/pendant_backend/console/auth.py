"""Logging in and out of the console, and choosing a new password.

The login form carries a CSRF token of its own (a random value in a short-lived cookie and in the form,
which must match), because there is no session yet to hold one. After the login the session cookie is
HttpOnly, SameSite=Strict and, over HTTPS, Secure. A person with a one-time password is sent to choose
a new one before anything else.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import hmac
import logging
import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pendant_backend import users, web_sessions
from pendant_backend.api.deps import SESSION_COOKIE, CallerDep, EngineDep, SettingsDep
from pendant_backend.console.render import page

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "pendant_login_csrf"


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site only (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _login_page(
    request: Request, *, error: str | None = None, status: int = 200, username: str = ""
) -> Response:
    token = secrets.token_urlsafe(24)
    response = page(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "username": username,
            "next": safe_next(request.query_params.get("next")),
        },
        status_code=status,
    )
    _cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    """The login page."""
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",  # noqa: A002 - the form field's name
) -> Response:
    """Check the password; start a session, or show the login page again with the reason."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not csrf_token or not hmac.compare_digest(cookie, csrf_token):
        log.warning("refused POST /login: 403 the login form's CSRF token did not match")
        return _login_page(
            request,
            error="The login form was out of date or did not come from this console: try again.",
            status=403,
            username=username,
        )
    try:
        account = users.login(engine, username=username.strip(), password=password)
    except users.LoginRefused as exc:
        return _login_page(request, error=str(exc).capitalize() + ".", status=401, username=username)
    token = web_sessions.start(engine, account=account, lifetime=timedelta(hours=settings.session_hours))
    log.info("%s logged in to the console", account.username)
    target = "/account/password" if account.must_change_password else safe_next(next)
    response = RedirectResponse(target, status_code=303)
    _cookie(response, request, SESSION_COOKIE, token, settings.session_hours * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, engine: EngineDep, caller: CallerDep) -> Response:
    """End the session (the CSRF token is checked by get_caller)."""
    web_sessions.end(engine, request.cookies.get(SESSION_COOKIE))
    log.info("%s logged out", caller.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account/password", response_class=HTMLResponse)
def password_form(request: Request, caller: CallerDep) -> Response:
    """Choose a new password (required after a one-time password)."""
    return page(request, "password.html", {"error": None})


@router.post("/account/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    current: Annotated[str, Form(max_length=256)],
    new: Annotated[str, Form(max_length=256)],
    repeat: Annotated[str, Form(max_length=256)],
) -> Response:
    """Replace the password; the session goes on with the account as it is now."""
    if new != repeat:
        return page(request, "password.html", {"error": "The two new passwords differ."}, status_code=422)
    try:
        users.change_password(engine, username=caller.username, old=current, new=new)
    except users.UserError as exc:
        return page(request, "password.html", {"error": str(exc).capitalize() + "."}, status_code=422)
    return RedirectResponse("/", status_code=303)


def login_redirect(request: Request) -> RedirectResponse:
    """To the login page, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here)}", status_code=303)
