"""`pendant fleet`: the fleet's health for police IT: a summary (counts per state) and one row per pendant,
with filters and `--json`; `pendant fleet events` lists the changes of health, `pendant fleet readiness`
the pendants that are not ready to issue."""

from __future__ import annotations

from typing import Any

import click

from pendant_backend.health import BATTERY, CONNECTIVITY, FLAGS
from pendant_backend.lifecycle import LOAN_TRANSITIONS
from pendant_tools.backend_cli import CONTEXT, open_engine, print_json, table, user_errors, when

# The loan states in lifecycle order (the keys of the transition table).
LOAN = tuple(LOAN_TRANSITIONS)


def _flags(health: dict[str, Any]) -> str:
    return ",".join(flag for flag in FLAGS if health.get(flag) == "yes") or "-"


def _superv(device: Any) -> str:
    """SP4, SP3 or custom 600s; `>` and the profile a change waits for the pendant's next heartbeat."""
    from pendant_backend.queries import supervision_as_dict
    from pendant_backend.supervision import label

    watch = supervision_as_dict(device)
    if watch["pending"]:
        return f"{label(watch['interval_in_force'])}>{label(watch['heartbeat_s'])}"
    return label(watch["heartbeat_s"])


def _row(device: Any) -> list[str]:
    health = device.health or {}
    hours = health.get("hours_left")
    return [
        device.device_id,
        device.loan_state,
        device.case_ref or "-",
        device.connectivity,
        _superv(device),
        when(device.last_seen_at),
        health.get("battery", "-"),
        f"{hours:.0f} h" if hours is not None else "-",
        device.fw or "-",
        f"{device.config_applied_rev if device.config_applied_rev is not None else '-'}/{device.config_rev}",
        _flags(health) + (",RECALL" if device.recall else ""),
    ]


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("--state", "connectivity", type=click.Choice(CONNECTIVITY), help="Only pendants in this state.")
@click.option("--battery", type=click.Choice(BATTERY), help="Only pendants with this battery level.")
@click.option("--flag", type=click.Choice(FLAGS), help="Only pendants with this flag raised.")
@click.option("--loan", "loan_state", type=click.Choice(LOAN), help="Only pendants in this loan state.")
@click.option("--summary", "summary_only", is_flag=True, help="Only the counts, no table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {summary, devices}.")
@click.pass_context
@user_errors
def fleet(
    ctx: click.Context,
    connectivity: str | None,
    battery: str | None,
    flag: str | None,
    loan_state: str | None,
    summary_only: bool,
    as_json: bool,
) -> None:
    """The fleet's health: counts per state, then one row per pendant.

    Health is classified by the running backend (`pendant backend run`) every few seconds: online, late
    (one heartbeat missed), offline (its will, or several heartbeats missed), never seen; battery and
    hours left; and flags such as weak_signal, gnss_stale, config_drift, test_overdue, renewal_due.
    SUPERV is the supervision profile the late and offline thresholds follow (`pendant device
    supervision`): SP4 (late after 4 min of silence, offline after 10), SP3 (31 and 91 min) or custom;
    `SP3>SP4` while a new profile waits for the pendant's next heartbeat. --json gives each device's
    `supervision`: profile, heartbeat_s, interval_in_force, late_after_s, offline_after_s, pending.

    \b
    Examples:
      pendant fleet
      pendant fleet --state offline
      pendant fleet --flag renewal_due --loan issued
      pendant fleet --summary --json
      pendant fleet events --device pd-0001
      pendant fleet readiness
    """
    if ctx.invoked_subcommand is not None:
        return
    from pendant_backend.monitor import fleet_summary
    from pendant_backend.queries import device_as_dict, list_devices

    engine = open_engine()
    summary = fleet_summary(engine)
    devices = list_devices(
        engine, connectivity=connectivity, loan_state=loan_state, flag=flag, battery=battery
    )
    if as_json:
        data: dict[str, Any] = {"summary": summary}
        if not summary_only:
            data["devices"] = [device_as_dict(d) for d in devices]
        print_json(data)
        return
    click.echo(f"{summary['monitored']} monitored of {summary['devices']} pendants")
    for group in ("connectivity", "battery"):
        click.echo(f"  {group + ':':14} " + "  ".join(f"{k} {v}" for k, v in summary[group].items()))
    raised = [f"{k} {v}" for k, v in summary["flags"].items() if v]
    click.echo(f"  {'flags:':14} " + ("  ".join(raised) or "none"))
    click.echo(f"  {'loan:':14} " + "  ".join(f"{k} {v}" for k, v in sorted(summary["loan"].items())))
    open_alarms = summary["alarms"]
    click.echo(f"  {'alarms:':14} open {open_alarms['open']}  unacknowledged {open_alarms['unacknowledged']}")
    if summary_only:
        return
    click.echo("")
    if not devices:
        click.echo("no pendants match")
        return
    headers = ["DEVICE", "LOAN", "CASE", "STATE", "SUPERV", "LAST SEEN (UTC)", "BATT", "LEFT", "FW", "CFG"]
    table([*headers, "FLAGS"], [_row(d) for d in devices])


@fleet.command("events", context_settings=CONTEXT)
@click.option("--device", "device_id", metavar="ID", help="Only this pendant's events.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most N events."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def fleet_events(device_id: str | None, limit: int, as_json: bool) -> None:
    """Changes of health, newest first.

    \b
    Examples:
      pendant fleet events
      pendant fleet events --device pd-0001 --json
    """
    from pendant_backend.models import iso
    from pendant_backend.monitor import health_events

    events = health_events(open_engine(), device_id=device_id, limit=limit)
    rows = [
        {"at": iso(e.at), "device_id": e.device_id, "aspect": e.aspect, "old": e.old, "new": e.new}
        for e in events
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no health events")
        return
    table(
        ["AT (UTC)", "DEVICE", "ASPECT", "FROM", "TO"],
        [[when(e.at), e.device_id, e.aspect, e.old or "-", e.new] for e in events],
    )


@fleet.command("readiness", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {device_id: [codes]}.")
@user_errors
def fleet_readiness(as_json: bool) -> None:
    """The provisioned and issued pendants that are not ready to issue, and what each lacks: `sms` (no
    SMS number in its config), `call` (no number to call), `bench` (no passing bench test since it was
    last provisioned). An issued one shows what it lacks now and what it was issued without.

    \b
    Examples:
      pendant fleet readiness
      pendant fleet readiness --json
    """
    from pendant_backend import readiness
    from pendant_backend.queries import list_devices

    engine = open_engine()
    lacking = readiness.not_ready(engine)
    if as_json:
        print_json(lacking)
        return
    if not lacking:
        click.echo("every provisioned and issued pendant is ready")
        return
    devices = {d.device_id: d for d in list_devices(engine)}
    table(
        ["DEVICE", "LOAN", "MISSING", "ISSUED WITHOUT"],
        [
            [
                device_id,
                devices[device_id].loan_state,
                readiness.describe(codes),
                ",".join(devices[device_id].issued_without or []) or "-",
            ]
            for device_id, codes in lacking.items()
        ],
    )
