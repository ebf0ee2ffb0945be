"""The operator console: server-rendered pages (Jinja2 templates, htmx for partial reloads), a live
connection (Server-Sent Events, console.live), a map (Leaflet over Natural Earth outlines, or the
force's own tiles), all front-end files from npm served by the backend itself (console.assets).

`install(app)` adds it to the web application of pendant_backend.web. Why this shape: docs/console.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pendant_backend.api.deps import LoginRequired, PasswordChangeRequired
from pendant_backend.console import assets, auth, fleet, live, pages
from pendant_backend.console.render import STATIC_DIR, page

log = logging.getLogger(__name__)

STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}


def _wants_html(request: Request) -> bool:
    """A person's browser asking for a page (not the API, not a script, not an htmx partial)."""
    return (
        not request.url.path.startswith("/api/")
        and "text/html" in request.headers.get("accept", "")
        and request.headers.get("hx-request") is None
    )


def install(app: FastAPI) -> None:
    """Add the console's routes, files, live hub and error pages to `app`."""
    settings = app.state.settings
    missing = assets.missing_files(settings.frontend_dir)
    if missing:
        log.error(
            "the console's front-end files are missing from %s: run scripts/setup.sh (npm ci)",
            settings.frontend_dir,
        )
    app.state.hub = live.LiveHub(app.state.engine, settings)

    async def start_hub() -> None:
        await app.state.hub.start()

    async def stop_hub() -> None:
        await app.state.hub.stop()

    app.state.on_start.append(start_hub)
    app.state.on_stop.append(stop_hub)
    for router in (auth.router, pages.router, fleet.router, live.router):
        app.include_router(router)

    @app.get("/vendor/{name:path}", include_in_schema=False)
    def vendor(name: str) -> Response:
        path = assets.vendor_path(settings.frontend_dir, name)
        if path is None or not path.is_file():
            raise HTTPException(404, f"no front-end file {name}")
        return FileResponse(
            path, media_type=assets.media_type(path), headers={"Cache-Control": "max-age=3600"}
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path: Path | None = STATIC_FILES.get(name)
        if path is None:
            raise HTTPException(404, f"no console file {name}")
        return FileResponse(path, media_type=assets.media_type(path), headers={"Cache-Control": "no-cache"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, PasswordChangeRequired) and request.method == "GET" and _wants_html(request):
            return auth_redirect("/account/password")
        if isinstance(exc, LoginRequired) or exc.status_code == 401:
            if _wants_html(request) and request.method == "GET":
                return auth.login_redirect(request)
            return JSONResponse({"detail": exc.detail}, status_code=401, headers=exc.headers)
        if _wants_html(request):
            return page(
                request,
                "error.html",
                {"status": exc.status_code, "message": exc.detail},
                status_code=exc.status_code,
            )
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )


def auth_redirect(target: str) -> Response:
    from fastapi.responses import RedirectResponse

    return RedirectResponse(target, status_code=303)
