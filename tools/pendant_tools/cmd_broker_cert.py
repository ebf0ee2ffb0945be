"""`pendant broker cert`: show the broker's TLS certificates, issue a new server certificate, print the CA."""

from __future__ import annotations

import time
from typing import Any

import click

from pendant_tools.backend_cli import CONTEXT, print_json, settings_from_env, table, user_errors

# How long `rotate` waits for the running broker to serve the new certificate after SIGHUP.
RELOAD_WAIT_S = 10.0


@click.group("cert", context_settings=CONTEXT)
def cert() -> None:
    """The broker's TLS certificates: show them, issue a new server certificate, print the CA.

    The first `pendant broker run` creates a project CA in <data>/tls (its key 0600, in a 0700
    folder) and a server certificate signed by it for PENDANT_MQTT_PUBLIC_HOST, localhost and
    127.0.0.1. Pendants and clients trust the CA, not the server certificate: a new server
    certificate changes nothing for them. With PENDANT_TLS_CERT, PENDANT_TLS_KEY and PENDANT_TLS_CA
    the broker serves the operator's own certificate instead.

    \b
    Examples:
      pendant broker cert show            # the CA, the server certificate, what the broker serves
      pendant broker cert rotate          # a new server certificate; the running broker takes it
      pendant broker cert ca > ca.pem     # the CA to give to clients (provisioning gives it to pendants)
    """


@cert.command("show", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def cert_show(as_json: bool) -> None:
    """Show the CA's and the server certificates' subject, names, expiry and SHA-256 fingerprint,
    and the fingerprint of the certificate the running broker serves (compare them after a rotation).

    \b
    Examples:
      pendant broker cert show
      pendant broker cert show --json
    """
    from pendant_backend.broker import served_fingerprint
    from pendant_backend.pki import certificate_facts

    settings = settings_from_env()
    facts = certificate_facts(settings)
    served = served_fingerprint(settings)
    if as_json:
        print_json(
            {
                "source": "operator" if settings.operator_tls else "project CA",
                "certificates": {role: f.to_json() for role, f in facts.items()},
                "served": served,
            }
        )
        return
    if not facts:
        click.echo(f"no certificates in {settings.tls_dir} yet: `pendant broker run` creates them")
        return
    source = (
        "the operator's (PENDANT_TLS_*)" if settings.operator_tls else f"the project CA in {settings.tls_dir}"
    )
    click.echo(f"certificates: {source}")
    rows = []
    for role, f in facts.items():
        left = f.days_left()
        expiry = f"{f.not_after:%Y-%m-%d} ({'EXPIRED' if left <= 0 else f'{left:.0f} days'})"
        rows.append([role, f.subject, ", ".join(f.names) or "-", expiry, f.sha256])
    table(["ROLE", "SUBJECT", "NAMES", "NOT AFTER", "SHA-256"], rows)
    click.echo(_served_line(served, facts))


def _served_line(served: str | None, facts: dict[str, Any]) -> str:
    if served is None:
        return "served: no broker answers on the TLS port"
    server = facts.get("server")
    if server is not None and served == server.sha256:
        return "served: the server certificate above"
    return (
        f"served: {served}, not the one above: reload the broker (`pendant broker cert rotate`) or restart it"
    )


@cert.command("rotate", context_settings=CONTEXT)
@user_errors
def cert_rotate() -> None:
    """Issue a new server key and certificate from the same CA, and make the running broker serve it.

    The CA, the broker accounts and the pendants' credentials stay as they are: pendants trust the
    CA, so they connect to the new certificate as before. A running broker (`pendant broker run` on
    this data folder) gets SIGHUP, which makes Mosquitto read its certificate and key again while
    connected clients stay connected; if none runs, the next start serves the new certificate. With
    the operator's own certificates (PENDANT_TLS_CERT), renew them where they were issued, then run
    this to check them and have the broker read them again.

    \b
    Examples:
      pendant broker cert rotate
      pendant broker cert rotate && pendant broker cert show
    """
    from pendant_backend import pki
    from pendant_backend.broker import reload_certificates

    settings = settings_from_env()
    if settings.operator_tls:
        files = pki.operator_files(settings)
        click.echo(f"checked the operator's certificate {files.server_cert}")
    else:
        files = pki.rotate_server_cert(settings)
        click.echo(f"issued a new server certificate {files.server_cert}")
    wanted = pki.describe(pki.load_certs(files.server_cert, "the server certificate")[0]).sha256
    click.echo(f"  SHA-256 {wanted}")
    pid = reload_certificates(settings, files)
    if pid is None:
        click.echo("no broker runs on this data folder: the next `pendant broker run` serves it")
        return
    if not _wait_served(settings, wanted):
        raise click.ClickException(
            f"the broker (pid {pid}) still serves its old certificate {RELOAD_WAIT_S:.0f} s after SIGHUP: "
            "restart it (`pendant broker run`) to serve the new one"
        )
    click.echo(f"the running broker (pid {pid}) serves it now; connected clients stayed connected")


def _wait_served(settings: Any, fingerprint: str) -> bool:
    from pendant_backend.broker import served_fingerprint

    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        if served_fingerprint(settings) == fingerprint:
            return True
        time.sleep(0.2)
    return False


@cert.command("ca", context_settings=CONTEXT)
@user_errors
def cert_ca() -> None:
    """Print the PEM of the CA that pendants and clients must trust (created on first use).

    Provisioning puts it in every pendant's config; give it to any other MQTT client, and to browsers
    or API clients of the console when it uses the project CA.

    \b
    Examples:
      pendant broker cert ca > pendant-ca.pem
      openssl s_client -connect localhost:8883 -CAfile pendant-ca.pem -verify_return_error </dev/null
      curl --cacert pendant-ca.pem https://localhost:18880/api/v1/fleet/summary
    """
    from pendant_backend.pki import ca_pem

    click.echo(ca_pem(settings_from_env()).decode(), nl=False)
