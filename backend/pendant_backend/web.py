"""The web application: the operator console (pendant_backend.console) and the JSON API
(pendant_backend.api) in one FastAPI app over one database, and `serve` to run it with uvicorn.

Errors reach people as one clear status and sentence: 401 (log in), 403 (not allowed, or no CSRF
token), 404 (no such alarm or device), 409 (the alarm is not in a state that allows it), 422 (invalid
input). Every refusal is logged.

It serves HTTPS (pendant_backend.web_tls: the project CA's web certificate or the operator's, TLS 1.2+,
HSTS); plain HTTP only on loopback and only when asked for (PENDANT_WEB_PLAIN, the demo, the tests).

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
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
from pendant_backend.web_tls import HstsMiddleware, WebTransport, harden, web_transport

log = logging.getLogger(__name__)


def _unique_id(route: Any) -> str:
    # Operation ids a client generator can turn into method names: `alarms-list_alarms`.
    tag = route.tags[0] if route.tags else "console"
    return f"{tag}-{route.name}"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Parts of the app (the console's live hub) add their start and stop hooks to app.state.
    for start in app.state.on_start:
        await start()
    try:
        yield
    finally:
        for stop in reversed(app.state.on_stop):
            await stop()


Hook = Callable[[], Awaitable[None]]


def create_app(engine: Engine, settings: Settings, *, console: bool = True) -> FastAPI:
    """The console and the API over the database behind `engine`."""
    app = FastAPI(
        lifespan=_lifespan,
        title="Pendant alarm backend",
        version="1",
        description="Alarms, their locations and the fleet's health, for dispatch and police IT.",
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_unique_id,
    )
    app.state.engine, app.state.settings = engine, settings
    app.state.on_start, app.state.on_stop = list[Hook](), list[Hook]()
    app.include_router(api_router)
    app.add_middleware(HstsMiddleware)
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
        return JSONResponse({"detail": jsonable_encoder(exc.errors()), "problems": problems}, status_code=422)

    return app


def _end_live_streams(app: FastAPI) -> None:
    hub = getattr(app.state, "hub", None)
    if hub is not None:
        hub.end_streams_threadsafe()


def _server(app: FastAPI, transport: WebTransport, **options: Any) -> Any:
    """A uvicorn server that, told to stop, first ends the console's live streams (they never end by
    themselves; the pages reconnect to whoever serves next)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            _end_live_streams(app)
            super().handle_exit(sig, frame)

    class Config(uvicorn.Config):
        def load(self) -> None:
            super().load()
            harden(self.ssl)

    # A live connection still open after 2 s is closed.
    return Server(
        Config(
            app,
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="on",
            **transport.options,
            **options,
        )
    )


def serve(
    engine: Engine, settings: Settings, *, host: str, port: int, transport: WebTransport | None = None
) -> None:
    """Run the console and the API with uvicorn until Ctrl-C or SIGTERM, over `transport` (default:
    HTTPS, or plain HTTP when PENDANT_WEB_PLAIN is on and `host` is loopback; see web_tls)."""
    transport = transport or web_transport(settings, host=host, plain=settings.web_plain)
    _server(create_app(engine, settings), transport, host=host, port=port, log_level="info").run()


class BackgroundWebServer:
    """The console and the API served by uvicorn in a thread (for `pendant demo` and the tests);
    `start()` returns once it listens, `stop()` ends it within a few seconds, open live connections
    included. HTTPS unless `plain` (default: PENDANT_WEB_PLAIN), which a loopback `host` only allows
    (BackendError otherwise)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        plain: bool | None = None,
    ) -> None:
        self.host = host
        self.transport = web_transport(
            settings, host=host, plain=settings.web_plain if plain is None else plain
        )
        self.app = create_app(engine, settings)
        self.server = _server(self.app, self.transport, host=host, port=port, log_level="warning")
        self.config = self.server.config
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for port 0)."""
        servers = getattr(self.server, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.config.port

    @property
    def url(self) -> str:
        """http(s)://host:port, without a trailing slash."""
        return f"{self.transport.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Serve in a thread; raise RuntimeError if it is not listening within `timeout` seconds."""
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the web server did not start on {self.host}:{self.config.port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start within {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving (open pages see the connection drop)."""
        _end_live_streams(self.app)
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
