"""`pendant demo` with a PENDANT_* setting it cannot read: one clear line, no traceback, nothing started
(issue 13: other commands handled it, the demo printed a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_tools.cli import main


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PENDANT_MQTT_PORT", "abc", "PENDANT_MQTT_PORT must be a port number, not 'abc'"),
        ("PENDANT_DB_URL", "mysql://u:secret@db/p", "names a database this project does not run on"),
        ("PENDANT_MQTT_PLAIN", "maybe", "PENDANT_MQTT_PLAIN must be on or off"),
    ],
)
def test_a_bad_setting_stops_the_demo_with_one_clear_line(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["demo"], env={"PENDANT_DATA_DIR": str(data), name: value})
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not the setting's error
    assert "secret" not in result.output
    assert not data.exists()  # nothing was made before the settings were read
