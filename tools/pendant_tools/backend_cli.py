"""What the backend's commands share: settings, the error boundary, JSON and table output.

Settings come from the environment (PENDANT_DATA_DIR, PENDANT_DB_URL, PENDANT_MQTT_HOST, PENDANT_MQTT_PORT
and the others of docs/operations.md). Every error of the backend package reaches the user as one
sentence and exit code 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from pendant_backend import BackendError
from pendant_backend.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


def settings_from_env() -> Settings:
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
            raise click.ClickException(describe_database_error(exc)) from None

    return wrapper  # type: ignore[return-value]


# What SQLite says of a file that is not (or no longer) a database.
_DAMAGED = ("file is not a database", "database disk image is malformed")


def describe_database_error(exc: SQLAlchemyError) -> str:
    """One line for a failed database call; a damaged SQLite file says what to do."""
    line = f"the database failed: {exc.__class__.__name__}: {exc.args[0]}"
    if any(sign in str(exc) for sign in _DAMAGED):
        from pendant_backend.db import shown_url

        line += (
            f" (the file of {shown_url(settings_from_env().db_url)} is damaged or not a database: "
            "restore a backup with `pendant db restore`, or move it aside to start an empty one)"
        )
    return line


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def when(moment: Any) -> str:
    from pendant_backend.models import as_utc

    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def pendant_time(unix_s: int | None) -> str | None:
    """A time the pendant sent (Unix seconds by its clock) for people: `2025-11-29 08:00:00 UTC
    (pendant clock)`; None stays None."""
    if unix_s is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC (pendant clock)")


def open_engine(create: bool = False) -> Any:
    """The database of the settings, for a command: never migrated here (only `pendant db upgrade` and
    `pendant backend run` upgrade a schema); one clear line if it is behind. With `create`, a missing
    database is made, at the newest schema."""
    from pendant_backend.db import open_at_head

    return open_at_head(settings_from_env().db_url, create=create)


OPERATOR = click.option(
    "--operator",
    envvar="PENDANT_OPERATOR",
    required=True,
    metavar="USERNAME",
    help="Your account (`pendant user list`): the command runs with its roles and the audit log "
    "records it (or set PENDANT_OPERATOR).",
)


def run_as(engine: Any, username: str, *permissions: str, option: str = "--operator") -> Any:
    """The account `option` (`--operator`, `--technician`) names, if it is enabled and its roles grant
    every one of `permissions`; otherwise users.UserError, one sentence saying why and what to do (each
    command's error boundary prints it)."""
    from pendant_backend import users

    person = None
    for permission in permissions:
        try:
            person = users.operator(engine, username, permission)
        except users.UserError as exc:
            message = str(exc).replace("--operator", option)
            if message.endswith("is disabled"):
                message += f": an administrator can enable it again with `pendant user enable {username}`"
            raise users.UserError(message) from None
    return person


def cli_actor() -> str:
    """Who the audit log records for a change made with the CLI without an account (`pendant user`):
    `cli:` and the login name on this machine."""
    import getpass

    return f"cli:{getpass.getuser()}"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        )


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
