"""`pendant broker` and `pendant backend`: run the broker, the backend and its HTTP API; API tokens; purge."""

from __future__ import annotations

import signal

import click

from pendant_tools.backend_cli import (
    CONTEXT,
    cli_actor,
    interrupt,
    open_engine,
    print_json,
    settings_from_env,
    table,
    user_errors,
    when,
)
from pendant_tools.cmd_broker_cert import cert

# ---- pendant broker -------------------------------------------------------------------------------

CERT_CHECK_S = 3600.0


@click.group(context_settings=CONTEXT)
def broker() -> None:
    """Run the Mosquitto broker with the project's config, accounts and TLS certificates.

    Pendants connect over TLS (PENDANT_MQTT_TLS_PORT, 8883) and verify the broker against the project
    CA; the backend and the bench use a plain listener on loopback (PENDANT_MQTT_PORT), which
    PENDANT_MQTT_PLAIN=off switches off.

    \b
    Examples:
      pendant broker run
      PENDANT_DATA_DIR=/srv/pendant PENDANT_MQTT_PUBLIC_HOST=mqtt.example.org pendant broker run
      pendant broker cert show
    """


broker.add_command(cert)


@broker.command("run", context_settings=CONTEXT)
@user_errors
def broker_run() -> None:
    """Run the broker in the foreground until Ctrl-C.

    The first run creates the accounts (<data>/secrets/broker.json, mode 0600), the broker's
    dynamic-security file and the project CA with a server certificate (<data>/tls, the CA key 0600);
    later runs keep them, and issue a new server certificate from the same CA when the old one nears
    its end or no longer names PENDANT_MQTT_PUBLIC_HOST. Queued messages survive restarts.

    \b
    Examples:
      pendant broker run
      PENDANT_MQTT_PUBLIC_HOST=mqtt.example.org pendant broker run    # the name pendants connect to
      PENDANT_MQTT_PLAIN=off pendant broker run                       # TLS only; the backend follows
      PENDANT_TLS_CERT=/etc/pendant/fullchain.pem PENDANT_TLS_KEY=/etc/pendant/key.pem \\
        PENDANT_TLS_CA=/etc/pendant/ca.pem pendant broker run          # the operator's certificate
    """
    from pendant_backend.broker import Broker

    settings = settings_from_env()
    instance = Broker(settings)
    # SIGTERM (systemd, kill) stops the broker as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        instance.start()
        click.echo(f"broker running: {instance.listeners()} (pid {instance.pid}); log: {instance.log_path}")
        click.echo(f"pendants trust the CA {_ca_path(settings)} and connect to {settings.mqtt_public_host}")
        click.echo("Ctrl-C to stop")
        # Hourly: a certificate near its end (or one the operator renewed) is served without a restart.
        while (code := instance.wait(timeout=CERT_CHECK_S)) is None:
            instance.refresh_certificates()
    except KeyboardInterrupt:
        instance.stop()
        click.echo("broker stopped")
        return
    finally:
        # Whatever happens here, never leave the broker running without us.
        instance.stop()
    raise click.ClickException(
        f"the broker exited with code {code}; the end of its log:\n{instance.log_tail()}"
    )


def _ca_path(settings) -> str:  # noqa: ANN001 - Settings, imported lazily
    from pendant_backend.pki import ca_file

    return str(ca_file(settings))


# ---- pendant backend ------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def backend() -> None:
    """Run the backend: MQTT ingest into the database, fleet health, alarms, the HTTP API.

    \b
    Examples:
      pendant backend run                 # ingest, health, escalation, webhooks
      pendant backend api --port 8080     # the JSON API for dispatch and police IT
      pendant backend purge               # apply the retention rules now
    """


