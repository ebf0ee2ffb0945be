"""Progress of long work, as the scripting API reports it and the commands show it.

The API functions take a `report(stage, done, total)` callable and call it as the work goes on: a new
`stage` starts a new bar (or, with total 0, one line); `done` is the absolute position within it. The
commands pass a `ProgressBars` (click progress bars on stderr, so stdout stays clean for --json);
scripts pass nothing, or their own function.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

Report = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A report that shows nothing (the default of the API functions)."""


class ProgressBars:
    """A `report` that draws one click progress bar per stage on stderr; `close()` ends the last one.
    On a terminal the bar redraws itself; elsewhere (a log, a pipe) each stage prints its label once."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stage: str | None = None
        self._bar: Any = None
        self._done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._done = 0
            if total > 0:
                self._bar = click.progressbar(
                    length=total,
                    label=f"{stage:<12}",
                    file=sys.stderr,
                    show_eta=True,
                    show_percent=True,
                    width=30,
                )
                self._bar.__enter__()
            else:
                click.echo(f"{stage}...", err=True)
        if self._bar is not None and done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        """Finish the current bar (the line stays on screen)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        self._stage = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Loggers whose INFO lines (migrations checked, audit chain heads) mean something to an operator reading
# the backend's log, and nothing to a technician watching progress.
_LIBRARY_LOGGERS = ("alembic", "pendant_backend")


def quiet_library_logs() -> None:
    """Keep the backend's INFO logging off the technician's terminal; `pendant -v` (DEBUG) keeps it."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
