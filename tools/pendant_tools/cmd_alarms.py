"""`pendant alarms`: list, show, acknowledge, resolve, export and verify alarms (the last two, and the
public key that checks exports, in cmd_evidence).

Where a victim is stays out of every listing: `alarms show` shows an alarm's position and trail only
to an `--operator` whose account may see locations (a dispatcher or a supervisor), and each such view
is an audit event, as in the console and the API. Acks, resolutions and exports run as the account
`--operator` names."""

from __future__ import annotations

from typing import Any

import click

from pendant_tools.backend_cli import (
    CONTEXT,
    OPERATOR,
    open_engine,
    pendant_time,
    print_json,
    run_as,
    table,
    user_errors,
    when,
)
from pendant_tools.cmd_evidence import alarms_export, alarms_public_key, alarms_verify

# What an alarm says about where the person is: shown only through pendant_backend.locations.
LOCATION_FIELDS = ("lat", "lon", "acc", "loc_time", "loc_src", "cell", "payload")

# ---- pendant alarms -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def alarms() -> None:
    """List, acknowledge, resolve, export and verify alarms.

    \b
    Examples:
      pendant alarms list --open
      pendant alarms show pd-0001/12-3 --operator jjansen
      pendant alarms ack pd-0001/12-3 --operator jjansen
      pendant alarms export pd-0001/12-3 --out case.json --operator supervisor1
      pendant alarms verify case.json --public-key pendant-export-key.pem
    """


def _position(alarm: Any) -> str:
    if alarm.lat is not None:
        return f"{alarm.lat:.6f},{alarm.lon:.6f} ±{alarm.acc} m"
    if alarm.cell:
        return "cell {mcc}/{mnc} {lac}/{cid}".format(**alarm.cell)
    return "-"


def without_location(data: dict[str, Any]) -> dict[str, Any]:
    """An alarm's data without anything that tells where the person is."""
    return {key: value for key, value in data.items() if key not in LOCATION_FIELDS}


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
    """List the newest alarms first. LOCATION says whether an alarm came with a fix (`gnss`), only its
    cell (`cell`) or nothing (`none`), as the API's `location_kind` does;
    the position itself is in `pendant alarms show ... --operator` (recorded in the audit log).

    \b
    Examples:
      pendant alarms list
      pendant alarms list --open
      pendant alarms list --device pd-0001 --limit 10
      pendant alarms list --json
    """
    from pendant_backend.locations import location_kind
    from pendant_backend.queries import alarm_as_dict, list_alarms

    found = list_alarms(open_engine(), device_id=device_id, state=state, open_only=open_only, limit=limit)
    if as_json:
        print_json([{**without_location(alarm_as_dict(a)), "location": location_kind(a)} for a in found])
        return
    if not found:
        click.echo("no alarms")
        return
    rows = [
        [
            a.ref,
            a.kind + (" (test)" if a.test else ""),
            a.state + (f" ({a.acknowledged_by})" if a.acknowledged_by else ""),
            when(a.raised_at),
            when(a.received_at),
            location_kind(a),
            f"{a.batt}%" if a.batt is not None else "-",
            str(a.escalations),
        ]
        for a in found
    ]
    table(["ALARM", "KIND", "STATE", "RAISED (UTC)", "RECEIVED (UTC)", "LOCATION", "BATT", "ESCALATED"], rows)


def _find_alarm(engine: Any, ref: str) -> Any:
    from pendant_backend.queries import find_alarm

    alarm = find_alarm(engine, ref)
    if alarm is None:
        raise click.ClickException(f"no alarm {ref}: see `pendant alarms list`")
    return alarm


SHOW_ORDER = (
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
    "set_aside",
    "device_time",
    "batt",
    "resends",
    "fallback",
)
LOCATION_ORDER = ("position", "loc_time", "loc_src", "cell", "payload")


