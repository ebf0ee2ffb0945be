"""Log lines: one per event, as text or as JSON, carrying the device and alarm they concern as fields.

`configure()` sets up the process's logging once (the CLI calls it). Code that works for one device or one
alarm wraps that work in `about(device_id=..., alarm_id=...)`, so that every line logged inside it, by any
module on that thread, carries the ids as fields: a log collector (journald, Loki, Elasticsearch) can then
find every line about one pendant without parsing messages.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TextIO

FORMATS = ("text", "json")
# The fields `about()` sets; a log call may also pass them itself: `extra={"device_id": ...}`.
FIELDS = ("device_id", "alarm_id")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A mapping never changed in place: `about()` sets a new one and restores the old.
_about: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "pendant_log_about", default=MappingProxyType({})
)


@contextmanager
def about(**fields: str | None) -> Iterator[None]:
    """Every line logged in this block, on this thread, carries these fields (None ones are left out)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"log fields must be among {FIELDS}, not {sorted(unknown)}")
    token = _about.set({**_about.get(), **{key: value for key, value in fields.items() if value is not None}})
    try:
        yield
    finally:
        _about.reset(token)


class AboutFilter(logging.Filter):
    """Copies the fields of the enclosing `about()` blocks onto each record (a field passed in `extra`
    wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _about.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """The familiar text line, kept to one line: a multi-line message or a traceback has its line breaks
    written as `\\n`, so that journald and `grep` see one event as one line."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, thread, message, the device and
    alarm ids when known, and the exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(*, level: int = logging.INFO, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send the process's log lines to `stream` (stderr) in `log_format` ("text" or "json").

    Like `logging.basicConfig`, it leaves logging alone when the root logger has handlers already (a
    test runner's, or an embedding program's)."""
    if log_format not in FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(AboutFilter())
    root.addHandler(handler)
    root.setLevel(level)