@backend.command("run", context_settings=CONTEXT)
@click.option(
    "--ingest-only",
    is_flag=True,
    help="An extra ingest worker: heartbeats, status, events and command results only (no alarms, rules "
    "or webhooks). Run exactly one `pendant backend run` without it.",
)
@click.option(
    "--worker",
    default="main",
    show_default=True,
    metavar="NAME",
    help="This process's name among the ingest workers (its session on the broker): give each worker "
    "its own, and the same one again when it restarts.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=None,
    help="At most this many messages stored in one transaction (default 100; 1 stores one at a time).",
)
@click.option(
    "--standby-poll",
    type=click.FloatRange(0.05, 60),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="As a standby (another backend is active on this database): how often to try to take over.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics; 0 for none (default PENDANT_METRICS_PORT, "
    "18890; none for an --ingest-only worker).",
)
@user_errors
def backend_run(
    ingest_only: bool, worker: str, batch_size: int | None, standby_poll: float, metrics_port: int | None
) -> None:
    """Run the backend in the foreground until Ctrl-C: ingest, fleet health, escalation, webhooks and
    retention; one log line per alarm received (never a position).

    It keeps persistent sessions on the broker: alarms sent while it was stopped arrive when it starts
    again. Alarms have a session and a thread of their own and are stored one at a time; everything
    else is stored in batches through a shared subscription, which extra workers on the same broker and
    database can join (`--ingest-only`) when one core is not enough. A stopped worker's share of the
    messages waits on the broker for that worker: restart it under the same `--worker` name. It waits
    for the broker if the broker is not up yet. The database is upgraded to the newest schema when it
    starts.

    A second `pendant backend run` (without `--ingest-only`) on the same database waits as a standby:
    the active one holds a lock (SQLite: a file lock beside the database, on this machine; PostgreSQL:
    an advisory lock), and when it stops or dies the standby takes it within about a second and carries
    on with the same sessions on the broker, so nothing queued for them is lost.

    \b
    Examples:
      pendant backend run                                  # the one full backend
      pendant backend run --ingest-only --worker w2        # an extra ingest worker beside it
      pendant backend run                                  # again: a standby, until the first stops
      pendant -v backend run         # with MQTT and database detail
    """
    from pendant_backend.broker import load_secrets
    from pendant_backend.broker_endpoint import backend_endpoint
    from pendant_backend.db import shown_url
    from pendant_backend.service import BackendService, check_worker_name

    settings = settings_from_env()
    load_secrets(settings)  # fail now, with advice, rather than retry for ever
    check_worker_name(worker)
    broker_url = backend_endpoint(settings).url
    role = f"ingest worker {worker}" if ingest_only else "backend"
    click.echo(
        f"{role}: database {shown_url(settings.db_url)}, broker {broker_url}; Ctrl-C to stop", err=True
    )
    BackendService(
        settings,
        ingest_only=ingest_only,
        worker=worker,
        batch_size=batch_size,
        standby_poll_s=standby_poll,
        metrics_port=metrics_port,
    ).run()


def _serve_web(host: str | None, port: int | None) -> None:
    from pendant_backend.console.assets import MissingFrontend, check_installed
    from pendant_backend.web import serve
    from pendant_backend.web_tls import web_transport

    settings = settings_from_env()
    try:
        check_installed(settings.frontend_dir)
    except MissingFrontend as exc:
        raise click.ClickException(str(exc)) from None
    # The backend makes the database (`pendant backend run`); the console never makes an empty one.
    engine = open_engine()
    host, port = host or settings.api_host, port or settings.api_port
    transport = web_transport(settings, host=host, plain=settings.web_plain)
    click.echo(
        f"web: the console at {transport.scheme}://{host}:{port}/ and the API under /api/v1; Ctrl-C to stop",
        err=True,
    )
    if not transport.plain and not settings.operator_tls:
        click.echo(f"web: browsers and API clients must trust the CA {settings.tls_dir / 'ca.crt'}", err=True)
    serve(engine, settings, host=host, port=port, transport=transport)


WEB_OPTIONS = (
    click.option("--host", help="Address to listen on (default PENDANT_API_HOST, 127.0.0.1)."),
    click.option("--port", type=click.IntRange(1, 65535), help="Port (default PENDANT_API_PORT, 18880)."),
)


def _web_options(command):  # noqa: ANN001, ANN202 - a click decorator
    for option in reversed(WEB_OPTIONS):
        command = option(command)
    return command


