"""`pendant server install` (issue 13, Services): the units it renders pass systemd's own checks, a wrong
one fails them, and the command writes, prints and refuses as its --help says.

systemd-analyze verify exits 0 on an unknown key or a value it cannot parse (it logs the line and ignores
it), so a unit passes here only when verify prints nothing at all. It does check that ExecStart's binary
exists, hence the real `pendant` of this venv; it does not look up User= (a user that does not exist
passes), which is why the User= lines are checked by reading the units.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_tools import cmd_server
from pendant_tools.cli import main
from pendant_tools.server_units import (
    BACKEND,
    BROKER,
    SERVICES,
    TARGET,
    UNIT_NAMES,
    WEB,
    LayoutError,
    ServerLayout,
    check_layout,
    parse_environment_file,
    render_units,
)

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
# The executable the units start, in the tests: one outside the folders the services' sandbox hides
# (this checkout and its venv may be under /tmp, as CI's clean clone is, which the command refuses), and
# one that exists, as systemd-analyze verify checks. What it runs is not the point of these tests.
PENDANT_BIN = "/usr/bin/true"
DATA = "/var/lib/pendant"
# systemd-analyze security scores 0 (locked down) to 10 (exposed), its --threshold in tenths; the units
# score 1.7 on systemd 252, a service with no hardening 9.6.
MAX_EXPOSURE_TENTHS = 25

needs_systemd = pytest.mark.skipif(
    not Path(SYSTEMD_ANALYZE).exists(), reason="systemd-analyze is not installed"
)


def _layout(env_file: Path) -> ServerLayout:
    return ServerLayout(data_dir=DATA, env_file=str(env_file), user="pendant", pendant_bin=PENDANT_BIN)


def _write(folder: Path, units: dict[str, str]) -> list[str]:
    for name, text in units.items():
        (folder / name).write_text(text)
    return [str(folder / name) for name in units]


def _verify(paths: list[str]) -> str:
    """What systemd-analyze verify says about the units: '' when they are right."""
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *paths],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(paths[0]).parent,
    )
    said = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and not said:
        said = f"exit code {done.returncode}"
    return said


def _keys(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit's sections as (key, value) lists: systemd allows a key more than once (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def _values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in _keys(text)[section] if k == key]


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "pendant.env"
    path.write_text("# the settings of the services\nPENDANT_MQTT_PUBLIC_HOST=mqtt.example.org\n")
    return path


@needs_systemd
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, env_file: Path) -> None:
    paths = _write(tmp_path, render_units(_layout(env_file)))
    assert _verify(paths) == ""


@needs_systemd
@pytest.mark.parametrize(
    ("right", "wrong"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict"),  # a misspelt option
        ("ProtectSystem=strict", "ProtectSystem=strictly"),  # a value systemd cannot read
        (f"ExecStart={PENDANT_BIN} broker run", "ExecStart=/nonexistent/pendant broker run"),
    ],
    ids=["unknown option", "bad value", "missing binary"],
)
def test_a_wrong_unit_fails_the_same_check(tmp_path: Path, env_file: Path, right: str, wrong: str) -> None:
    units = render_units(_layout(env_file))
    assert right in units[BROKER]
    units[BROKER] = units[BROKER].replace(right, wrong)
    assert _verify(_write(tmp_path, units)) != ""


@needs_systemd
@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_sandboxed(tmp_path: Path, env_file: Path, name: str) -> None:
    _write(tmp_path, render_units(_layout(env_file)))
    done = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "security",
            "--offline=true",
            f"--threshold={MAX_EXPOSURE_TENTHS}",
            str(tmp_path / name),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-300:] + done.stderr


def test_each_service_runs_its_command_as_the_user_in_the_data_folder(env_file: Path) -> None:
    units = render_units(_layout(env_file))
    assert set(units) == set(UNIT_NAMES)
    commands = {BROKER: "broker run", BACKEND: "backend run", WEB: "backend web"}
    for name, command in commands.items():
        text = units[name]
        assert _values(text, "Service", "ExecStart") == [f"{PENDANT_BIN} {command}"]
        assert _values(text, "Service", "Type") == ["simple"]  # `pendant broker run` stays in the foreground
        assert _values(text, "Service", "Restart") == ["always"]
        assert _values(text, "Service", "User") == ["pendant"]
        assert _values(text, "Service", "Group") == ["pendant"]
        assert _values(text, "Service", "WorkingDirectory") == [DATA]
        assert _values(text, "Service", "ReadWritePaths") == [DATA]
        assert f"PENDANT_DATA_DIR={DATA}" in _values(text, "Service", "Environment")
        assert _values(text, "Service", "EnvironmentFile") == [str(env_file)]
        for option in (
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
        ):
            key, value = option.split("=")
            assert _values(text, "Service", key) == [value], (name, option)
        assert _values(text, "Unit", "PartOf") == [TARGET]
        assert _values(text, "Install", "WantedBy") == [TARGET]
    for name in (BACKEND, WEB):
        assert BROKER in _values(units[name], "Unit", "After")[0].split()
        assert _values(units[name], "Unit", "Wants") == [BROKER]
    assert BACKEND in _values(units[WEB], "Unit", "After")[0].split()
    assert _values(units[TARGET], "Unit", "Wants")[0].split() == list(SERVICES)
    assert _values(units[TARGET], "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"data_dir": "/home/alice/data"}, "under /home"),
        ({"data_dir": "/tmp/pendant"}, "under /tmp"),
        ({"pendant_bin": "/root/pendant/.venv/bin/pendant"}, "under /root"),
        ({"data_dir": "/srv/my data"}, "no white space"),
        ({"data_dir": "relative/data"}, "absolute path"),
        ({"env_file": "/etc/pendant/%i.env"}, "no white space, quotes, %"),
        ({"user": "root"}, "must not run as root"),
        ({"user": "Pendant Service"}, "not a valid system user name"),
    ],
)
def test_layouts_systemd_would_misread_are_refused(change: dict[str, str], says: str) -> None:
    layout = ServerLayout(**{**_layout(Path("/etc/pendant/pendant.env")).__dict__, **change})
    with pytest.raises(LayoutError, match=says):
        check_layout(layout)


def test_the_settings_file_is_read_as_systemd_reads_it() -> None:
    text = "# comment\n; comment\n\nPENDANT_A=1\n  PENDANT_B = \"two words\"\nPENDANT_C='x'\nPENDANT_D=\n"
    assert parse_environment_file(text) == {
        "PENDANT_A": "1",
        "PENDANT_B": "two words",
        "PENDANT_C": "x",
        "PENDANT_D": "",
    }
    with pytest.raises(LayoutError, match="line 2 is not NAME=value"):
        parse_environment_file("PENDANT_A=1\nexport PENDANT_B\n")
    with pytest.raises(LayoutError, match="line 1 has an unclosed quote"):
        parse_environment_file('PENDANT_A="open\n')


@pytest.fixture(autouse=True)
def python_outside_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv's Python may live under /root (pyenv), which the sandbox hides and the command refuses
    (test_a_python_under_home_is_refused); the other command tests check everything else."""
    monkeypatch.setattr(cmd_server, "_read_only_paths", lambda pendant_bin, frontend_dir: ())


