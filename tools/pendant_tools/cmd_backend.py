"""`pendant broker`, `backend`, `device` and `alarms`: thin commands over the pendant_backend package.

Settings come from the environment (PENDANT_DATA_DIR, PENDANT_DB_URL, PENDANT_MQTT_HOST, PENDANT_MQTT_PORT
and the others of docs/operations.md). Every error of the backend package reaches the user as one
sentence and exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from pendant_backend import BackendError
from pendant_backend.settings import Settings, write_private_file

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _settings() -> Settings:
    return Settings.from_env()


def user_errors(command: F) -> F:
    """Turn the backend's errors into one line on stderr and exit code 1 (never a traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BackendError as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyError as exc:
            raise click.ClickException(
                f"the database failed: {exc.__class__.__name__}: {exc.args[0]}"
            ) from None

    return wrapper  # type: ignore[return-value]


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _when(moment: Any) -> str:
    from pendant_backend.models import as_utc

    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def _engine(create: bool = False) -> Any:
    from pendant_backend.db import engine_for

    return engine_for(_settings(), create=create)


OPERATOR = click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    required=True,
    help="Your name, recorded in the audit log (or set PENDANT_OPERATOR).",
)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# ---- pendant broker -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def broker() -> None:
    """Run the Mosquitto broker with the project's config and accounts."""


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

    settings = _settings()
    instance = Broker(settings)
    # SIGTERM (systemd, kill) stops the broker as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
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
    """Run the backend: MQTT ingest into the database."""


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

    settings = _settings()
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

    settings = _settings()
    serve(_engine(create=True), host=host or settings.api_host, port=port or settings.api_port)


@backend.group("token", context_settings=CONTEXT)
def backend_token() -> None:
    """Create, list and revoke the operators' API tokens."""


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

    token = create_token(_engine(create=True), name=name, actor=name)
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
            "created_at": _when(t.created_at),
            "last_used_at": _when(t.last_used_at),
            "revoked_at": _when(t.revoked_at),
        }
        for t in list_tokens(_engine())
    ]
    if as_json:
        _print_json(rows)
        return
    _table(["NAME", "CREATED (UTC)", "LAST USED", "REVOKED"], [list(r.values()) for r in rows])


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

    revoke_token(_engine(), name=name)
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

    settings = _settings()
    counts = purge(
        _engine(),
        now=utc_now(),
        heartbeats_days=settings.retain_heartbeats_days,
        locations_days=settings.retain_locations_days,
    )
    if as_json:
        _print_json(counts)
    else:
        click.echo("purged " + ", ".join(f"{n} {what}" for what, n in counts.items()))


# ---- pendant device -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def device() -> None:
    """Register, provision, issue, inspect and revoke pendants."""


@device.command("provision", context_settings=CONTEXT)
@click.argument("device_ids", metavar="DEVICE_ID...", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the config.json of one device (default <data>/devices/<id>/config.json).",
)
@click.option("--apn", default="internet", show_default=True, help="The SIM's access point name.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (without the password).")
@user_errors
def device_provision(device_ids: tuple[str, ...], out: Path | None, apn: str, as_json: bool) -> None:
    """Create each device's broker account and write its config.json (mode 0600).

    The file holds the device's password and is the only copy of it: copy it onto the pendant's
    flash. A DEVICE_ID is 3 to 32 lower-case letters, digits and '-'. Several ids are provisioned over
    one broker connection, with a progress bar.

    \b
    Examples:
      pendant device provision pd-0001
      pendant device provision pd-0002 --out /media/usb/config.json
      pendant device provision pd-0003 --json
      pendant device provision $(seq -f "pd-%04g" 100 199)
    """
    from pendant_backend.accounts import check_device_id, provision_devices, write_device_config

    settings = _settings()
    for device_id in device_ids:
        check_device_id(device_id)
    if out is not None and len(device_ids) > 1:
        raise click.UsageError("--out names the file of one device; give one DEVICE_ID with it")
    results = []
    configs = provision_devices(settings, device_ids, apn=apn, engine=_engine(create=True))
    # A progress bar for a batch (on stderr, so that --json output stays clean).
    bar = click.progressbar(configs, length=len(device_ids), label="provisioning", file=sys.stderr)
    with bar if len(device_ids) > 1 else contextlib.nullcontext(configs) as items:
        for config in items:
            path = out or settings.devices_dir / config["device_id"] / "config.json"
            write_device_config(path, config)
            results.append(
                {"device_id": config["device_id"], "config_path": str(path), "mqtt": settings.mqtt_address}
            )
    if as_json:
        _print_json(results[0] if len(results) == 1 else results)
        return
    for result in results:
        click.echo(
            f"provisioned {result['device_id']}; its config (with its password) is in {result['config_path']}"
        )


