"""HTTPS for the console and the API: which certificate uvicorn serves, TLS 1.2 or later, HSTS on every
HTTPS answer, and the rule that plain HTTP is for loopback only (the demo, the browser tests).

By default the web server has a certificate of its own from the project CA (pki.ensure_web), for
PENDANT_MQTT_PUBLIC_HOST, PENDANT_API_HOST and loopback; with PENDANT_TLS_CERT/_KEY/_CA it serves the
operator's certificate, as the broker does.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from pendant_backend import BackendError, pki
from pendant_backend.settings import Settings, is_loopback

# One year, the value browsers' preload lists ask for; no includeSubDomains: the console cannot know
# what else runs under its domain.
HSTS_VALUE = b"max-age=31536000"


@dataclass(frozen=True)
class WebTransport:
    """How the web server listens: plain HTTP, or HTTPS with these files (uvicorn's ssl_* options)."""

    plain: bool
    options: dict[str, Any]

    @property
    def scheme(self) -> str:
        return "http" if self.plain else "https"


def web_transport(settings: Settings, *, host: str, plain: bool) -> WebTransport:
    """HTTPS with the web certificate; plain HTTP only if asked for on a loopback `host`.

    Raises BackendError for plain HTTP on any other address: sessions and passwords would cross the
    network in the clear.
    """
    if plain:
        if not is_loopback(host):
            raise BackendError(
                f"plain HTTP is allowed on loopback only, not on {host}: passwords and session cookies "
                "would cross the network unencrypted; unset PENDANT_WEB_PLAIN to serve HTTPS, or listen "
                "on 127.0.0.1"
            )
        return WebTransport(plain=True, options={})
    files = pki.ensure_web(settings)
    return WebTransport(
        plain=False,
        options={"ssl_certfile": str(files.server_cert), "ssl_keyfile": str(files.server_key)},
    )


def harden(context: ssl.SSLContext | None) -> None:
    """TLS 1.2 or later on uvicorn's server context (it sets no minimum of its own)."""
    if context is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2


class HstsMiddleware:
    """Adds Strict-Transport-Security to every answer sent over HTTPS (never over plain HTTP, where
    browsers ignore it anyway). Plain ASGI, so the console's live streams pass through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0].lower() != b"strict-transport-security"
                ]
                message = {**message, "headers": [*headers, (b"strict-transport-security", HSTS_VALUE)]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