def test_a_python_under_home_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "pendant"
    script.write_text("#!/root/.pyenv/versions/3.11.7/bin/python3\nimport sys\n")
    assert cmd_server.interpreter_of(script) == "/root/.pyenv/versions/3.11.7/bin/python3"
    layout = _layout(Path("/etc/pendant/pendant.env"))
    with pytest.raises(
        LayoutError, match="program file /root/.pyenv/versions/3.11.7/bin/python3 is under /root"
    ):
        check_layout(layout, code_paths=(cmd_server.interpreter_of(script),))


def _install(*args: str) -> tuple[int, str]:
    # A --pendant in `args` comes later and wins.
    result = CliRunner().invoke(
        main, ["server", "install", "--pendant", PENDANT_BIN, *args], prog_name="pendant"
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_dry_run_prints_the_units_and_writes_nothing(tmp_path: Path, env_file: Path) -> None:
    output = tmp_path / "not-made"
    code, out = _install("--data", DATA, "--env-file", str(env_file), "--output", str(output), "--dry-run")
    assert code == 0, out
    assert not output.exists()
    for name in UNIT_NAMES:
        assert f"# {output / name}\n" in out
    assert f"ExecStart={PENDANT_BIN} broker run" in out
    assert "dry run: nothing written" in out
    assert "systemctl enable --now pendant.target" in out


@needs_systemd
def test_json_reports_the_units_it_wrote(tmp_path: Path, env_file: Path) -> None:
    code, out = _install("--data", DATA, "--env-file", str(env_file), "--output", str(tmp_path), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["data_dir"] == DATA and report["env_file"] == str(env_file) and report["user"] == "pendant"
    assert [u["path"] for u in report["units"]] == [str(tmp_path / n) for n in UNIT_NAMES]
    for unit in report["units"]:
        assert unit["written"] is True
        assert Path(unit["path"]).read_text() == unit["text"]
        assert Path(unit["path"]).stat().st_mode & 0o777 == 0o644
    assert "systemctl daemon-reload" in report["next_steps"]
    assert _verify([u["path"] for u in report["units"]]) == ""


def test_a_relative_data_folder_is_made_absolute(monkeypatch: pytest.MonkeyPatch, env_file: Path) -> None:
    monkeypatch.chdir("/var")
    code, out = _install("--data", "lib/pendant-test", "--env-file", str(env_file), "--dry-run")
    assert code == 0, out
    assert "WorkingDirectory=/var/lib/pendant-test\n" in out


@pytest.mark.parametrize(
    ("settings", "args", "says"),
    [
        (None, (), "does not exist: write the settings there first"),
        ("PENDANT_MQTT_PORT=eighty\n", (), "PENDANT_MQTT_PORT must be a port number"),
        ("PENDANT_DATA_DIR=/srv/other\n", ("--data", DATA), "sets PENDANT_DATA_DIR=/srv/other"),
        ("PENDANT_DB_URL=sqlite:////srv/db/pendant.db\n", ("--data", DATA), "outside the data folder"),
        ("", ("--data", "/home/alice/pendant"), "under /home"),
        (
            "",
            ("--data", DATA, "--pendant", "/nonexistent/pendant"),
            "/nonexistent/pendant is not an executable",
        ),
    ],
    ids=[
        "missing settings file",
        "bad setting",
        "two data folders",
        "database outside",
        "home",
        "no pendant",
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, settings: str | None, args: tuple[str, ...], says: str
) -> None:
    env_file = tmp_path / "pendant.env"
    if settings is not None:
        env_file.write_text(settings)
    code, out = _install("--env-file", str(env_file), *args, "--dry-run")
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], out
    if settings is None:
        assert str(env_file) in errors[0]  # the absolute path, as the user will look for it


def test_an_output_folder_that_is_not_there_is_refused(tmp_path: Path, env_file: Path) -> None:
    output = tmp_path / "missing"
    code, out = _install("--data", DATA, "--env-file", str(env_file), "--output", str(output))
    assert code == 1, out
    assert (
        out.strip()
        == f"Error: the output folder {output} does not exist: create it or choose another --output"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
def test_an_output_folder_it_cannot_write_is_refused(tmp_path: Path, env_file: Path) -> None:
    output = tmp_path / "locked"
    output.mkdir(mode=0o500)
    code, out = _install("--data", DATA, "--env-file", str(env_file), "--output", str(output))
    assert code == 1, out
    assert f"cannot write to {output}: run as root" in out