@backend.command("web", context_settings=CONTEXT)
@_web_options
@user_errors
def backend_web(host: str | None, port: int | None) -> None:
    """Serve the operator console and the JSON API until Ctrl-C.

    The console (log in with an account from `pendant user add`) shows alarms live, on a map, and the
    fleet's health; the API answers requests with a token from `pendant backend token create`. Its
    front-end files come from `npm ci` (scripts/setup.sh). Run `pendant backend run` beside it: that
    is what receives the alarms.

    It serves HTTPS (TLS 1.2 or later, HSTS, Secure cookies) with a certificate from the project CA
    (`pendant broker cert ca` prints the CA for browsers and API clients) or the operator's own
    (PENDANT_TLS_CERT/_KEY/_CA). Plain HTTP only with PENDANT_WEB_PLAIN=1 and on a loopback address.

    \b
    Examples:
      pendant backend web
      pendant backend web --host 0.0.0.0 --port 8443
      curl --cacert ca.pem -H "Authorization: Bearer $TOKEN" https://localhost:18880/api/v1/fleet/summary
      PENDANT_WEB_PLAIN=1 pendant backend web     # plain HTTP on 127.0.0.1, for a local test
    """
    _serve_web(host, port)


@backend.command("api", context_settings=CONTEXT)
@_web_options
@user_errors
def backend_api(host: str | None, port: int | None) -> None:
    """The same as `pendant backend web` (its earlier name): the console and the API.

    \b
    Examples:
      pendant backend api
      pendant backend api --port 8080
    """
    _serve_web(host, port)


@backend.group("token", context_settings=CONTEXT)
def backend_token() -> None:
    """Create, list and revoke API tokens. A token belongs to an account (`pendant user add`) and has
    its roles at every request: disable the account or change its roles and the token follows.

    \b
    Examples:
      pendant backend token create jjansen --label "dispatch desk 2"
      pendant backend token list
      pendant backend token revoke "dispatch desk 2"
    """


@backend_token.command("create", context_settings=CONTEXT)
@click.argument("username")
@click.option("--label", help="The token's name, to tell several apart and to revoke it (default: USERNAME).")
@user_errors
def token_create(username: str, label: str | None) -> None:
    """Create an API token for the account USERNAME and print it once (it is stored only as a hash).

    Requests with it act as that account, with its roles; acks and resolutions record its username.

    \b
    Examples:
      pendant backend token create jjansen
      pendant backend token create cad-link --label "CAD integration"
    """
    from pendant_backend.tokens import create_token

    token = create_token(open_engine(), username=username, label=label, actor=cli_actor())
    click.echo(token)
    click.echo(
        f"token {label or username!r} for the account {username}: store it now, it cannot be shown again",
        err=True,
    )


@backend_token.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def token_list(as_json: bool) -> None:
    """List the tokens: label, account and dates (never the tokens).

    \b
    Examples:
      pendant backend token list
      pendant backend token list --json
    """
    from pendant_backend.tokens import list_tokens

    rows = [
        {
            "name": t.name,
            "account": username,
            "created_at": when(t.created_at),
            "last_used_at": when(t.last_used_at),
            "revoked_at": when(t.revoked_at),
        }
        for t, username in list_tokens(open_engine())
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no tokens yet: create one with `pendant backend token create USERNAME`")
        return
    table(
        ["LABEL", "ACCOUNT", "CREATED (UTC)", "LAST USED", "REVOKED"],
        [[r["name"], r["account"] or "-", r["created_at"], r["last_used_at"], r["revoked_at"]] for r in rows],
    )


@backend_token.command("revoke", context_settings=CONTEXT)
@click.argument("label")
@user_errors
def token_revoke(label: str) -> None:
    """Revoke the token named LABEL (as `token list` shows it): the API refuses it from now on.

    \b
    Examples:
      pendant backend token revoke jjansen
      pendant backend token revoke "CAD integration"
    """
    from pendant_backend.tokens import revoke_token

    revoke_token(open_engine(), name=label, actor=cli_actor())
    click.echo(f"revoked the token {label!r}")


@backend.command("purge", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@user_errors
def backend_purge(as_json: bool) -> None:
    """Apply the retention rules now (the running backend does so every hour).

    Heartbeats older than PENDANT_RETAIN_HEARTBEATS_DAYS and trail points of resolved alarms older than
    PENDANT_RETAIN_LOCATIONS_DAYS are deleted; an audit event records it.

    \b
    Examples:
      pendant backend purge
    """
    from pendant_backend.models import utc_now
    from pendant_backend.retention import purge

    settings = settings_from_env()
    counts = purge(
        open_engine(),
        now=utc_now(),
        heartbeats_days=settings.retain_heartbeats_days,
        locations_days=settings.retain_locations_days,
    )
    if as_json:
        print_json(counts)
    else:
        click.echo("purged " + ", ".join(f"{n} {what}" for what, n in counts.items()))
