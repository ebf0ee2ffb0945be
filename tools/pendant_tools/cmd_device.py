"""`pendant device`: provision, rotate, revoke, register and inspect pendants; their loan and config."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from pendant_tools.backend_cli import (
    CONTEXT,
    OPERATOR,
    F,
    open_engine,
    print_json,
    run_as,
    settings_from_env,
    table,
    user_errors,
    when,
)
from pendant_tools.params import HEARTBEAT_S, SUPERVISION, supervision_interval, supervision_options

# ---- pendant device -------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
def device() -> None:
    """Register, provision, issue, inspect and revoke pendants.

    \b
    Examples:
      pendant device register pd-0042 --imei 864321050123456 --operator it
      pendant device provision pd-0042
      pendant device show pd-0042
      pendant device revoke pd-0042
    """


@device.command("provision", context_settings=CONTEXT)
@click.argument("device_ids", metavar="DEVICE_ID...", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the config.json of one device (default <data>/devices/<id>/config.json).",
)
@click.option("--apn", default="internet", show_default=True, help="The SIM's access point name.")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish an interrupted run: skip the devices it provisioned and replace broker accounts it "
    "left without a database record.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="With the broker stopped: write the accounts straight into its file, once per batch (for a "
    "first rollout of thousands: the running broker rewrites its whole file for every account).",
)
@supervision_options
@click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    metavar="USERNAME",
    help="Your account, recorded with the --supervision config (default: the audit log's `system`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (without the password).")
@user_errors
def device_provision(
    device_ids: tuple[str, ...],
    out: Path | None,
    apn: str,
    resume: bool,
    offline: bool,
    supervision: str | None,
    heartbeat_s: int | None,
    operator: str | None,
    as_json: bool,
) -> None:
    """Create each device's broker account and write its config.json (mode 0600).

    The file holds the device's password and is the only copy of it: copy it onto the pendant's
    flash. A DEVICE_ID is 3 to 32 lower-case letters, digits and '-'. Several ids are provisioned in
    batches over one broker connection, with a progress bar. If any of them is already provisioned or
    decommissioned, nothing is changed. A run that stops part-way says which devices it provisioned;
    the same command with --resume provisions the rest. Provisioning goes through the running broker;
    thousands at once are much faster with the broker stopped and --offline (the broker reads the
    accounts when it starts).

    \b
    Examples:
      pendant device provision pd-0001
      pendant device provision pd-0002 --out /media/usb/config.json
      pendant device provision pd-0003 --json
      pendant device provision $(seq -f "pd-%05g" 1 10000)
      pendant device provision $(seq -f "pd-%05g" 1 10000) --resume
      pendant device provision $(seq -f "pd-%05g" 1 10000) --offline   # broker stopped
      pendant device provision pd-0004 --supervision SP3 --operator it
      pendant device provision pd-0005 --supervision custom --heartbeat-s 600

    --supervision makes the profile (`pendant device supervision`) part of each device's own config
    before its first config is published.
    """
    from pendant_backend import audit
    from pendant_backend.accounts import BatchError, check_device_id, provision_many

    settings = settings_from_env()
    for device_id in device_ids:
        check_device_id(device_id)
    if out is not None and len(device_ids) > 1:
        raise click.UsageError("--out names the file of one device; give one DEVICE_ID with it")
    interval = supervision_interval(supervision, heartbeat_s)
    engine = open_engine(create=True)
    actor = run_as(engine, operator, "devices.manage").username if operator else audit.SYSTEM
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    batches = provision_many(
        settings,
        device_ids,
        apn=apn,
        engine=engine,
        actor=actor,
        resume=resume,
        offline=offline,
        config={"heartbeat_s": interval} if interval is not None else None,
    )
    # A progress bar for a batch (on stderr, so that --json output stays clean).
    bar = click.progressbar(length=len(device_ids), label="provisioning", file=sys.stderr)
    try:
        with bar if len(device_ids) > 1 else contextlib.nullcontext(bar):
            for batch in batches:
                _write_configs(batch, out, settings, results, skipped)
                if len(device_ids) > 1:
                    bar.update(len(batch))
    except BatchError:
        _report_provisioned(results, skipped, settings, as_json=False)
        raise
    _report_provisioned(results, skipped, settings, as_json=as_json)


def _write_configs(
    batch: list[Any], out: Path | None, settings: Any, results: list[dict[str, Any]], skipped: list[str]
) -> None:
    """Write the configs of a provisioned batch; if one cannot be written, say how to get them."""
    from pendant_backend.accounts import AccountError, write_device_config

    for number, result in enumerate(batch):
        if result.config is None:
            skipped.append(result.device_id)
            continue
        path = out or settings.devices_dir / result.device_id / "config.json"
        try:
            write_device_config(path, result.config)
        except OSError as exc:
            unwritten = [r.device_id for r in batch[number:] if r.config is not None]
            raise AccountError(
                f"{', '.join(unwritten)} are provisioned but their configs could not be written to "
                f"{path.parent.parent} ({exc.strerror}): make room or fix the folder, then give each a "
                "new config with `pendant device rotate DEVICE_ID`"
            ) from None
        results.append(
            {"device_id": result.device_id, "config_path": str(path), "mqtt": settings.mqtt_address}
        )


def _report_provisioned(
    results: list[dict[str, Any]], skipped: list[str], settings: Any, *, as_json: bool
) -> None:
    """What a provisioning run did: one line for each device provisioned, and the skipped ones."""
    if as_json:
        print_json(results[0] if len(results) == 1 and not skipped else results)
        return
    for result in results:
        click.echo(
            f"provisioned {result['device_id']}; its config (with its password) is in {result['config_path']}"
        )
    if not skipped:
        return
    click.echo(f"{len(skipped)} devices were provisioned before and are left as they are")
    lost = [d for d in skipped if not (settings.devices_dir / d / "config.json").exists()]
    if lost:
        click.echo(
            f"{len(lost)} of them have no config in {settings.devices_dir} (e.g. {lost[0]}): "
            f"give each a new one with `pendant device rotate DEVICE_ID`",
            err=True,
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

    settings = settings_from_env()
    config = rotate_device(settings, device_id, apn=apn, engine=open_engine(create=True))
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

    revoke_device(settings_from_env(), device_id, engine=open_engine(create=True))
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

    engine = open_engine()
    devices = list_devices(engine)
    if as_json:
        print_json(
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
                when(d.last_seen_at),
                d.fw or "-",
                str(count_alarms(engine, device_id=d.device_id)),
            ]
        )
    table(["DEVICE", "ACCOUNT", "LOAN", "STATUS", "LAST SEEN (UTC)", "FW", "ALARMS"], rows)


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
    "issued_without",
    "not_ready",
    "returned_at",
    "decommissioned_at",
    "revoked_at",
    "rotated_at",
    "erased_at",
    "connectivity",
    "supervision",
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
    """Show one pendant: registry, loan, readiness to issue, account, health, config and bench-test reports.

    \b
    Examples:
      pendant device show pd-0001
      pendant device show pd-0001 --json
    """
    from pendant_backend import monitor, readiness, registry
    from pendant_backend.queries import device_as_dict

    engine = open_engine()
    data = device_as_dict(registry.get_device(engine, device_id=device_id))
    # What it lacks to be issued (sms, call, bench); [] when ready.
    data["not_ready"] = readiness.missing(engine, device_id=device_id)
    data["bench_reports"] = [
        {
            "id": r.id,
            "created_at": when(r.created_at),
            "actor": r.actor,
            "passed": r.passed,
            "signature_ok": registry.verify_report(settings_from_env(), r),
        }
        for r in registry.bench_reports(engine, device_id=device_id)
    ]
    data["health_events"] = [
        {"at": when(e.at), "aspect": e.aspect, "old": e.old, "new": e.new}
        for e in monitor.health_events(engine, device_id=device_id, limit=10)
    ]
    if as_json:
        print_json(data)
        return
    for key in SHOW_ORDER:
        value = data.get(key)
        if isinstance(value, list):
            value = ", ".join(value) or None
        elif key == "supervision":
            value = _describe_supervision(value)
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

    engine = open_engine(create=True)
    person = run_as(engine, operator, "devices.manage")
    register_device(engine, device=DeviceCreate(device_id=device_id, **fields), actor=person.username)
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

    engine = open_engine()
    person = run_as(engine, operator, "devices.manage")
    update_device(engine, device_id=device_id, changes=DeviceUpdate(**fields), actor=person.username)
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
@click.option(
    "--override",
    metavar="REASON",
    help="Issue it although it is not ready, for this reason (kept in the audit log as written: never "
    "a name or an address); the fleet view shows what it was issued without.",
)
@OPERATOR
@user_errors
def device_issue(
    device_id: str, case_ref: str, renewal: str | None, override: str | None, operator: str
) -> None:
    """Lend a provisioned pendant for a case, if it is ready to issue.

    Ready means: its config has an SMS number and a number to call (so that its fallback reaches
    someone when the backend cannot), and it passed a bench test (`pendant bench`) since it was last
    provisioned or came back from a loan. A pendant that is not ready is refused with what is missing;
    `--override REASON` issues it anyway, as an audit event, and the fleet view shows it as "issued
    without ..." until it is returned. `pendant fleet readiness` lists the pendants that are not ready.

    \b
    Examples:
      pendant device issue pd-0001 --case 2026-000123 --renewal 2027-03-31 --operator it
      pendant device issue pd-0002 --case 2026-000124 --operator it \\
          --override "bench out of order; SMS and call tested by hand"
    """
    from pendant_backend import readiness

    engine = open_engine()
    person = run_as(engine, operator, "devices.manage")
    _, lacking = readiness.issue(
        engine,
        device_id=device_id,
        case_ref=case_ref,
        renewal_due=_date(renewal),
        actor=person.username,
        override=override,
    )
    if lacking:
        click.echo(f"issued {device_id} for case {case_ref} WITHOUT: {readiness.describe(lacking)}")
        click.echo("the override is in the audit log; the fleet view shows it until it is returned", err=True)
    else:
        click.echo(f"issued {device_id} for case {case_ref}")
        if override is not None:
            click.echo(f"{device_id} was ready: nothing was overridden", err=True)


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

    engine = open_engine()
    person = run_as(engine, operator, "devices.manage")
    set_loan_state(engine, device_id=device_id, state=state, actor=person.username)
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

    engine = open_engine()
    person = run_as(engine, operator, "devices.manage")
    set_renewal(engine, device_id=device_id, renewal_due=_date(until), actor=person.username)
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

    engine = open_engine()
    person = run_as(engine, operator, "devices.manage")
    set_recall(engine, device_id=device_id, recall=not clear, actor=person.username)
    click.echo(f"{device_id}: recall {'cleared' if clear else 'flagged'}")


def _config_value(text: str) -> tuple[str, Any]:
    from pendant_backend.configs import BOOL_FIELDS, LIST_FIELDS

    key, sep, value = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE")
    if key in LIST_FIELDS:
        return key, [v for v in value.split(",") if v]
    if key in BOOL_FIELDS:
        if value.lower() not in ("true", "false"):
            raise click.BadParameter(f"{key} takes true or false, not {value!r}")
        return key, value.lower() == "true"
    try:
        return key, int(value)
    except ValueError:
        raise click.BadParameter(f"{key} takes a whole number, not {value!r}") from None


@device.command("config", context_settings=CONTEXT)
@click.argument("device_id", required=False)
@click.option("--fleet", is_flag=True, help="The fleet-default document instead of one device's.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Set a field (lists: a,b).")
@click.option("--unset", multiple=True, metavar="KEY", help="Remove a field (the default applies again).")
@click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    metavar="USERNAME",
    help="Your account (needed to change a config: police IT or a technician).",
)
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
    engine = open_engine(create=True)
    if assignments or unset:
        if not operator:
            raise click.UsageError("say who changes the config: --operator USERNAME (or PENDANT_OPERATOR)")
        person = run_as(engine, operator, "devices.manage")
        changes = dict(_config_value(a) for a in assignments)
        document, published = configs.set_config(
            engine,
            scope=configs.FLEET if fleet else device_id,
            changes=changes,
            unset=unset,
            author=person.username,
        )
        click.echo(f"{document.scope} config version {document.version}; published to {published} device(s)")
        return
    view = (
        configs.fleet_config_view(engine)
        if fleet
        else configs.device_config_view(engine, device_id=device_id)
    )
    if as_json:
        print_json(view)
        return
    for key, value in view.items():
        click.echo(f"{key + ':':16} {json.dumps(value, ensure_ascii=False)}")


def _describe_supervision(watch: dict[str, Any]) -> str:
    """One line: the profile, its interval, and the thresholds in force (those of the old interval while
    the new one waits for the pendant's next heartbeat)."""
    thresholds = (
        f"late after {watch['late_after_s']} s, offline after {watch['offline_after_s']} s of silence"
    )
    if watch["pending"]:
        return (
            f"{watch['profile']}, a heartbeat every {watch['heartbeat_s']} s from its next heartbeat; until "
            f"then held to {watch['interval_in_force']} s: {thresholds}"
        )
    return f"{watch['profile']}, a heartbeat every {watch['heartbeat_s']} s: {thresholds}"


@device.command("supervision", context_settings=CONTEXT)
@click.argument("device_id")
@click.argument("profile", type=SUPERVISION, required=False)
@click.option("--heartbeat-s", type=HEARTBEAT_S, metavar="N", help="The interval of custom, 60 to 86400 s.")
@click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    metavar="USERNAME",
    help="Your account (needed to change the profile: police IT or a technician).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the profile, intervals and thresholds.")
