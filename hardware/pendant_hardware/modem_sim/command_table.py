"""The modem's command table: which coroutine answers which command name and form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pendant_hardware.modem_sim.at_parser import EXEC, READ, SET, TEST, AtCommand

Handler = Callable[[AtCommand], Awaitable[None]]


class CommandTable:
    """Maps (name, form) to a handler. A handler writes its information lines and returns for `OK`,
    or raises AtError / CmeError; anything not in the table is answered with `ERROR`."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def add(
        self,
        name: str,
        *,
        exec: Handler | None = None,  # noqa: A002 (the V.250 name of the form)
        read: Handler | None = None,
        test: Handler | None = None,
        set: Handler | None = None,  # noqa: A002
    ) -> None:
        """Register the handlers of one command; a name registered twice is a programming error."""
        for form, handler in ((EXEC, exec), (READ, read), (TEST, test), (SET, set)):
            if handler is None:
                continue
            key = (name.upper(), form)
            if key in self._handlers:
                raise ValueError(f"AT{name} ({form}) is registered twice")
            self._handlers[key] = handler

    def lookup(self, command: AtCommand) -> Handler | None:
        """The handler for this command, or None when the modem does not know it."""
        return self._handlers.get((command.name, command.form))

    def forms(self) -> list[tuple[str, str]]:
        """Every (name, form) the table answers, sorted (for conformance tests)."""
        return sorted(self._handlers)

    def names(self) -> list[str]:
        """Every command name in the table, sorted (for documentation and tests)."""
        return sorted({name for name, _ in self._handlers})
