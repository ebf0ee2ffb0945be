"""Firmware releases (issue 14, item 1): `pendant release build|list|show` and the store behind them
(pendant_backend.releases): the real firmware compiled with the real mpy-cross, a manifest of every
file's SHA-256 and size, written whole or not at all, never changed, checked on every read."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pendant_backend import releases
from pendant_backend.releases import ReleaseError, list_releases, load_release, parse_version, write_release
from pendant_hardware.flash import default_firmware_dir, mpy_cross_command
from pendant_tools.cli import main
from pendant_tools.deploying import build_manifest


def pendant(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PENDANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PENDANT_DB_URL", raising=False)
    return tmp_path / "data"


def firmware_at(folder: Path, version: str) -> Path:
    """A copy of firmware/ whose FW is `version`."""
    shutil.copytree(default_firmware_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    init = folder / "pendant" / "__init__.py"
    text = init.read_text()
    init.write_text(text.replace(f'FW = "{_running()}"', f'FW = "{version}"'))
    return folder


def _running() -> str:
    from pendant_tools.deploying import firmware_version

    return firmware_version(default_firmware_dir())


# -- pure rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"), [("0.2.0", (0, 2, 0)), ("1.10", (1, 10)), ("2.0.0.7", (2, 0, 0, 7))]
)
def test_versions_compare_as_numbers(text: str, parsed: tuple[int, ...]) -> None:
    assert parse_version(text) == parsed
    assert parse_version("0.10.0") > parse_version("0.9.9")


@pytest.mark.parametrize("text", ["", "1", "v1.0", "1.0-rc1", "1..0", "1.0.0.0.0", "../1.0"])
def test_a_malformed_version_is_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(ReleaseError, match="like 0.3.0"):
        parse_version(text)


def _release(store: Path, version: str = "0.3.0", min_from: str = "0.2.0") -> releases.Release:
    return write_release(
        store,
        version=version,
        files=[("main.py", b"import pendant\n"), ("pendant/app.mpy", b"M\x06\x00\x1f")],
        min_from=min_from,
        boards=["t_a7670e", "sim"],
        mpy="6.3",
    )


def test_who_may_take_a_release(tmp_path: Path) -> None:
    offered = _release(tmp_path)
    assert offered.can_update("0.2.0", "t_a7670e") is None
    assert offered.can_update("0.2.5", "sim") is None
    assert "not for a lilygo_v2 board" in offered.can_update("0.2.0", "lilygo_v2")
    assert "not newer than the running 0.3.0" in offered.can_update("0.3.0", "sim")
    assert "not newer than the running 0.4.0" in offered.can_update("0.4.0", "sim")
    assert "updates from 0.2.0 or later, not from 0.1.9" in offered.can_update("0.1.9", "sim")


# -- the store ---------------------------------------------------------------------------------------


def test_a_release_is_stored_whole_with_a_manifest_of_every_file(tmp_path: Path) -> None:
    made = _release(tmp_path)
    manifest = json.loads((tmp_path / "0.3.0" / "manifest.json").read_text())
    assert manifest["version"] == "0.3.0" and manifest["min_from"] == "0.2.0"
    assert manifest["boards"] == ["sim", "t_a7670e"] and manifest["mpy"] == "6.3"
    assert manifest["files"] == [
        {"path": "main.py", "sha256": hashlib.sha256(b"import pendant\n").hexdigest(), "size": 15},
        {"path": "pendant/app.mpy", "sha256": hashlib.sha256(b"M\x06\x00\x1f").hexdigest(), "size": 4},
    ]
    assert manifest["total_bytes"] == 19 == made.total_bytes
    assert (tmp_path / "0.3.0" / "files" / "pendant" / "app.mpy").read_bytes() == b"M\x06\x00\x1f"
    assert [p.name for p in tmp_path.iterdir()] == ["0.3.0"], "the scratch folder is left behind"
    assert load_release(tmp_path, "0.3.0").as_json() == manifest


def test_a_release_never_changes(tmp_path: Path) -> None:
    _release(tmp_path)
    before = (tmp_path / "0.3.0" / "manifest.json").read_bytes()
    with pytest.raises(ReleaseError, match="already exists.*never changes"):
        _release(tmp_path, min_from="0.1.0")
    assert (tmp_path / "0.3.0" / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    ("files", "min_from", "message"),
    [
        ([("../boot.py", b"x")], "0.2.0", "not a file path"),
        ([("/main.py", b"x")], "0.2.0", "not a file path"),
        ([("main.py", b"x"), ("main.py", b"y")], "0.2.0", "twice"),
        ([], "0.2.0", "has no files"),
        ([("main.py", b"x")], "0.4.0", "newer than the release 0.3.0 itself"),
    ],
)
def test_a_release_that_could_not_be_trusted_is_not_written(
    tmp_path: Path, files: list[tuple[str, bytes]], min_from: str, message: str
) -> None:
    with pytest.raises(ReleaseError, match=message):
        write_release(tmp_path, version="0.3.0", files=files, min_from=min_from, boards=["sim"], mpy="6.3")
    assert not (tmp_path / "0.3.0").exists()


def test_a_damaged_release_is_refused_on_read_and_a_broken_folder_is_named(tmp_path: Path) -> None:
    _release(tmp_path)
    _release(tmp_path, version="0.3.1")
    (tmp_path / "0.3.0" / "files" / "pendant" / "app.mpy").write_bytes(b"M\x06\x00\x20")
    with pytest.raises(ReleaseError, match="damaged: pendant/app.mpy differs from its manifest"):
        load_release(tmp_path, "0.3.0")
    (tmp_path / "0.3.1" / "files" / "main.py").unlink()
    with pytest.raises(ReleaseError, match="main.py is missing"):
        load_release(tmp_path, "0.3.1")
    (tmp_path / "0.4.0").mkdir()
    (tmp_path / "0.4.0" / "manifest.json").write_text("{not json")
    found, broken = list_releases(tmp_path)
    assert [r.version for r in found] == ["0.3.1", "0.3.0"]
    assert len(broken) == 1 and "0.4.0/manifest.json cannot be read" in broken[0]


# -- the CLI on the real firmware ----------------------------------------------------------------------


def test_build_compiles_the_firmware_as_deploy_does(data_dir: Path, tmp_path: Path) -> None:
    firmware = firmware_at(tmp_path / "fw", _running())  # a copy: what is compiled twice stays the same
    code, out, err = pendant("release", "build", "--firmware", str(firmware), "--min-from", "0.1.0", "--json")
    assert code == 0, out + err
    manifest = json.loads(out)
    expected = build_manifest(firmware, mpy_cross_command())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {f.path: f.sha256 for f in expected}
    assert manifest["version"] == _running() and manifest["min_from"] == "0.1.0"
    assert manifest["boards"] == ["sim", "t_a7670e"]
    stored = data_dir / "releases" / _running() / "files"
    assert (stored / "pendant" / "app.mpy").read_bytes()[:1] == b"M"  # compiled, not source
    assert [p.relative_to(stored).as_posix() for p in stored.rglob("*.py")] == ["main.py"]

    code, out, err = pendant("release", "build", "--firmware", str(firmware))
    assert code == 1 and "already exists" in err and "raise FW" in err


def test_list_and_show(data_dir: Path, tmp_path: Path) -> None:
    code, out, _ = pendant("release", "list")
    assert code == 0 and "no releases" in out and "pendant release build" in out
    assert pendant("release", "build", "--board", "t_a7670e")[0] == 0
    newer = firmware_at(tmp_path / "fw", "9.0.0")
    assert pendant("release", "build", "--firmware", str(newer), "--min-from", _running())[0] == 0

    code, out, _ = pendant("release", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [r["version"] for r in listed] == ["9.0.0", _running()]
    assert listed[1]["boards"] == ["t_a7670e"] and "files" not in listed[0]
    code, out, _ = pendant("release", "list")
    assert code == 0 and out.splitlines()[0].split() == [
        "VERSION",
        "FROM",
        "BOARDS",
        "FILES",
        "BYTES",
        "MPY",
        "BUILT",
    ]
    assert out.splitlines()[1].split()[:3] == ["9.0.0", _running(), "sim,t_a7670e"]

    code, out, _ = pendant("release", "show", "9.0.0")
    assert code == 0 and "every file matches its SHA-256" in out and "pendant/app.mpy" in out
    (data_dir / "releases" / "9.0.0" / "files" / "main.py").write_text("print('tampered')\n")
    code, out, err = pendant("release", "show", "9.0.0")
    assert code == 1 and "release 9.0.0 is damaged: main.py differs from its manifest" in err
    code, _, err = pendant("release", "show", "7.0.0")
    assert code == 1 and "no release 7.0.0" in err and f"releases there: 9.0.0, {_running()}" in err


def test_build_refuses_what_it_cannot_make(data_dir: Path, tmp_path: Path) -> None:
    code, _, err = pendant("release", "build", "--board", "esp8266")
    assert code == 2 and "esp8266: no such board" in err and "sim, t_a7670e" in err
    code, _, err = pendant("release", "build", "--min-from", "latest")
    assert code == 1 and "'latest' is not a firmware version" in err
    broken = firmware_at(tmp_path / "fw", "9.1.0")
    (broken / "pendant" / "alarm.py").write_text("def broken(:\n")
    code, _, err = pendant("release", "build", "--firmware", str(broken))
    assert code == 1 and "does not compile" in err and "pendant/alarm.py" in err
    assert not (data_dir / "releases" / "9.1.0").exists()
