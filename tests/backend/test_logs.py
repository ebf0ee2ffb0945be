"""Log lines: one per event, text or JSON, with the device and alarm ids as fields (issue 13, item 4)."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_backend import alarms, logs
from pendant_backend.db import make_engine, session_scope
from pendant_backend.ingest import Ingest
from pendant_backend.models import Device
from pendant_tools.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "protocol-examples"
ALARM = (EXAMPLES / "alarm.json").read_bytes().rstrip(b"\n")
TELE = (EXAMPLES / "tele.json").read_bytes().rstrip(b"\n")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the `pendant_backend` loggers write, through the JSON formatter and the fields' filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.AboutFilter())
    logger = logging.getLogger("pendant_backend")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_the_fields_of_the_enclosing_about_blocks(json_lines: io.StringIO) -> None:
    log = logging.getLogger("pendant_backend.test")
    with logs.about(device_id="pd-0007"):
        log.info("first %s", "line")
        with logs.about(alarm_id="A-3"):
            log.warning("second")
        log.info("third", extra={"device_id": "pd-0009"})  # the call's own field wins
    log.info("outside")
    first, second, third, outside = parsed(json_lines)
    assert first["message"] == "first line" and first["level"] == "INFO"
    assert first["logger"] == "pendant_backend.test" and first["device_id"] == "pd-0007"
    assert "alarm_id" not in first
    assert (second["device_id"], second["alarm_id"], second["level"]) == ("pd-0007", "A-3", "WARNING")
    assert third["device_id"] == "pd-0009"
    assert "device_id" not in outside and "alarm_id" not in outside
    assert datetime.fromisoformat(str(first["time"])).tzinfo is not None


def test_a_traceback_stays_inside_its_one_json_line(json_lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("pendant_backend.test").exception("it failed")
    [line] = json_lines.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "it failed"
    assert "RuntimeError: boom" in str(record["exception"]) and "Traceback" in str(record["exception"])


def test_a_text_line_stays_one_line_with_its_traceback() -> None:
    record = logging.LogRecord("pendant_backend.x", logging.ERROR, __file__, 1, "two\nlines", None, None)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = logs.TextFormatter().format(record)
    assert "\n" not in text
    assert "ERROR pendant_backend.x: two\\nlines" in text and "ValueError: bad" in text


def test_about_refuses_a_field_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="log fields"), logs.about(victim="x"):
        pass


def test_configure_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure(log_format="yaml")


def test_the_stored_alarm_and_its_ack_log_the_device_and_the_alarm(
    json_lines: io.StringIO, sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "pendant.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with session_scope(engine) as session:
            session.add(Device(device_id="pd-0001", password_hash="x", loan_state="issued"))
        ingest = Ingest(engine, clock=lambda: NOW)
        assert ingest.handle("pendant/v1/pd-0001/alarm", ALARM).new
        ingest.handle("pendant/v1/pd-0001/tele", b"{not json")
        [stored] = [r for r in parsed(json_lines) if "alarm_id" in r]
        ref = str(stored["alarm_id"])
        alarms.acknowledge_alarm(engine, ref=ref, operator="op1", now=NOW)
    finally:
        engine.dispose()
    records = parsed(json_lines)
    assert stored["device_id"] == "pd-0001" and ref in str(stored["message"])
    [rejected] = [r for r in records if "rejected" in str(r["message"])]
    assert rejected["device_id"] == "pd-0001" and rejected["level"] == "WARNING"
    [acked] = [r for r in records if "acknowledged by op1" in str(r["message"])]
    assert (acked["device_id"], acked["alarm_id"]) == ("pd-0001", ref)


def test_the_cli_logs_json_when_asked(
    monkeypatch: pytest.MonkeyPatch, sqlite_template: Path, tmp_path: Path
) -> None:
    # A data folder with one heartbeat from 2020: `backend purge` purges it, and says so in the log.
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "pendant.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with session_scope(engine) as session:
            session.add(Device(device_id="pd-0001", password_hash="x", loan_state="issued"))
        old = datetime(2020, 1, 1, tzinfo=UTC)
        assert Ingest(engine, clock=lambda: old).handle("pendant/v1/pd-0001/tele", TELE).leaf == "tele"
    finally:
        engine.dispose()
    # The test runner's handlers sit on the root logger, and configure() leaves set-up logging alone
    # (as basicConfig does): take them off for this one call.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("PENDANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PENDANT_LOG_FORMAT", raising=False)
    monkeypatch.delenv("PENDANT_DB_URL", raising=False)
    try:
        result = CliRunner().invoke(main, ["--log-format", "json", "backend", "purge", "--json"])
    finally:
        for handler in root.handlers:
            handler.close()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [purged] = [line for line in lines if "retention: purged" in line["message"]]
    assert purged["logger"] == "pendant_backend.retention" and purged["level"] == "INFO"


def test_a_bad_log_format_in_the_environment_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PENDANT_LOG_FORMAT", "yaml")
    result = CliRunner().invoke(main, ["fleet", "--help"])
    assert result.exit_code == 2
    assert "PENDANT_LOG_FORMAT" in result.output and "'yaml' is not one of 'text', 'json'" in result.output
