"""`pendant provision`: register connected pendants and give them their credentials (thin over
pendant_tools.provisioning). Settings come from the environment, as for the other commands."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from pendant_backend.settings import Settings
from pendant_tools.errors import EXIT_FAILED, CommandFailed, NoDeviceError, ToolError, command_errors
from pendant_tools.params import (
    CONTEXT,
    DEVICE_ID_TYPE,
    json_option,
    supervision_interval,
    supervision_options,
)
from pendant_tools.ports import check_port_exists, choose_port, usb_serial_ports
from pendant_tools.progress import ProgressBars, Report, no_progress, quiet_library_logs
from pendant_tools.provisioning import DEFAULT_PREFIX, ProvisionResult, provision_batch, provision_pendant


def technician_option() -> Any:
    """--technician: the account the work is done as (recorded in the backend's audit trail)."""
    return click.option(
        "--technician",
        envvar="PENDANT_TECHNICIAN",
        metavar="USERNAME",
        default=lambda: getpass.getuser(),
        show_default="$PENDANT_TECHNICIAN, else your login name",
        help="Your account (`pendant user list`): a technician or police IT; recorded in the backend's "
        "audit trail.",
    )


def technician_account(settings: Settings, username: str, *permissions: str) -> str:
    """The username of the technician's account if it may do the work; users.UserError (one line,
    exit code 5) before anything starts if not."""
    from pendant_backend.db import open_at_head
    from pendant_tools.backend_cli import run_as

    return run_as(open_at_head(settings.db_url), username, *permissions, option="--technician").username


@click.command("provision", context_settings=CONTEXT)
@click.option(
    "--port",
    "-p",
    "ports",
    multiple=True,
    envvar="PENDANT_PORT",
    metavar="PORT",
    help="Serial port of a pendant; repeat it to provision several at once. Default: $PENDANT_PORT, else "
    "the only USB serial port connected.",
)
@click.option(
    "--all-ports", is_flag=True, help="Provision every pendant on a USB serial port (a bench with a hub)."
)
@click.option(
    "--device-id",
    type=DEVICE_ID_TYPE,
    default=None,
    help="The id for a pendant the registry does not know yet (one port only). Default: the next free "
    "PREFIX number.",
)
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Prefix of new device ids.")
@click.option("--apn", default="internet", show_default=True, help="The SIM's access point name.")
@click.option(
    "--timeout",
    type=click.IntRange(10, 3600),
    default=180,
    show_default=True,
    help="Seconds to wait for the first heartbeat after the reboot.",
)
@supervision_options
@technician_option()
@json_option()
@command_errors
def provision(
    ports: tuple[str, ...],
    all_ports: bool,
    device_id: str | None,
    prefix: str,
    apn: str,
    timeout: int,
    supervision: str | None,
    heartbeat_s: int | None,
    technician: str,
    as_json: bool,
) -> None:
    """Register connected pendants in the backend and give each its credentials.

    For each pendant: read its IMEI and ICCID through its REPL, find its record in the registry (or add
    one), create its broker account (or rotate its password if it had one), write config.json to its
    flash, reboot it, and wait until the backend has its first heartbeat. The password is written only
    to the pendant; it is never shown or kept on this machine.

    Run `pendant flash` and `pendant deploy` first; the broker and `pendant backend run` must be running,
    and --technician must name your account (`pendant user add USERNAME --role technician`).

    \b
    Examples:
      pendant provision                                   # the only pendant plugged in
      pendant provision -p /dev/ttyUSB0 --device-id pd-0042
      pendant provision -p /dev/ttyUSB0 -p /dev/ttyUSB1 -p /dev/ttyUSB2 --json
      pendant provision --all-ports --technician jjansen
      pendant provision -p /dev/ttyUSB0 --supervision SP3   # a heartbeat every 30 min

    \b
    Exit codes: 0 all provisioned, 1 a pendant failed (others may have succeeded: see the summary),
    3 no or several serial ports, 4 a pendant did not answer, 5 broker or database unreachable, or
    the --technician account unknown, disabled or not allowed.
    """
    interval = supervision_interval(supervision, heartbeat_s)
    chosen = _ports(ports, all_ports)
    quiet_library_logs()
    if device_id and len(chosen) > 1:
        raise click.UsageError("--device-id names one pendant: give one --port with it")
    settings = Settings.from_env()
    actor = technician_account(settings, technician, "devices.manage")

    def job(port: str, report: Report = no_progress) -> ProvisionResult:
        return provision_pendant(
            port,
            settings,
            device_id=device_id,
            prefix=prefix,
            apn=apn,
            heartbeat_timeout=timeout,
            actor=actor,
            report=report,
            heartbeat_s=interval,
        )

    if len(chosen) == 1:
        with ProgressBars() as bars:  # on stderr, as every command's progress
            result = job(chosen[0], bars)
        _print([result], {}, as_json)
        return

    def done(port: str, outcome: ProvisionResult | ToolError) -> None:
        line = _line(outcome) if isinstance(outcome, ProvisionResult) else f"FAILED  {outcome}"
        click.echo(f"{port}: {line}", err=True)

    click.echo(f"provisioning {len(chosen)} pendants: {', '.join(chosen)}", err=True)
    outcomes = provision_batch(chosen, job, done)
    results = [outcome for outcome in outcomes.values() if isinstance(outcome, ProvisionResult)]
    failures = {port: outcome for port, outcome in outcomes.items() if isinstance(outcome, ToolError)}
    _print(results, failures, as_json)
    if failures:
        raise CommandFailed(f"{len(failures)} of {len(chosen)} pendants were not provisioned", EXIT_FAILED)


def _ports(ports: tuple[str, ...], all_ports: bool) -> list[str]:
    if all_ports:
        if ports:
            raise click.UsageError("give --port or --all-ports, not both")
        found = [info.device for info in usb_serial_ports()]
        if not found:
            raise NoDeviceError("no USB serial port found: connect the pendants with data USB cables")
        return found
    if len(ports) > 1:
        if len(set(ports)) != len(ports):
            raise click.UsageError("a port is given twice")
        for port in ports:
            check_port_exists(port)
        return list(ports)
    return [choose_port(ports[0] if ports else None)]


def _line(result: ProvisionResult) -> str:
    sim = ", new SIM" if result.sim_changed else ""
    return (
        f"{result.device_id} ({result.registered}{sim}, {result.credentials} credentials) IMEI {result.imei} "
        f"ICCID {result.iccid}, firmware {result.firmware}, first heartbeat {result.first_heartbeat_at}"
    )


def _print(results: list[ProvisionResult], failures: dict[str, ToolError], as_json: bool) -> None:
    if as_json:
        document = {
            "provisioned": [result.as_json() for result in results],
            "failed": [{"port": port, "error": str(error)} for port, error in sorted(failures.items())],
        }
        click.echo(json.dumps(document, indent=2))
        return
    for result in sorted(results, key=lambda r: r.port):
        total = sum(result.seconds.values())
        click.echo(f"{result.port}: {_line(result)} ({total:.1f} s)")