@device.command("rotate", context_settings=CONTEXT)
@click.argument("device_id")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the new config.json."
)
@click.option("--apn", default="internet", show_default=True, help="The SIM's access point name.")
@user_errors
def device_rotate(device_id: str, out: Path | None, apn: str) -> None:
    """Give DEVICE_ID a new random password and write its new config.json (mode 0600).

    The broker drops a connection made with the old password; the pendant gets back in only once the
    new config.json is on its flash.

    \b
    Examples:
      pendant device rotate pd-0001
      pendant device rotate pd-0001 --out /media/usb/config.json
    """
    from pendant_backend.accounts import rotate_device, write_device_config

    settings = _settings()
    config = rotate_device(settings, device_id, apn=apn, engine=_engine(create=True))
    path = out or settings.devices_dir / device_id / "config.json"
    write_device_config(path, config)
    click.echo(f"rotated {device_id}; its new config (with its password) is in {path}")


@device.command("revoke", context_settings=CONTEXT)
@click.argument("device_id")
@user_errors
def device_revoke(device_id: str) -> None:
    """Delete DEVICE_ID's broker account: the broker refuses it from now on and drops it if connected.

    Its alarms stay in the database.

    \b
    Examples:
      pendant device revoke pd-0001
    """
    from pendant_backend.accounts import revoke_device

    revoke_device(_settings(), device_id, engine=_engine(create=True))
    click.echo(f"revoked {device_id}")


@device.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def device_list(as_json: bool) -> None:
    """List the pendants: provisioned, revoked, or only seen on the broker (`pendant fleet` adds health).

    \b
    Examples:
      pendant device list
      pendant device list --json
    """
    from pendant_backend.queries import count_alarms, device_as_dict, list_devices

    engine = _engine()
    devices = list_devices(engine)
    if as_json:
        _print_json(
            [{**device_as_dict(d), "alarms": count_alarms(engine, device_id=d.device_id)} for d in devices]
        )
        return
    if not devices:
        click.echo("no devices yet: provision one with `pendant device provision pd-0001`")
        return
    rows = []
    for d in devices:
        account = "revoked" if d.revoked_at else "provisioned" if d.provisioned_at else "seen only"
        online = {True: "online", False: "offline", None: "-"}[d.online]
        rows.append(
            [
                d.device_id,
                account,
                d.loan_state,
                online,
                _when(d.last_seen_at),
                d.fw or "-",
                str(count_alarms(engine, device_id=d.device_id)),
            ]
        )
    _table(["DEVICE", "ACCOUNT", "LOAN", "STATUS", "LAST SEEN (UTC)", "FW", "ALARMS"], rows)


SHOW_ORDER = (
    "device_id",
    "loan_state",
    "case_ref",
    "imei",
    "iccid",
    "phone",
    "hardware_rev",
    "firmware_version",
    "provisioned_at",
    "issued_at",
    "renewal_due",
    "recall",
    "returned_at",
    "decommissioned_at",
    "revoked_at",
    "rotated_at",
    "erased_at",
    "connectivity",
    "online",
    "fw",
    "boot",
    "first_seen_at",
    "last_seen_at",
    "last_heartbeat_at",
    "last_fix_at",
    "last_test_alarm_at",
    "health",
    "health_changed_at",
    "config_rev",
    "config_applied_rev",
    "config_error",
)


