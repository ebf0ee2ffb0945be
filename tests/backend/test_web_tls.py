"""The console and the API over real HTTPS (uvicorn with the project CA's web certificate, both
databases): a client that verifies against the CA gets the pages, HSTS and Secure cookies; a client that
does not trust the CA, plain HTTP on the HTTPS port and TLS 1.0/1.1 get nothing; plain HTTP is refused
beyond loopback, and on loopback (the demo, the browser tests) it sends no HSTS."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator

import httpx
import pytest

from pendant_backend import BackendError
from pendant_backend.settings import Settings
from pendant_backend.web import BackgroundWebServer

from support import PASSWORD, add_account, cli_env, free_port, run_cli


@pytest.fixture
def https_server(engine, pendant_settings: Settings) -> Iterator[BackgroundWebServer]:
    web = BackgroundWebServer(engine, pendant_settings, plain=False)
    web.start()
    try:
        yield web
    finally:
        web.stop()


def trusting_the_ca(settings: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.tls_dir / "ca.crt"))


def _hidden(html: str, name: str = "csrf_token") -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


def _set_cookie(answer: httpx.Response, name: str) -> str:
    headers = [h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(headers) == 1, answer.headers.get_list("set-cookie")
    return headers[0]


def test_the_https_console_verifies_against_the_ca_and_sends_hsts_and_secure_cookies(
    engine, https_server: BackgroundWebServer, pendant_settings: Settings
) -> None:
    assert https_server.url.startswith("https://127.0.0.1:")
    add_account(engine, "dana", "dispatcher")
    with httpx.Client(
        base_url=https_server.url, verify=trusting_the_ca(pendant_settings), follow_redirects=False
    ) as client:
        form = client.get("/login")
        assert form.status_code == 200
        assert form.headers["strict-transport-security"] == "max-age=31536000"
        login_csrf = _set_cookie(form, "pendant_login_csrf")
        answer = client.post(
            "/login", data={"username": "dana", "password": PASSWORD, "csrf_token": _hidden(form.text)}
        )
        assert answer.status_code == 303, answer.text
        session = _set_cookie(answer, "pendant_session")
        assert client.get("/console/whoami").json()["username"] == "dana"
    # The API's answers carry it too, refusals included.
    api = httpx.get(f"{https_server.url}/api/v1/fleet/summary", verify=trusting_the_ca(pendant_settings))
    assert api.status_code == 401
    assert api.headers["strict-transport-security"] == "max-age=31536000"
    for cookie in (login_csrf, session):
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes


def test_a_client_that_does_not_trust_the_ca_gets_nothing(https_server: BackgroundWebServer) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.url}/login", verify=ssl.create_default_context())


def test_plain_http_on_the_https_port_gets_no_page(https_server: BackgroundWebServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{https_server.port}/login", timeout=5)


def _client_up_to(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers TLS 1.0 up to `version` (OpenSSL 3 offers 1.0/1.1 only at SECLEVEL 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version, context.maximum_version = ssl.TLSVersion.TLSv1, version
    return context


def test_tls_1_0_and_1_1_are_refused(https_server: BackgroundWebServer) -> None:
    assert https_server.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", https_server.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        _client_up_to(ssl.TLSVersion.TLSv1_1).wrap_socket(raw)
    # The same client allowed TLS 1.2 gets in: it was the version that was refused.
    raw = socket.create_connection(("127.0.0.1", https_server.port), timeout=5)
    with _client_up_to(ssl.TLSVersion.TLSv1_2).wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"


def test_the_web_certificate_names_loopback_and_the_public_name(
    https_server: BackgroundWebServer, pendant_settings: Settings
) -> None:
    context = trusting_the_ca(pendant_settings)
    for name in ("localhost", "127.0.0.1", pendant_settings.mqtt_public_host):
        raw = socket.create_connection(("127.0.0.1", https_server.port), timeout=5)
        with context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_plain_http_beyond_loopback_is_refused(engine, pendant_settings: Settings, host: str) -> None:
    with pytest.raises(BackendError, match=f"plain HTTP is allowed on loopback only, not on {host}"):
        BackgroundWebServer(engine, pendant_settings, host=host, plain=True)


def test_the_cli_refuses_plain_http_beyond_loopback(
    pendant_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENDANT_WEB_PLAIN", "1")
    result = run_cli(pendant_settings, "backend", "web", "--host", "0.0.0.0", catch_exceptions=True)
    assert result.exit_code == 1
    assert "Error: plain HTTP is allowed on loopback only, not on 0.0.0.0" in result.output
    assert "Traceback" not in result.output


def test_pendant_backend_web_serves_https_with_the_project_ca(pendant_settings: Settings, tmp_path) -> None:
    port = free_port()
    env = {**os.environ, **cli_env(pendant_settings), "PENDANT_API_PORT": str(port)}
    env.pop("PENDANT_WEB_PLAIN", None)
    with open(tmp_path / "web.err", "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", "from pendant_tools.cli import main; main()", "backend", "web"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # The first `pendant backend web` creates the CA: it may not exist yet.
                answer = httpx.get(
                    f"https://localhost:{port}/login", verify=trusting_the_ca(pendant_settings)
                )
                break
            except (httpx.ConnectError, FileNotFoundError) as exc:
                assert "CERTIFICATE_VERIFY_FAILED" not in str(exc), exc
                assert process.poll() is None, (tmp_path / "web.err").read_text()
                assert time.monotonic() < deadline, "the web server did not start within 30 s"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
    finally:
        process.terminate()
        process.wait(timeout=20)
    said = (tmp_path / "web.err").read_text()
    assert f"web: the console at https://127.0.0.1:{port}/" in said
    assert f"browsers and API clients must trust the CA {pendant_settings.tls_dir / 'ca.crt'}" in said


def test_plain_http_on_loopback_sends_no_hsts_and_no_secure_cookie(
    engine, pendant_settings: Settings
) -> None:
    web = BackgroundWebServer(engine, pendant_settings, plain=True)
    web.start()
    try:
        assert web.url.startswith("http://127.0.0.1:")
        form = httpx.get(f"{web.url}/login")
    finally:
        web.stop()
    assert form.status_code == 200
    assert "strict-transport-security" not in form.headers
    assert "secure" not in _set_cookie(form, "pendant_login_csrf").lower()
