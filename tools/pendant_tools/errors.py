"""The technician commands' errors and exit codes, and the one place where any failure becomes one line.

Exit codes are fixed, so that a script preparing pendants in a loop can tell what happened:

| code | meaning |
|---|---|
| 0 | done |
| 1 | the job ran and failed (verification mismatch, a bench step failed, no first heartbeat) |
| 2 | wrong usage (click's own code: a bad option or argument) |
| 3 | no pendant to talk to: no serial port, several without --port, or the port cannot be opened |
| 4 | the pendant did not answer as expected (not in its bootloader, no REPL, wrong chip) |
| 5 | the backend or broker is unreachable or refused |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from pendant_backend import BackendError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DEVICE = 3
EXIT_DEVICE = 4
EXIT_BACKEND = 5
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


class ToolError(Exception):
    """A failure to show the technician as one sentence: what went wrong and what to do."""

    exit_code = EXIT_FAILED


class NoDeviceError(ToolError):
    """No serial port to use, or it cannot be opened."""

    exit_code = EXIT_NO_DEVICE


class DeviceError(ToolError):
    """The device answered wrongly or not at all."""

    exit_code = EXIT_DEVICE


class BackendUnavailable(ToolError):
    """The backend's database or the broker cannot be reached or refused the request."""

    exit_code = EXIT_BACKEND


class JobFailed(ToolError):
    """The work ran to its end and its result is a failure (a check that did not pass)."""

    exit_code = EXIT_FAILED


class CommandFailed(click.ClickException):
    """What the command boundary raises: click prints `Error: <message>` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: str) -> str:
    """Collapse a multi-line library message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def translate(exc: BaseException) -> CommandFailed | None:
    """The one-line error and exit code for an exception the tools know, None for a bug."""
    if isinstance(exc, ToolError):
        return CommandFailed(one_line(str(exc)), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return CommandFailed("interrupted", EXIT_INTERRUPTED)
    # Libraries' errors that reach the boundary without a more specific translation on the way.
    if isinstance(exc, BackendError):
        return CommandFailed(one_line(str(exc)), EXIT_BACKEND)
    if isinstance(exc, SQLAlchemyError):
        return CommandFailed(f"the backend's database failed: {one_line(str(exc.args[0]))}", EXIT_BACKEND)
    return None


def command_errors(command: F) -> F:
    """Wrap a click command: every known failure becomes one line on stderr and its fixed exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            translated = translate(exc)
            if translated is None:
                raise
            log.debug("command failed", exc_info=True)
            raise translated from None

    return wrapper  # type: ignore[return-value]