@alarms.command("show", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    metavar="USERNAME",
    help="Your account, to see the position and the trail: a dispatcher or a supervisor; the view is "
    "recorded in the audit log (or set PENDANT_OPERATOR).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def alarms_show(alarm_ref: str, operator: str | None, as_json: bool) -> None:
    """Show one alarm: ALARM_REF is DEVICE/ALARM_ID (as `alarms list` prints it) or its number.

    `set_aside` names the fields the pendant sent broken (`location invalid`, `battery invalid`,
    `time invalid`, ...): left out of the alarm and not to be trusted; the payload keeps them as sent.

    Its position and location trail are shown only with --operator naming a dispatcher's or a
    supervisor's account, and every such view is an audit event.

    \b
    Examples:
      pendant alarms show pd-0001/12-3
      pendant alarms show pd-0001/12-3 --operator jjansen
      pendant alarms show 17 --json
    """
    from pendant_backend import locations
    from pendant_backend.models import iso
    from pendant_backend.queries import alarm_as_dict

    engine = open_engine()
    alarm = _find_alarm(engine, alarm_ref)
    data = without_location(alarm_as_dict(alarm))
    data["location"] = locations.location_kind(alarm)
    view = None
    if operator:
        person = run_as(engine, operator, "alarms.location")
        view = locations.read(engine, alarm_pk=alarm.id, person=person, via="cli")
        data = alarm_as_dict(view.alarm) | {"location": data["location"]}
        data["trail"] = [
            {"at": iso(p.received_at), "lat": p.lat, "lon": p.lon, "acc": p.acc, "source": p.source}
            for p in view.trail
        ]
    data["set_aside"] = alarm.set_aside
    if as_json:
        print_json(data)
        return
    # A field set aside is named in words on its own line, so that nobody takes its `-` for "not sent".
    data["set_aside"] = ", ".join(flag.replace("_", " ") for flag in alarm.set_aside) or None
    # The pendant's own clock, in Unix seconds on the wire and in --json: a date here.
    data["device_time"] = pendant_time(data["device_time"])
    data["loc_time"] = pendant_time(data.get("loc_time"))
    for key in SHOW_ORDER:
        click.echo(f"{key + ':':16} {data[key] if data[key] is not None else '-'}")
    if view is None:
        click.echo(
            f"{'location:':16} {data['location']} (the position needs --operator with a dispatcher's or "
            "a supervisor's account; the view is recorded)"
        )
        return
    data["position"] = _position(view.alarm)
    data["payload"] = view.alarm.payload.strip()
    for key in LOCATION_ORDER:
        click.echo(f"{key + ':':16} {data[key] if data[key] is not None else '-'}")
    click.echo(f"trail:           {len(data['trail'])} point(s)")
    for point in data["trail"]:
        click.echo(
            f"  {point['at']}  {point['lat']:.6f},{point['lon']:.6f} ±{point['acc']} m  ({point['source']})"
        )
    click.echo(f"(this view is recorded in the audit log as seen by {person.label})")


def _handler(engine: Any, alarm: Any, operator: str) -> Any:
    """The account acting on `alarm`: a dispatcher or supervisor; for a test alarm also a technician."""
    from pendant_backend import roles

    return run_as(engine, operator, roles.handling_permission(alarm.test))


@alarms.command("ack", context_settings=CONTEXT)
@click.argument("alarm_ref")
@OPERATOR
@user_errors
def alarms_ack(alarm_ref: str, operator: str) -> None:
    """Acknowledge an alarm: you take it, as your account. The pendant is told (it vibrates
    'acknowledged').

    A dispatcher or a supervisor may acknowledge any alarm; a technician only a test alarm.

    \b
    Examples:
      pendant alarms ack pd-0001/12-3 --operator jjansen
    """
    from pendant_backend.alarms import acknowledge_alarm

    engine = open_engine()
    found = _find_alarm(engine, alarm_ref)
    person = _handler(engine, found, operator)
    alarm = acknowledge_alarm(engine, ref=str(found.id), operator=person.username)
    click.echo(f"alarm {alarm.ref} acknowledged by {person.label}")


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
    """Resolve an acknowledged alarm with a class and a note, as your account.

    \b
    Examples:
      pendant alarms resolve pd-0001/12-3 --class incident --note "unit 12 on site" --operator jjansen
      pendant alarms resolve 17 --class test --operator tech1
    """
    from pendant_backend.alarms import resolve_alarm

    engine = open_engine()
    found = _find_alarm(engine, alarm_ref)
    person = _handler(engine, found, operator)
    alarm = resolve_alarm(
        engine, ref=str(found.id), operator=person.username, resolution=resolution, note=note
    )
    click.echo(f"alarm {alarm.ref} resolved as {resolution} by {person.label}")


# Case exports, their verification and the public key live in cmd_evidence.
alarms.add_command(alarms_export)
alarms.add_command(alarms_verify)
alarms.add_command(alarms_public_key)
