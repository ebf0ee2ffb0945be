"""`pendant broker` and `pendant backend`: run the broker, the backend and its HTTP API; API tokens; purge."""

from __future__ import annotations

import signal

import click

from pendant_tools.backend_cli import (
    CONTEXT,
    interrupt,
    open_engine,
    print_json,
    settings_from_env,
    table,
    user_errors,
    when,
)

# ---- pendant broker -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def broker() -> None:
    """Run the Mosquitto broker with the project's config and accounts.

    \b
    Examples:
      pendant broker run
      PENDANT_DATA_DIR=/srv/pendant pendant broker run
    """


@broker.command("run", context_settings=CONTEXT)
@user_errors
def broker_run() -> None:
    """Run the broker in the foreground until Ctrl-C.

    The first run creates the accounts (<data>/secrets/broker.json, mode 0600) and the broker's
    dynamic-security file; later runs keep them. Queued messages survive restarts.

    \b
    Examples:
      pendant broker run
      PENDANT_DATA_DIR=/srv/pendant PENDANT_MQTT_PORT=1883 pendant broker run
    """
    from pendant_backend.broker import Broker

    settings = settings_from_env()
    instance = Broker(settings)
    # SIGTERM (systemd, kill) stops the broker as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        instance.start()
        click.echo(
            f"broker running on {settings.mqtt_address} (pid {instance.pid}); log: {instance.log_path}"
        )
        click.echo("Ctrl-C to stop")
        code = instance.wait()
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
@user_errors
def backend_run() -> None:
    """Run the backend in the foreground until Ctrl-C: ingest, fleet health, escalation, webhooks and
    retention; one log line per alarm received (never a position).

    It keeps a persistent session on the broker: alarms sent while it was stopped arrive when it
    starts again. It waits for the broker if the broker is not up yet. The database is upgraded to the
    newest schema when it starts.

    \b
    Examples:
      pendant backend run
      pendant -v backend run         # with MQTT and database detail
    """
    from pendant_backend.broker import load_secrets
    from pendant_backend.service import BackendService

    settings = settings_from_env()
    load_secrets(settings)  # fail now, with advice, rather than retry for ever
    click.echo(
        f"backend: database {settings.db_url}, broker {settings.mqtt_address}; Ctrl-C to stop", err=True
    )
    BackendService(settings).run()


@backend.command("api", context_settings=CONTEXT)
@click.option("--host", help="Address to listen on (default PENDANT_API_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default PENDANT_API_PORT, 18880).")
@user_errors
def backend_api(host: str | None, port: int | None) -> None:
    """Serve the JSON HTTP API for dispatch and police IT until Ctrl-C.

    Every request needs a token from `pendant backend token create`. Put TLS in front of it (a reverse
    proxy) before it leaves this machine.

    \b
    Examples:
      pendant backend api
      pendant backend api --port 8080
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18880/api/v1/fleet/summary
    """
    from pendant_backend.api import serve

    settings = settings_from_env()
    serve(open_engine(create=True), host=host or settings.api_host, port=port or settings.api_port)


@backend.group("token", context_settings=CONTEXT)
def backend_token() -> None:
    """Create, list and revoke the operators' API tokens.

    \b
    Examples:
      pendant backend token create "J. Jansen"
      pendant backend token list
      pendant backend token revoke "J. Jansen"
    """


@backend_token.command("create", context_settings=CONTEXT)
@click.argument("name")
@user_errors
def token_create(name: str) -> None:
    """Create an API token for operator NAME and print it once (it is stored only as a hash).

    \b
    Examples:
      pendant backend token create "J. Jansen (dispatch)"
    """
    from pendant_backend.tokens import create_token

    token = create_token(open_engine(create=True), name=name, actor=name)
    click.echo(token)
    click.echo(f"token for {name}: store it now, it cannot be shown again", err=True)


@backend_token.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def token_list(as_json: bool) -> None:
    """List the tokens (names and dates; never the tokens).

    \b
    Examples:
      pendant backend token list
    """
    from pendant_backend.tokens import list_tokens

    rows = [
        {
            "name": t.name,
            "created_at": when(t.created_at),
            "last_used_at": when(t.last_used_at),
            "revoked_at": when(t.revoked_at),
        }
        for t in list_tokens(open_engine())
    ]
    if as_json:
        print_json(rows)
        return
    table(["NAME", "CREATED (UTC)", "LAST USED", "REVOKED"], [list(r.values()) for r in rows])


@backend_token.command("revoke", context_settings=CONTEXT)
@click.argument("name")
@user_errors
def token_revoke(name: str) -> None:
    """Revoke operator NAME's token: the API refuses it from now on.

    \b
    Examples:
      pendant backend token revoke "J. Jansen (dispatch)"
    """
    from pendant_backend.tokens import revoke_token

    revoke_token(open_engine(), name=name)
    click.echo(f"revoked the token of {name}")


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
