"""`pendant db`: upgrade the database's schema, say where it stands, back it up and restore a backup.

Thin commands over pendant_backend.db_ops (the scripting API). The database is the one of the settings
(PENDANT_DB_URL, else <PENDANT_DATA_DIR>/pendant.db); no message shows its password.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pendant_tools.backend_cli import CONTEXT, print_json, settings_from_env, user_errors

if TYPE_CHECKING:
    from pendant_backend.db_ops import RestoreResult


def _database() -> tuple[str, str]:
    """The database URL of the settings, and how messages show it (a SQLite file's absolute path, or the
    URL without its password)."""
    from pendant_backend.db import shown_url, sqlite_path

    url = settings_from_env().db_url
    path = sqlite_path(url)
    return url, str(path.resolve()) if path is not None else shown_url(url)


@click.group(context_settings=CONTEXT)
def db() -> None:
    """The backend's database: schema upgrades, backups and restores.

    Only `pendant db upgrade` and `pendant backend run` (when it starts) upgrade the schema; every other
    command stops with a message saying to run `pendant db upgrade` when the database is behind.

    \b
    Examples:
      pendant db current                       # the schema, and the migrations not run yet
      pendant db backup /srv/backup/pendant-2026-12-07.db
      pendant db upgrade                       # after installing a new version
      pendant db restore /srv/backup/pendant-2026-12-07.db --force
    """


@db.command("current", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: current, head, pending.")
@user_errors
def db_current(as_json: bool) -> None:
    """Show the database's schema revision, this version's newest, and the migrations not run yet.
    Nothing is changed.

    \b
    Examples:
      pendant db current
      pendant db current --json
    """
    from pendant_backend import db_ops

    url, shown = _database()
    status = db_ops.current(url)
    if as_json:
        print_json(
            {
                "database": shown,
                "current": status.current,
                "head": status.head,
                "at_head": status.at_head,
                "known": status.known,
                "pending": [{"revision": m.revision, "title": m.title} for m in status.pending],
            }
        )
        return
    click.echo(f"database: {shown}")
    click.echo(f"schema:   {status.current or 'none (empty database)'}")
    click.echo(f"needed:   {status.head}")
    if not status.known:
        click.echo(
            f"the schema {status.current} is newer than this version of pendant knows: install the version "
            "that upgraded it"
        )
    elif status.at_head:
        click.echo("up to date: no migrations to run")
    else:
        click.echo(f"{len(status.pending)} migration(s) to run with `pendant db upgrade`:")
        for migration in status.pending:
            click.echo(f"  {migration.revision}  {migration.title}")


@db.command("upgrade", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the revision before and after.")
@user_errors
def db_upgrade(as_json: bool) -> None:
    """Run the migrations not run yet, bringing the schema to this version's newest (a missing SQLite
    database is made). Back the database up first; stop the backend during an upgrade that has
    migrations to run (it upgrades the schema itself when it starts).

    \b
    Examples:
      pendant db backup /srv/backup/before-upgrade.db && pendant db upgrade
      pendant db upgrade --json
    """
    from pendant_backend import db_ops

    url, shown = _database()
    if not as_json:
        click.echo(f"upgrading {shown} ...", err=True)
    before, after = db_ops.upgrade(url)
    if as_json:
        print_json({"database": shown, "before": before, "after": after, "changed": before != after})
    elif before == after:
        click.echo(f"{shown}: already at schema {after}, nothing to do")
    else:
        click.echo(f"{shown}: upgraded from schema {before or 'none'} to {after}")


@db.command("backup", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the file, its size and its schema.")
@user_errors
def db_backup(path: Path, force: bool, as_json: bool) -> None:
    """Write a backup of the database to PATH (mode 0600), safe while the backend runs.

    SQLite: a copy made with SQLite's online backup API, one consistent state of the database.
    PostgreSQL: pg_dump's custom format (the password is passed in the environment, never on the
    command line). The backup holds personal data: keep it as safe as the database.

    \b
    Examples:
      pendant db backup /srv/backup/pendant-$(date +%F).db
      pendant db backup /srv/backup/pendant.dump --force --json
    """
    from pendant_backend import db_ops

    url, shown = _database()
    if not as_json:
        click.echo(f"backing up {shown} ...", err=True)
    info = db_ops.backup(url, path, force=force)
    if as_json:
        print_json({"database": shown, "path": str(info.path), "bytes": info.size, "schema": info.revision})
        return
    click.echo(f"backup of {shown} written to {info.path} ({_size(info.size)}, schema {info.revision})")


@db.command("restore", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that holds data already.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the schema and the chain check.")
@user_errors
def db_restore(path: Path, force: bool, as_json: bool) -> None:
    """Put the backup PATH (from `pendant db backup`) in place of the database, then check the audit
    log's hash chain against it. Stop the backend first: the restore refuses while it runs.

    A database that holds data is replaced only with --force. Exit code 0 when the chain is intact, 2
    when the check found problems, 1 when the restore was refused or failed.

    \b
    Examples:
      pendant db restore /srv/backup/pendant-2026-12-07.db
      pendant db restore /srv/backup/pendant.dump --force
    """
    from pendant_backend import db_ops

    url, shown = _database()
    source = path.expanduser().resolve()
    if not as_json:
        click.echo(f"restoring {source} into {shown} ...", err=True)
    result = db_ops.restore(url, source, force=force)
    if as_json:
        print_json(_restore_json(result))
    else:
        _report_restore(result)
    if result.problems:
        raise SystemExit(2)


def _restore_json(result: RestoreResult) -> dict[str, Any]:
    return {
        "source": str(result.source),
        "database": result.target,
        "schema": result.revision,
        "chain_checked": result.checked,
        "events": result.events,
        "intact": result.checked and not result.problems,
        "problems": result.problems,
    }


def _report_restore(result: RestoreResult) -> None:
    click.echo(f"restored {result.source} into {result.target} (schema {result.revision})")
    if not result.checked:
        click.echo(
            f"audit chain not checked: the backup's schema {result.revision} is behind this version's; run "
            "`pendant db upgrade`, then `pendant alarms verify`"
        )
        return
    for problem in result.problems:
        click.echo(f"FAILED: {problem}")
    if result.problems:
        click.echo(f"audit chain ({result.events} events): {len(result.problems)} problem(s)", err=True)
    else:
        click.echo(f"audit chain ({result.events} events): intact")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    amount = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            break
    return f"{amount:.1f} {unit}"