@device.command("show", context_settings=CONTEXT)
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def device_show(device_id: str, as_json: bool) -> None:
    """Show one pendant: registry, loan, account, health, config and bench-test reports.

    \b
    Examples:
      pendant device show pd-0001
      pendant device show pd-0001 --json
    """
    from pendant_backend import monitor, registry
    from pendant_backend.queries import device_as_dict

    engine = _engine()
    data = device_as_dict(registry.get_device(engine, device_id=device_id))
    data["bench_reports"] = [
        {
            "id": r.id,
            "created_at": _when(r.created_at),
            "actor": r.actor,
            "passed": r.passed,
            "signature_ok": registry.verify_report(_settings(), r),
        }
        for r in registry.bench_reports(engine, device_id=device_id)
    ]
    data["health_events"] = [
        {"at": _when(e.at), "aspect": e.aspect, "old": e.old, "new": e.new}
        for e in monitor.health_events(engine, device_id=device_id, limit=10)
    ]
    if as_json:
        _print_json(data)
        return
    for key in SHOW_ORDER:
        value = data.get(key)
        click.echo(f"{key + ':':20} {value if value is not None else '-'}")
    click.echo("recent health events:" + ("" if data["health_events"] else " none"))
    for event in data["health_events"]:
        click.echo(f"  {event['at']}  {event['aspect']}: {event['old'] or '-'} -> {event['new']}")
    click.echo("bench reports:" + ("" if data["bench_reports"] else " none"))
    for report in data["bench_reports"]:
        verdict = "passed" if report["passed"] else "FAILED"
        signed = "signature ok" if report["signature_ok"] else "SIGNATURE BROKEN"
        click.echo(f"  #{report['id']} {report['created_at']} by {report['actor']}: {verdict}, {signed}")


REGISTRY_OPTIONS = [
    click.option("--imei", help="15 digits."),
    click.option("--iccid", help="The SIM's ICCID, 18 to 20 digits."),
    click.option("--phone", help="The SIM's phone number, + and digits."),
    click.option("--hw", "hardware_rev", help="Hardware revision."),
    click.option("--fw", "firmware_version", help="The firmware version it should run."),
]


def _registry_options(command: F) -> F:
    for option in reversed(REGISTRY_OPTIONS):
        command = option(command)
    return command


@device.command("register", context_settings=CONTEXT)
@click.argument("device_id")
@_registry_options
@OPERATOR
@user_errors
def device_register(device_id: str, operator: str, **fields: str | None) -> None:
    """Add a pendant to the registry, in stock.

    \b
    Examples:
      pendant device register pd-0001 --imei 861234567890123 --iccid 8931081234567890123 --operator it
    """
    from pendant_backend.models import DeviceCreate
    from pendant_backend.registry import register_device

    register_device(_engine(create=True), device=DeviceCreate(device_id=device_id, **fields), actor=operator)
    click.echo(f"registered {device_id} (in stock)")


@device.command("set", context_settings=CONTEXT)
@click.argument("device_id")
@_registry_options
@click.option("--case", "case_ref", help="Case reference (never a name or an address).")
@OPERATOR
@user_errors
def device_set(device_id: str, operator: str, **fields: str | None) -> None:
    """Change registry fields of a pendant.

    \b
    Examples:
      pendant device set pd-0001 --fw 0.2.0 --operator it
      pendant device set pd-0001 --phone +31612345678 --operator it
    """
    from pendant_backend.models import DeviceUpdate
    from pendant_backend.registry import update_device

    update_device(_engine(), device_id=device_id, changes=DeviceUpdate(**fields), actor=operator)
    click.echo(f"updated {device_id}")


def _date(value: str | None) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2027-03-31") from None


@device.command("issue", context_settings=CONTEXT)
@click.argument("device_id")
@click.option("--case", "case_ref", required=True, help="The police case reference (never a name).")
@click.option("--renewal", help="Date the loan must be renewed by (YYYY-MM-DD).")
@OPERATOR
@user_errors
def device_issue(device_id: str, case_ref: str, renewal: str | None, operator: str) -> None:
    """Lend a provisioned pendant for a case.

    \b
    Examples:
      pendant device issue pd-0001 --case 2026-000123 --renewal 2027-03-31 --operator it
    """
    from pendant_backend.registry import set_loan_state

    set_loan_state(
        _engine(),
        device_id=device_id,
        state="issued",
        case_ref=case_ref,
        renewal_due=_date(renewal),
        actor=operator,
    )
    click.echo(f"issued {device_id} for case {case_ref}")


