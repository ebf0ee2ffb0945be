"""`pendant broker`, `backend`, `device` and `alarms`: thin commands over the pendant_backend package.

Settings come from the environment (PENDANT_DATA_DIR, PENDANT_DB_URL, PENDANT_MQTT_HOST, PENDANT_MQTT_PORT).
Every error of the backend package reaches the user as one sentence and exit code 1.
"""

from __future__ import annotations

import functools
import json
import signal
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
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


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
    """Run the backend in the foreground until Ctrl-C; log one line per alarm received.

    It keeps a persistent session on the broker: alarms sent while it was stopped arrive when it
    starts again. It waits for the broker if the broker is not up yet.

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


# ---- pendant device -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def device() -> None:
    """Provision, list and revoke pendants."""


@device.command("provision", context_settings=CONTEXT)
@click.argument("device_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the config.json (default <data>/devices/<id>/config.json).",
)
@click.option("--apn", default="internet", show_default=True, help="The SIM's access point name.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (without the password).")
@user_errors
def device_provision(device_id: str, out: Path | None, apn: str, as_json: bool) -> None:
    """Create DEVICE_ID's broker account and write the pendant's config.json (mode 0600).

    The file holds the device's password and is the only copy of it: copy it onto the pendant's
    flash. DEVICE_ID is 3 to 32 lower-case letters, digits and '-'.

    \b
    Examples:
      pendant device provision pd-0001
      pendant device provision pd-0002 --out /media/usb/config.json
      pendant device provision pd-0003 --json
    """
    from pendant_backend.accounts import check_device_id, provision_device

    settings = _settings()
    check_device_id(device_id)
    path = out or settings.devices_dir / device_id / "config.json"
    config = provision_device(settings, device_id, apn=apn)
    write_private_file(path, (json.dumps(config, separators=(",", ":")) + "\n").encode())
    if as_json:
        _print_json({"device_id": device_id, "config_path": str(path), "mqtt": settings.mqtt_address})
    else:
        click.echo(f"provisioned {device_id}; its config (with its password) is in {path}")


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

    revoke_device(_settings(), device_id)
    click.echo(f"revoked {device_id}")


@device.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def device_list(as_json: bool) -> None:
    """List the pendants: provisioned, revoked, or only seen on the broker.

    \b
    Examples:
      pendant device list
      pendant device list --json
    """
    from pendant_backend.db import engine_for
    from pendant_backend.queries import count_alarms, device_as_dict, list_devices

    engine = engine_for(_settings(), create=False)
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
                online,
                _when(d.last_seen_at),
                d.fw or "-",
                str(count_alarms(engine, device_id=d.device_id)),
            ]
        )
    _table(["DEVICE", "ACCOUNT", "STATUS", "LAST SEEN (UTC)", "FW", "ALARMS"], rows)


# ---- pendant alarms -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def alarms() -> None:
    """List and inspect the alarms the backend has stored."""


def _position(alarm: Any) -> str:
    if alarm.lat is not None:
        return f"{alarm.lat:.6f},{alarm.lon:.6f} ±{alarm.acc} m"
    if alarm.cell:
        return "cell {mcc}/{mnc} {lac}/{cid}".format(**alarm.cell)
    return "-"


@alarms.command("list", context_settings=CONTEXT)
@click.option("--device", "device_id", metavar="ID", help="Only this device's alarms.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="At most N alarms."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def alarms_list(device_id: str | None, limit: int, as_json: bool) -> None:
    """List the newest alarms first.

    \b
    Examples:
      pendant alarms list
      pendant alarms list --device pd-0001 --limit 10
      pendant alarms list --json
    """
    from pendant_backend.db import engine_for
    from pendant_backend.queries import alarm_as_dict, list_alarms

    found = list_alarms(engine_for(_settings(), create=False), device_id=device_id, limit=limit)
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
            a.state,
            _when(a.raised_at),
            _when(a.received_at),
            _position(a),
            f"{a.batt}%" if a.batt is not None else "-",
            str(a.resends),
        ]
        for a in found
    ]
    _table(["ALARM", "KIND", "STATE", "RAISED (UTC)", "RECEIVED (UTC)", "POSITION", "BATT", "RESENDS"], rows)


@alarms.command("show", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def alarms_show(alarm_ref: str, as_json: bool) -> None:
    """Show one alarm: ALARM_REF is DEVICE/ALARM_ID (as `alarms list` prints it) or its number.

    \b
    Examples:
      pendant alarms show pd-0001/12-3
      pendant alarms show 17 --json
    """
    from pendant_backend.db import engine_for
    from pendant_backend.queries import alarm_as_dict, find_alarm

    alarm = find_alarm(engine_for(_settings(), create=False), alarm_ref)
    if alarm is None:
        raise click.ClickException(f"no alarm {alarm_ref}: see `pendant alarms list`")
    data = alarm_as_dict(alarm)
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
        "device_time",
        "position",
        "loc_time",
        "loc_src",
        "cell",
        "batt",
        "resends",
        "payload",
    ):
        click.echo(f"{key + ':':14} {data[key] if data[key] is not None else '-'}")