@user_errors
def device_supervision(
    device_id: str, profile: str | None, heartbeat_s: int | None, operator: str | None, as_json: bool
) -> None:
    """Show or set a pendant's supervision profile: how often it sends a heartbeat, and so how soon the
    backend reports it late and offline.

    EN 50136-1's reporting time is the time within which a failed path must be reported. SP4 (3 min):
    a heartbeat every 180 s, late after 240 s, offline after 600 s of silence. SP3 (30 min): every 1800
    s, late after 1860 s, offline after 5460 s. custom: every --heartbeat-s N seconds (60 to 86400).
    Offline is PENDANT_OFFLINE_AFTER_MISSED (3) heartbeats and 60 s. Battery: with the MQTT keepalive of
    60 s SP3 saves little; see docs/power.md and docs/operations.md ("Supervision profiles").

    The profile is the heartbeat_s of the pendant's own config (`pendant device config`): a new config
    revision, published retained, recorded in the audit log. The pendant sends one more heartbeat on its
    old timer; the backend holds it to the old interval until a heartbeat reports the new revision.

    \b
    Examples:
      pendant device supervision pd-0001
      pendant device supervision pd-0001 SP3 --operator it
      pendant device supervision pd-0001 custom --heartbeat-s 600 --operator it
      pendant device supervision pd-0001 --json
    """
    from pendant_backend import configs, registry, supervision
    from pendant_backend.queries import supervision_as_dict

    engine = open_engine(create=True)
    if profile is None:
        if heartbeat_s is not None:
            raise click.UsageError("--heartbeat-s goes with a profile: custom --heartbeat-s N")
        watch = supervision_as_dict(registry.get_device(engine, device_id=device_id))
        if as_json:
            print_json({"device_id": device_id, **watch})
            return
        click.echo(f"{device_id}: {_describe_supervision(watch)}")
        return
    interval = supervision_interval(profile, heartbeat_s)
    if not operator:
        raise click.UsageError("say who changes the profile: --operator USERNAME (or PENDANT_OPERATOR)")
    person = run_as(engine, operator, "devices.manage")
    document, published = configs.set_config(
        engine, scope=device_id, changes={"heartbeat_s": interval}, author=person.username
    )
    device = registry.get_device(engine, device_id=device_id)
    if published:
        # Just published: no heartbeat can report the new revision yet.
        watch = supervision.supervision(
            interval,
            previous_s=device.heartbeat_prev_s,
            since_rev=device.heartbeat_since_rev,
            missed=settings_from_env().offline_after_missed,
        ).as_dict()
    else:
        watch = supervision_as_dict(device)
    if as_json:
        print_json({"device_id": device_id, **watch, "version": document.version, "published": published})
        return
    click.echo(f"{device_id}: {_describe_supervision(watch)}")
    click.echo(
        f"{device_id} config version {document.version}; "
        + (
            f"published as rev {device.config_rev}"
            if published
            else "not published: the pendant is not provisioned or issued, or had this interval already"
        )
    )


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

    engine = open_engine()
    person = run_as(engine, operator, "devices.erase")  # before asking: a refusal should come first
    if not yes:
        click.confirm(f"erase every alarm, position and heartbeat of {device_id}?", abort=True)
    counts = erase_device(engine, device_id=device_id, actor=person.username, reason=reason)
    click.echo(f"erased {device_id}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
