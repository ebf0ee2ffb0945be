"""`pendant alarms`: list, show, acknowledge, resolve, export and verify alarms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pendant_backend.settings import write_private_file
from pendant_tools.backend_cli import (
    CONTEXT,
    OPERATOR,
    open_engine,
    print_json,
    settings_from_env,
    table,
    user_errors,
    when,
)

# ---- pendant alarms -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def alarms() -> None:
    """List, acknowledge, resolve, export and verify alarms.

    \b
    Examples:
      pendant alarms list --open
      pendant alarms ack pd-0001/12-3 --operator "J. Jansen"
      pendant alarms export pd-0001/12-3 --out case.json --operator "J. Jansen"
    """


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

    found = list_alarms(open_engine(), device_id=device_id, state=state, open_only=open_only, limit=limit)
    if as_json:
        print_json([alarm_as_dict(a) for a in found])
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
            _position(a),
            f"{a.batt}%" if a.batt is not None else "-",
            str(a.escalations),
        ]
        for a in found
    ]
    table(["ALARM", "KIND", "STATE", "RAISED (UTC)", "RECEIVED (UTC)", "POSITION", "BATT", "ESCALATED"], rows)


def _find_alarm(ref: str) -> Any:
    from pendant_backend.queries import find_alarm

    alarm = find_alarm(open_engine(), ref)
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
        for p in trail(open_engine(), alarm_pk=alarm.id)
    ]
    if as_json:
        print_json(data)
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

    alarm = acknowledge_alarm(open_engine(), ref=alarm_ref, operator=operator)
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

    alarm = resolve_alarm(open_engine(), ref=alarm_ref, operator=operator, resolution=resolution, note=note)
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

    document = export_alarm(settings_from_env(), open_engine(), ref=alarm_ref, actor=operator)
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
        engine = open_engine()
        problems = verify_database(engine)
        seq, head = chain_head(engine)
        what = f"the database's audit chain ({seq} events, head {head[:16]})"
    else:
        try:
            document = json.loads(export_file.read_text())
        except ValueError as exc:
            raise click.ClickException(f"{export_file} is not JSON: {exc}") from None
        problems = verify_export(settings_from_env(), document, engine=None if offline else open_engine())
        what = f"{export_file}"
    if problems:
        for problem in problems:
            click.echo(f"FAILED: {problem}")
        click.echo(f"{what}: {len(problems)} problem(s)", err=True)
        raise SystemExit(2)
    click.echo(f"{what}: intact")