@device.command("loan", context_settings=CONTEXT)
@click.argument("device_id")
@click.argument("state", type=click.Choice(["returned", "in_stock", "provisioned", "decommissioned"]))
@OPERATOR
@user_errors
def device_loan(device_id: str, state: str, operator: str) -> None:
    """Move a pendant along its loan: returned, back in stock, provisioned, or decommissioned.

    \b
    Examples:
      pendant device loan pd-0001 returned --operator it
      pendant device loan pd-0001 decommissioned --operator it
    """
    from pendant_backend.registry import set_loan_state

    set_loan_state(_engine(), device_id=device_id, state=state, actor=operator)
    click.echo(f"{device_id} is now {state}")


@device.command("renew", context_settings=CONTEXT)
@click.argument("device_id")
@click.option("--until", "until", required=True, help="New renewal date (YYYY-MM-DD).")
@OPERATOR
@user_errors
def device_renew(device_id: str, until: str, operator: str) -> None:
    """Set the date by which the loan must be renewed.

    \b
    Examples:
      pendant device renew pd-0001 --until 2027-09-30 --operator it
    """
    from pendant_backend.registry import set_renewal

    set_renewal(_engine(), device_id=device_id, renewal_due=_date(until), actor=operator)
    click.echo(f"{device_id}: renewal due {until}")


@device.command("recall", context_settings=CONTEXT)
@click.argument("device_id")
@click.option("--clear", is_flag=True, help="Remove the recall flag.")
@OPERATOR
@user_errors
def device_recall(device_id: str, clear: bool, operator: str) -> None:
    """Flag a pendant to be brought back (or clear the flag).

    \b
    Examples:
      pendant device recall pd-0001 --operator it
      pendant device recall pd-0001 --clear --operator it
    """
    from pendant_backend.registry import set_recall

    set_recall(_engine(), device_id=device_id, recall=not clear, actor=operator)
    click.echo(f"{device_id}: recall {'cleared' if clear else 'flagged'}")


def _config_value(text: str) -> tuple[str, Any]:
    from pendant_backend.configs import LIST_FIELDS

    key, sep, value = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE")
    if key in LIST_FIELDS:
        return key, [v for v in value.split(",") if v]
    try:
        return key, int(value)
    except ValueError:
        raise click.BadParameter(f"{key} takes a whole number, not {value!r}") from None


@device.command("config", context_settings=CONTEXT)
@click.argument("device_id", required=False)
@click.option("--fleet", is_flag=True, help="The fleet-default document instead of one device's.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Set a field (lists: a,b).")
@click.option("--unset", multiple=True, metavar="KEY", help="Remove a field (the default applies again).")
@click.option("--operator", envvar="PENDANT_OPERATOR", help="Your name (needed to change a config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def device_config(
    device_id: str | None,
    fleet: bool,
    assignments: tuple[str, ...],
    unset: tuple[str, ...],
    operator: str | None,
    as_json: bool,
) -> None:
    """Show or change a device's config overrides or the fleet default; changes are published retained.

    Fields: heartbeat_s, ack_timeout_s, press_ms, sms, call, callback, batt_low, batt_critical, loc_s.

    \b
    Examples:
      pendant device config pd-0001
      pendant device config --fleet --set heartbeat_s=300 --set call=112 --operator it
      pendant device config pd-0001 --set sms=+31612345678,+31687654321 --operator it
      pendant device config pd-0001 --unset sms --operator it
    """
    from pendant_backend import configs

    if fleet == (device_id is not None):
        raise click.UsageError("name one DEVICE_ID, or --fleet")
    engine = _engine(create=True)
    if assignments or unset:
        if not operator:
            raise click.UsageError("say who changes the config: --operator NAME (or PENDANT_OPERATOR)")
        changes = dict(_config_value(a) for a in assignments)
        document, published = configs.set_config(
            engine, scope=configs.FLEET if fleet else device_id, changes=changes, unset=unset, author=operator
        )
        click.echo(f"{document.scope} config version {document.version}; published to {published} device(s)")
        return
    view = (
        configs.fleet_config_view(engine)
        if fleet
        else configs.device_config_view(engine, device_id=device_id)
    )
    if as_json:
        _print_json(view)
        return
    for key, value in view.items():
        click.echo(f"{key + ':':16} {json.dumps(value, ensure_ascii=False)}")


