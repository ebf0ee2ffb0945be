"""Pure: turns one AT command line into a command (name, form, parameters); no I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The four forms of an extended command (ITU-T V.250): AT+X, AT+X?, AT+X=?, AT+X=<params>.
EXEC, READ, TEST, SET = "exec", "read", "test", "set"

_EXTENDED = re.compile(r"([+*$^][A-Za-z0-9_]+)(.*)", re.DOTALL)


class AtError(Exception):
    """The command fails with a plain `ERROR` (bad syntax, a parameter out of range, an unknown command)."""


class CmeError(Exception):
    """The command fails with `+CME ERROR: <code>` (shown as plain ERROR or text, depending on AT+CMEE)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class CmsError(Exception):
    """An SMS command fails with `+CMS ERROR: <code>` (3GPP TS 27.005; text or number per AT+CMEE)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FinalResult(Exception):
    """The command ends with another final result than OK/ERROR (`NO CARRIER` for ATA without a call)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class Param:
    """One comma-separated parameter: its text without quotes, and whether it was quoted."""

    text: str
    quoted: bool


@dataclass(frozen=True)
class AtCommand:
    """One command of a command line.

    `name` is upper case: "" for a bare `AT`, a letter for a basic command (`E`, `I`), or the prefixed
    name of an extended command (`+CSQ`, `+SIMCOMATI`). `params` is everything after `=` (set form) or
    after the letter of a basic command (`0` in `ATE0`).
    """

    name: str
    form: str
    params: str = ""

    def args(self) -> list[Param | None]:
        """The parameters split at commas outside quotes; an empty parameter is None."""
        return split_params(self.params)


def parse_line(text: str) -> AtCommand | None:
    """Parse a command line (without its CR); None when it does not start with `AT` (modems ignore it)."""
    line = text.strip()
    if len(line) < 2 or line[:2].upper() != "AT":
        return None
    body = line[2:]
    if not body:
        return AtCommand("", EXEC)
    match = _EXTENDED.fullmatch(body)
    if match is None:
        if not body[0].isalpha() and body[0] != "&":
            return AtCommand(body, "invalid")
        size = 2 if body[0] == "&" else 1
        return AtCommand(body[:size].upper(), EXEC, body[size:])
    name, rest = match.group(1).upper(), match.group(2)
    if rest == "":
        return AtCommand(name, EXEC)
    if rest == "?":
        return AtCommand(name, READ)
    if rest == "=?":
        return AtCommand(name, TEST)
    if rest.startswith("="):
        return AtCommand(name, SET, rest[1:])
    return AtCommand(name, "invalid", rest)


def split_params(text: str) -> list[Param | None]:
    """Split `1,"a,b",,x` into [1, "a,b", None, x]; raise AtError on an unterminated quote."""
    if text.strip() == "":
        return []
    params: list[Param | None] = []
    current: list[str] = []
    quoted = False
    in_quotes = False
    for char in text:
        if char == '"':
            if not in_quotes and "".join(current).strip():
                raise AtError(f"quote inside a parameter: {text!r}")
            in_quotes = not in_quotes
            quoted = True
        elif char == "," and not in_quotes:
            params.append(_make_param(current, quoted))
            current, quoted = [], False
        else:
            current.append(char)
    if in_quotes:
        raise AtError(f"unterminated quote: {text!r}")
    params.append(_make_param(current, quoted))
    return params


def _make_param(chars: list[str], quoted: bool) -> Param | None:
    text = "".join(chars)
    if quoted:
        return Param(text, True)
    text = text.strip()
    return Param(text, False) if text else None


def int_param(params: list[Param | None], index: int, low: int, high: int, default: int | None = None) -> int:
    """The unquoted integer at `index`, within low..high; `default` when absent (AtError if none)."""
    param = params[index] if index < len(params) else None
    if param is None:
        if default is None:
            raise AtError(f"parameter {index} is missing")
        return default
    if param.quoted or not re.fullmatch(r"-?\d+", param.text):
        raise AtError(f"parameter {index} is not an integer: {param.text!r}")
    value = int(param.text)
    if not low <= value <= high:
        raise AtError(f"parameter {index} out of range {low}..{high}: {value}")
    return value


def str_param(params: list[Param | None], index: int, default: str | None = None) -> str:
    """The quoted string at `index`; `default` when absent (AtError if none or if not quoted)."""
    param = params[index] if index < len(params) else None
    if param is None:
        if default is None:
            raise AtError(f"parameter {index} is missing")
        return default
    if not param.quoted:
        raise AtError(f"parameter {index} must be quoted: {param.text!r}")
    return param.text


def max_params(params: list[Param | None], count: int) -> None:
    """Raise AtError when there are more than `count` parameters."""
    if len(params) > count:
        raise AtError(f"too many parameters: {len(params)} > {count}")
