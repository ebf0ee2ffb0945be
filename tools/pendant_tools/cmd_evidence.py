"""`pendant alarms export|verify|public-key`: signed case exports, their verification, and the public key
that lets anyone check them (docs/evidence.md). Part of the `pendant alarms` group (cmd_alarms)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pendant_tools.backend_cli import (
    CONTEXT,
    OPERATOR,
    cli_actor,
    open_engine,
    print_json,
    run_as,
    settings_from_env,
    user_errors,
)

# Who may be named as the verifier: reading the audit log beyond one alarm's timeline.
VERIFY_PERMISSION = "audit.read"


@click.command("export", context_settings=CONTEXT)
@click.argument("alarm_ref")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file to write."
)
@OPERATOR
@user_errors
def alarms_export(alarm_ref: str, out: Path, operator: str) -> None:
    """Write one alarm, its trail and its audit events to a file for a case (mode 0600), signed with
    this backend's Ed25519 key, as a supervisor's account. The export is recorded in the audit log
    (`alarm_exported`, with the file's digest), as is the view of the alarm's location it holds.

    Anyone can check it with the public key (`pendant alarms public-key`) alone:
    `pendant alarms verify FILE --public-key KEY`, or the script of docs/evidence.md.

    \b
    Examples:
      pendant alarms export pd-0001/12-3 --out case-2026-000123.json --operator supervisor1
    """
    from pendant_backend import locations
    from pendant_backend.export import export_alarm, key_sha256
    from pendant_backend.queries import find_alarm
    from pendant_backend.settings import write_owner_only

    settings = settings_from_env()
    engine = open_engine()
    alarm = find_alarm(engine, alarm_ref)
    if alarm is None:
        raise click.ClickException(f"no alarm {alarm_ref}: see `pendant alarms list`")
    person = run_as(engine, operator, "alarms.export")
    # The file holds the position and the trail: recorded first, so the export carries the record.
    locations.read(engine, alarm_pk=alarm.id, person=person, via="cli")
    document = export_alarm(settings, engine, ref=alarm_ref, actor=person.username)
    write_owner_only(out, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())
    click.echo(f"exported {document['alarm']['ref']} with {len(document['events'])} audit events to {out}")
    click.echo(f"signed with the Ed25519 key {key_sha256(document)} (`pendant alarms public-key`)")


@click.command("verify", context_settings=CONTEXT)
@click.argument("export_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Check EXPORT_FILE with this Ed25519 public key (PEM) alone: no database, no secret of the "
    "backend; nothing is recorded.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Check EXPORT_FILE with this backend's public key without comparing it to the database "
    "(nothing is recorded).",
)
@click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    metavar="USERNAME",
    help="Your account (a supervisor or an administrator), recorded as who verified; without it the "
    "audit log records cli:<your login name> (or set PENDANT_OPERATOR).",
)
@user_errors
def alarms_verify(
    export_file: Path | None, public_key_file: Path | None, offline: bool, operator: str | None
) -> None:
    """Verify the audit chain of the whole database, or a case export file. Exit code 0 when intact,
    2 when anything was altered or removed, 1 when it could not be checked.

    An export is checked with this backend's public key and against the database, and the check is
    recorded in the audit log with who did it (`export_verified`; for the database `audit_verified`).
    With --public-key it is checked with that key and the file alone, as a court or a defence lawyer
    does: nothing else is read and nothing is recorded.

    \b
    Examples:
      pendant alarms verify
      pendant alarms verify case-2026-000123.json --operator supervisor1
      pendant alarms verify case-2026-000123.json --public-key pendant-export-key.pem
      pendant alarms verify case-2026-000123.json --offline
    """
    if export_file is None:
        if public_key_file is not None:
            raise click.ClickException(
                "--public-key checks an export file: name it, e.g. `pendant alarms verify case.json "
                "--public-key key.pem`"
            )
        _verify_database(operator)
        return
    document = _read_export(export_file)
    if public_key_file is not None:
        _verify_alone(export_file, document, public_key_file)
    else:
        _verify_here(export_file, document, offline=offline, operator=operator)


def _read_export(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise click.ClickException(f"{path} is not a case export: it is not UTF-8 text") from None
    except ValueError as exc:
        raise click.ClickException(f"{path} is not JSON: {exc}") from None


def _verify_alone(path: Path, document: Any, public_key_file: Path) -> None:
    from pendant_backend.export import verify_export
    from pendant_backend.export_key import read_public_key

    problems = verify_export(document, public_key=read_public_key(public_key_file))
    _report(
        path,
        document,
        problems,
        "checked with the file and the public key alone: not compared with "
        "a database, and nothing was recorded",
    )


def _verify_here(path: Path, document: Any, *, offline: bool, operator: str | None) -> None:
    from pendant_backend.export import FORMAT_HMAC, record_verification, verify_export
    from pendant_backend.export_key import own_public_key, private_key_path
    from pendant_backend.settings import secret_key

    settings = settings_from_env()
    public_key = own_public_key(settings)
    legacy = isinstance(document, dict) and document.get("format") == FORMAT_HMAC
    if public_key is None and not legacy:
        raise click.ClickException(
            f"this backend has no export key ({private_key_path(settings)}): it signed no export; check "
            "the file with --public-key and the key of the force that made it"
        )
    # Format-1 exports were signed with HMAC under secrets/signing.key: never create that key here.
    hmac_key = secret_key(settings.signing_key_path) if settings.signing_key_path.exists() else None
    if offline:
        problems = verify_export(document, public_key=public_key, hmac_key=hmac_key)
        _report(path, document, problems, "not compared with the database (--offline); nothing was recorded")
        return
    engine = open_engine()
    actor = _verifier(engine, operator)
    problems = verify_export(document, public_key=public_key, hmac_key=hmac_key, engine=engine)
    event = record_verification(
        engine, document=document if isinstance(document, dict) else {}, actor=actor, problems=problems
    )
    _report(
        path,
        document,
        problems,
        f"compared with the database; recorded in the audit log as verified by {actor} (event {event.seq})",
    )


def _verify_database(operator: str | None) -> None:
    from pendant_backend.audit import chain_head, record_verification, verify_database

    engine = open_engine()
    actor = _verifier(engine, operator)
    problems = verify_database(engine)
    seq, head = chain_head(engine)
    event = record_verification(engine, actor=actor, checked=(seq, head), problems=problems)
    what = f"the database's audit chain ({seq} events, head {head[:16]})"
    for problem in problems:
        click.echo(f"FAILED: {problem}")
    click.echo(f"recorded in the audit log as verified by {actor} (event {event.seq})")
    if problems:
        click.echo(f"{what}: {len(problems)} problem(s)", err=True)
        raise SystemExit(2)
    click.echo(f"{what}: intact")


def _verifier(engine: Any, operator: str | None) -> str:
    """Who the audit log records as the verifier: the --operator account, or cli:<login name>."""
    if operator:
        return run_as(engine, operator, VERIFY_PERMISSION).username
    return cli_actor()


def _report(path: Path, document: Any, problems: list[str], how: str) -> None:
    for problem in problems:
        click.echo(f"FAILED: {problem}")
    if problems:
        click.echo(f"({how})")
        click.echo(f"{path}: {len(problems)} problem(s)", err=True)
        raise SystemExit(2)
    alarm, signed_by = document["alarm"], document.get("signed_by") or {}
    click.echo(
        f"{path}: intact: alarm {alarm['ref']}, {len(document['events'])} audit events, exported by "
        f"{document['exported_by']} at {document['exported_at']}"
    )
    if signed_by:
        click.echo(f"signed with the {signed_by['algorithm']} key {signed_by['key_sha256']}")
    else:
        click.echo("signed with this backend's HMAC key (a format-1 export: export it again for others)")
    click.echo(f"({how})")


@click.command("public-key", context_settings=CONTEXT)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the public key (PEM) to this file, to publish it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the PEM and the fingerprint.")
@user_errors
def alarms_public_key(out: Path | None, as_json: bool) -> None:
    """Print the Ed25519 public key that checks this backend's case exports, and its fingerprint (the
    SHA-256 of the raw key). The key pair is created on first use (the private key stays in
    secrets/, 0600). Publish the key so that anyone can check an export: docs/evidence.md.

    Without --out the PEM goes to stdout and the fingerprint to stderr, so `> key.pem` keeps a clean file.

    \b
    Examples:
      pendant alarms public-key
      pendant alarms public-key --out pendant-export-key.pem
      pendant alarms public-key --json
    """
    from pendant_backend.export_key import fingerprint, public_pem, signing_key

    key = signing_key(settings_from_env()).public_key()
    pem, digest = public_pem(key).decode("ascii"), fingerprint(key)
    if out is not None:
        out.write_text(pem, encoding="ascii")
    if as_json:
        print_json(
            {"algorithm": "Ed25519", "key_sha256": digest, "public_key_pem": pem, "file": str(out or "")}
        )
        return
    if out is None:
        click.echo(pem, nl=False)
        click.echo(f"fingerprint (SHA-256 of the raw key): {digest}", err=True)
        return
    click.echo(f"wrote the public key to {out}")
    click.echo(f"fingerprint (SHA-256 of the raw key): {digest}")
