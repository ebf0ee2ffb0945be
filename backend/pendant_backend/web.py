"""The web application: the operator console (pendant_backend.console) and the JSON API
(pendant_backend.api) in one FastAPI app over one database, and `serve` to run it with uvicorn.

Errors reach people as one clear status and sentence: 401 (log in), 403 (not allowed, or no CSRF
token), 404 (no such alarm or device), 409 (the alarm is not in a state that allows it), 422 (invalid
input). Every refusal is logged.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from pendant_backend import lifecycle
from pendant_backend.alarms import AlarmNotFound
from pendant_backend.api.main import api_router
from pendant_backend.locations import NotAllowed
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)


def _unique_id(route: Any) -> str:
    # Operation ids a client generator can turn into method names: `alarms-list_alarms`.
    tag = route.tags[0] if route.tags else "console"
    return f"{tag}-{route.name}"


def create_app(engine: Engine, settings: Settings, *, console: bool = True) -> FastAPI:
    """The console and the API over the database behind `engine`."""
    app = FastAPI(
        title="Pendant alarm backend",
        version="1",
        description="Alarms, their locations and the fleet's health, for dispatch and police IT.",
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_unique_id,
    )
    app.state.engine, app.state.settings = engine, settings
    app.include_router(api_router)
    if console:
        from pendant_backend.console import install

        install(app)

    @app.exception_handler(lifecycle.TransitionError)
    async def transition_refused(request: Request, exc: lifecycle.TransitionError) -> JSONResponse:
        log.warning("refused %s %s: 409 %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(AlarmNotFound)
    async def alarm_not_found(request: Request, exc: AlarmNotFound) -> JSONResponse:
        log.warning("refused %s %s: 404 %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> JSONResponse:
        log.warning("refused %s %s: 403 %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
            for error in exc.errors()
        ]
        log.warning("refused %s %s: 422 %s", request.method, request.url.path, "; ".join(problems))
        return JSONResponse(
            {"detail": jsonable_encoder(exc.errors()), "problems": problems}, status_code=422
        )

    return app


def serve(engine: Engine, settings: Settings, *, host: str, port: int) -> None:
    """Run the console and the API with uvicorn until Ctrl-C or SIGTERM."""
    import uvicorn

    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info", access_log=False)