@device.command("erase", context_settings=CONTEXT)
@click.argument("device_id")
@click.option("--reason", required=True, help="Why (e.g. the request's reference); kept as a digest.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@OPERATOR
@user_errors
def device_erase(device_id: str, reason: str, yes: bool, operator: str) -> None:
    """Erase a pendant's data on request: alarms, trails, heartbeats, health events, case reference.

    The audit log keeps a record that (and by whom) it was erased. Refused while an alarm is open.

    \b
    Examples:
      pendant device erase pd-0001 --reason "request 2026-77" --operator it
    """
    from pendant_backend.retention import erase_device

    if not yes:
        click.confirm(f"erase every alarm, position and heartbeat of {device_id}?", abort=True)
    counts = erase_device(_engine(), device_id=device_id, actor=operator, reason=reason)
    click.echo(f"erased {device_id}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


# ---- pendant alarms -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def alarms() -> None:
    """List, acknowledge, resolve, export and verify alarms."""


def _position(alarm: Any) -> str:
    if alarm.lat is not None:
        return f"{alarm.lat:.6f},{alarm.lon:.6f} ±{alarm.acc} m"
    if alarm.cell:
        return "cell {mcc}/{mnc} {lac}/{cid}".format(**alarm.cell)
    return "-"


@alarms.command("list", context_settings=CONTEXT)
@click.option("--device", "device_id", metavar="ID", help="Only this device's alarms.")
@click.option(
    "--state", type=click.Choice(["received", "acknowledged", "resolved"]), help="Only in this state."
)
@click.option("--open", "open_only", is_flag=True, help="Only alarms not resolved yet.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="At most N alarms."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def alarms_list(device_id: str | None, state: str | None, open_only: bool, limit: int, as_json: bool) -> None:
    """List the newest alarms first.

    \b
    Examples:
      pendant alarms list
      pendant alarms list --open
      pendant alarms list --device pd-0001 --limit 10
      pendant alarms list --json
    """
    from pendant_backend.queries import alarm_as_dict, list_alarms

    found = list_alarms(_engine(), device_id=device_id, state=state, open_only=open_only, limit=limit)
    if as_json:
        _print_json([alarm_as_dict(a) for a in found])
        return
    if not found:
        click.echo("no alarms")
        return
    rows = [
        [
            a.ref,
            a.kind + (" (test)" if a.test else ""),
            a.state + (f" ({a.acknowledged_by})" if a.acknowledged_by else ""),
            _when(a.raised_at),
            _when(a.received_at),
            _position(a),
            f"{a.batt}%" if a.batt is not None else "-",
            str(a.escalations),
        ]
        for a in found
    ]
    _table(
        ["ALARM", "KIND", "STATE", "RAISED (UTC)", "RECEIVED (UTC)", "POSITION", "BATT", "ESCALATED"], rows
    )


def _find_alarm(ref: str) -> Any:
    from pendant_backend.queries import find_alarm

    alarm = find_alarm(_engine(), ref)
    if alarm is None:
        raise click.ClickException(f"no alarm {ref}: see `pendant alarms list`")
    return alarm


@alarms.command("show", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def alarms_show(alarm_ref: str, as_json: bool) -> None:
    """Show one alarm and its location trail: ALARM_REF is DEVICE/ALARM_ID (as `alarms list` prints it)
    or its number.

    \b
    Examples:
      pendant alarms show pd-0001/12-3
      pendant alarms show 17 --json
    """
    from pendant_backend.alarms import trail
    from pendant_backend.models import iso
    from pendant_backend.queries import alarm_as_dict

    alarm = _find_alarm(alarm_ref)
    data = alarm_as_dict(alarm)
    data["trail"] = [
        {"at": iso(p.received_at), "lat": p.lat, "lon": p.lon, "acc": p.acc, "source": p.source}
        for p in trail(_engine(), alarm_pk=alarm.id)
    ]
    if as_json:
        _print_json(data)
        return
    data["position"] = _position(alarm)
    data["payload"] = alarm.payload.strip()
    for key in (
        "ref",
        "id",
        "kind",
        "test",
        "state",
        "raised_at",
        "received_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "resolution",
        "note",
        "escalations",
        "id_collision",
        "device_time",
        "position",
        "loc_time",
        "loc_src",
        "cell",
        "batt",
        "resends",
        "payload",
    ):
        click.echo(f"{key + ':':16} {data[key] if data[key] is not None else '-'}")
    click.echo(f"trail:           {len(data['trail'])} point(s)")
    for point in data["trail"]:
        click.echo(
            f"  {point['at']}  {point['lat']:.6f},{point['lon']:.6f} ±{point['acc']} m  ({point['source']})"
        )


@alarms.command("ack", context_settings=CONTEXT)
@click.argument("alarm_ref")
@OPERATOR
@user_errors
def alarms_ack(alarm_ref: str, operator: str) -> None:
    """Acknowledge an alarm: you take it. The pendant is told (it vibrates 'acknowledged').

    \b
    Examples:
      pendant alarms ack pd-0001/12-3 --operator "J. Jansen"
    """
    from pendant_backend.alarms import acknowledge_alarm

    alarm = acknowledge_alarm(_engine(), ref=alarm_ref, operator=operator)
    click.echo(f"alarm {alarm.ref} acknowledged by {operator}")


@alarms.command("resolve", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option(
    "--class",
    "resolution",
    required=True,
    type=click.Choice(["incident", "precautionary", "false", "test"]),
    help="What it turned out to be.",
)
@click.option("--note", default="", help="What happened (kept with the alarm, digest in the audit log).")
@OPERATOR
@user_errors
def alarms_resolve(alarm_ref: str, resolution: str, note: str, operator: str) -> None:
    """Resolve an acknowledged alarm with a class and a note.

    \b
    Examples:
      pendant alarms resolve pd-0001/12-3 --class incident --note "unit 12 on site" --operator "J. Jansen"
      pendant alarms resolve 17 --class test --operator bench
    """
    from pendant_backend.alarms import resolve_alarm

    alarm = resolve_alarm(_engine(), ref=alarm_ref, operator=operator, resolution=resolution, note=note)
    click.echo(f"alarm {alarm.ref} resolved as {resolution} by {operator}")


@alarms.command("export", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file to write."
)
@OPERATOR
@user_errors
def alarms_export(alarm_ref: str, out: Path, operator: str) -> None:
    """Write one alarm, its trail and its audit events to a signed file for a case (mode 0600).

    Check it at any time with `pendant alarms verify FILE`.

    \b
    Examples:
      pendant alarms export pd-0001/12-3 --out case-2026-000123.json --operator "J. Jansen"
    """
    from pendant_backend.export import export_alarm

    document = export_alarm(_settings(), _engine(), ref=alarm_ref, actor=operator)
    write_private_file(out, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())
    click.echo(f"exported {document['alarm']['ref']} with {len(document['events'])} audit events to {out}")


@alarms.command("verify", context_settings=CONTEXT)
@click.argument("export_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, help="Check an export file without comparing it to the database.")
@user_errors
def alarms_verify(export_file: Path | None, offline: bool) -> None:
    """Verify the audit chain: of the whole database, or of an export file (and that the database
    still agrees with it). Exit code 0 when intact, 2 when anything was altered or removed.

    \b
    Examples:
      pendant alarms verify
      pendant alarms verify case-2026-000123.json
      pendant alarms verify case-2026-000123.json --offline
    """
    from pendant_backend.audit import chain_head, verify_database
    from pendant_backend.export import verify_export

    if export_file is None:
        engine = _engine()
        problems = verify_database(engine)
        seq, head = chain_head(engine)
        what = f"the database's audit chain ({seq} events, head {head[:16]})"
    else:
        try:
            document = json.loads(export_file.read_text())
        except ValueError as exc:
            raise click.ClickException(f"{export_file} is not JSON: {exc}") from None
        problems = verify_export(_settings(), document, engine=None if offline else _engine())
        what = f"{export_file}"
    if problems:
        for problem in problems:
            click.echo(f"FAILED: {problem}")
        click.echo(f"{what}: {len(problems)} problem(s)", err=True)
        raise SystemExit(2)
    click.echo(f"{what}: intact")
