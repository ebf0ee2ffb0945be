"""Rendering the console's pages: Jinja2 templates (one per page, partials for what updates live) with
what every page needs: who is logged in, what they may do, the CSRF token, the map settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pendant_backend import roles
from pendant_backend.console import assets, views

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.globals.update(
    age_text=views.age_text,
    bars=views.signal_bars,
    set_aside_badges=views.set_aside_badges,
    set_aside_lines=views.set_aside_lines,
    clock_text=views.clock_text,
    role_title=lambda role: roles.ROLE_TITLES.get(role, role),
)
templates.env.filters.update(iso=views.iso_text, clock=views.clock_text)


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """Render the template `name` for this request (logged in or not)."""
    caller = getattr(request.state, "caller", None)
    person = caller.person if caller is not None else None
    settings = request.app.state.settings
    data = {
        "person": person,
        "may": (roles.permissions_of(person.roles) if person is not None else frozenset()),
        "csrf": caller.session.csrf_token if caller is not None and caller.session is not None else "",
        "tile_url": settings.tile_url,
        "tile_attribution": settings.tile_attribution,
        "path": request.url.path,
        "frontend_missing": bool(assets.missing_files(settings.frontend_dir)),
    }
    data.update(context or {})
    response = templates.TemplateResponse(request, name, data, status_code=status_code)
    # Pages hold personal data: never kept by the browser's cache or a proxy.
    response.headers["Cache-Control"] = "no-store"
    return response
