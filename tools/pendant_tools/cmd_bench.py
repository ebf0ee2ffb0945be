"""`pendant bench`: the bench test plan on a connected pendant (thin over pendant_tools.bench_steps)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from pendant_backend.settings import Settings
from pendant_tools.bench_plan import FAIL, PASS, Step, StepResult, render_table
from pendant_tools.bench_steps import PLAN, Bench, BenchOptions, run_bench
from pendant_tools.cmd_provision import technician_account, technician_option
from pendant_tools.errors import EXIT_BACKEND, EXIT_FAILED, CommandFailed, command_errors
from pendant_tools.params import CONTEXT, json_option, port_option
from pendant_tools.ports import choose_port
from pendant_tools.progress import quiet_library_logs

PHONE = r"\+?[0-9]{3,20}"


class TerminalTechnician:
    """The person at the bench, asked on the terminal (stderr, so stdout stays clean for --json)."""

    def instruct(self, message: str) -> None:
        click.echo(f"  >>> {message}", err=True)

    def confirm(self, question: str) -> bool:
        try:
            return click.confirm(f"  >>> {question}", default=False, err=True)
        except click.Abort:  # no terminal to answer on: nobody confirmed
            return False


@click.command("bench", context_settings=CONTEXT)
@port_option()
@click.option(
    "--test-number",
    envvar="PENDANT_BENCH_NUMBER",
    metavar="NUMBER",
    help="The bench's test phone, for the SMS and voice step (default: $PENDANT_BENCH_NUMBER).",
)
@click.option(
    "--gnss-timeout",
    type=click.IntRange(5, 900),
    default=120,
    show_default=True,
    help="Seconds for a GNSS fix.",
)
@click.option(
    "--registration-timeout",
    type=click.IntRange(5, 600),
    default=60,
    show_default=True,
    help="Seconds for network registration.",
)
@click.option(
    "--button-timeout",
    type=click.IntRange(5, 300),
    default=30,
    show_default=True,
    help="Seconds to press the button.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the report (with the backend's signature) to this JSON file.",
)
@click.option(
    "--no-store", is_flag=True, help="Do not store the report with the device record (a trial run)."
)
@technician_option()
@json_option()
@command_errors
def bench(
    port: str | None,
    test_number: str | None,
    gnss_timeout: int,
    registration_timeout: int,
    button_timeout: int,
    report_path: Path | None,
    no_store: bool,
    technician: str,
    as_json: bool,
) -> None:
    """Run the bench test plan on a pendant and keep the signed report with its record.

    The checklist: serial console, firmware version (and every deployed file), modem, SIM, network
    registration, signal, GNSS fix, battery, button (you press it), vibration (you confirm it), SMS and
    voice call to the test phone (you confirm them), and a test alarm through the broker and the
    backend, acknowledged and resolved as a test. A step whose prerequisite failed is skipped. The
    report is stored with the device record, signed with the backend's key.

    Provision the pendant first (pendant provision); the broker and `pendant backend run` must run, and
    --technician must name your account, a technician (`pendant user add USERNAME --role technician`).
    A passing report makes the pendant ready to issue (with SMS and call numbers in its config).

    \b
    Examples:
      pendant bench --test-number +31612345678
      pendant bench -p /dev/ttyUSB1 --report pd-0042-bench.json
      pendant bench -p /dev/pts/4 --gnss-timeout 30 --json     # a virtual pendant

    \b
    Exit codes: 0 every step passed and the report is stored, 1 a step failed, 3 no or several
    serial ports, 5 the report could not be stored with the device record (all steps passed), or the
    --technician account is unknown, disabled or not a technician (before any step).
    """
    if test_number is not None and not re.fullmatch(PHONE, test_number):
        raise click.BadParameter(
            f"{test_number!r} is not a phone number (+ and digits)", param_hint="--test-number"
        )
    chosen = choose_port(port)
    settings = Settings.from_env()
    # The bench stores the report and acknowledges its own test alarm as this account.
    actor = technician_account(settings, technician, "devices.manage", "alarms.handle_test")
    quiet_library_logs()
    options = BenchOptions(
        registration_timeout=registration_timeout,
        gnss_timeout=gnss_timeout,
        button_timeout=button_timeout,
        test_number=test_number,
    )
    total = len(PLAN)
    index = {step.key: number for number, step in enumerate(PLAN, 1)}

    def started(step: Step[Bench]) -> None:
        click.echo(f"[{index[step.key]:>2}/{total}] {step.title} ...", err=True)

    def finished(result: StepResult) -> None:
        mark = {PASS: "PASS", FAIL: "FAIL"}.get(result.status, "skip")
        click.echo(f"        {mark}  {result.detail}", err=True)

    click.echo(f"bench test of the pendant on {chosen}", err=True)
    result = run_bench(
        chosen,
        settings,
        technician=TerminalTechnician(),
        options=options,
        actor=actor,
        on_start=started,
        on_result=finished,
        store=not no_store,
    )
    document = {"report": result.report, "stored": result.stored}
    if report_path is not None:
        _write_atomically(report_path, json.dumps(document, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render_table(result.report))
        if result.stored:
            stored = result.stored
            click.echo(f"stored with {stored['device_id']} as report {stored['id']}, signed by the backend")
    problems = []
    if not result.report["passed"]:
        failed = [step["title"] for step in result.report["steps"] if step["status"] == FAIL]
        problems.append(f"the pendant failed the bench test: {', '.join(failed)}")
    if result.store_error:
        problems.append(f"the report was not stored: {result.store_error}")
    if problems:
        raise CommandFailed("; ".join(problems), EXIT_FAILED if not result.report["passed"] else EXIT_BACKEND)


def _write_atomically(path: Path, text: str) -> None:
    """Write the report file whole or not at all (it holds no secret: the signature is the backend's
    HMAC, which only the backend's key can make or check)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise CommandFailed(f"cannot write the report to {path}: {exc.strerror}", EXIT_FAILED) from None
