"""Deploying the firmware into a flash folder: .mpy with the package layout, loud compile errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pendant_hardware.flash import (
    FirmwareBuildError,
    default_firmware_dir,
    deploy_firmware,
    read_device_config,
    write_device_config,
    write_sim_ports,
)
from pendant_hardware.virtual_pendant import find_micropython

CONFIG = json.loads((Path(__file__).parents[2] / "docs/protocol-examples/device-config.json").read_text())


def make_firmware(root: Path) -> Path:
    (root / "pendant/boards").mkdir(parents=True)
    (root / "main.py").write_text("import pendant.boards.sim\nprint(pendant.boards.sim.NAME)\n")
    (root / "pendant/__init__.py").write_text("")
    (root / "pendant/boards/__init__.py").write_text("")
    (root / "pendant/boards/sim.py").write_text('NAME = "sim board"\n')
    (root / "pendant/defaults.json").write_text("{}")
    return root


def test_deploy_compiles_the_package_and_runs(tmp_path: Path) -> None:
    firmware = make_firmware(tmp_path / "firmware")
    flash = tmp_path / "flash"
    written = deploy_firmware(flash, firmware)
    relative = sorted(path.relative_to(flash).as_posix() for path in written)
    assert relative == [
        "main.py",
        "pendant/__init__.mpy",
        "pendant/boards/__init__.mpy",
        "pendant/boards/sim.mpy",
        "pendant/defaults.json",
    ]
    assert (flash / "main.py").read_text() == (firmware / "main.py").read_text()
    assert not list(flash.rglob("*.py"))[1:]  # only main.py stays source
    result = subprocess.run(
        [find_micropython(), "main.py"], cwd=flash, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout == "sim board\n", result.stderr


def test_redeploy_removes_stale_modules_and_keeps_device_files(tmp_path: Path) -> None:
    firmware = make_firmware(tmp_path / "firmware")
    flash = tmp_path / "flash"
    (firmware / "pendant/old.py").write_text("X = 1\n")
    deploy_firmware(flash, firmware)
    (flash / "state.json").write_text('{"boot": 3}')
    (firmware / "pendant/old.py").unlink()
    deploy_firmware(flash, firmware)
    assert not (flash / "pendant/old.mpy").exists()
    assert (flash / "state.json").read_text() == '{"boot": 3}'


def test_compile_error_fails_loudly_and_keeps_the_old_build(tmp_path: Path) -> None:
    firmware = make_firmware(tmp_path / "firmware")
    flash = tmp_path / "flash"
    deploy_firmware(flash, firmware)
    (firmware / "pendant/broken.py").write_text("def oops(:\n")
    with pytest.raises(FirmwareBuildError) as error:
        deploy_firmware(flash, firmware)
    assert str(error.value) == "pendant/broken.py line 1: SyntaxError: invalid syntax"
    assert (flash / "pendant/boards/sim.mpy").exists()
    assert not (flash / "pendant/broken.mpy").exists()


def test_missing_firmware_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FirmwareBuildError, match="expected main.py"):
        deploy_firmware(tmp_path / "flash", tmp_path / "nothing")


def test_config_and_sim_ports(tmp_path: Path) -> None:
    write_device_config(tmp_path, CONFIG)
    assert json.loads((tmp_path / "config.json").read_text()) == CONFIG
    write_sim_ports(tmp_path, 4001, 4002)
    assert json.loads((tmp_path / "sim.json").read_text()) == {
        "modem": ["127.0.0.1", 4001],
        "io": ["127.0.0.1", 4002],
    }
    with pytest.raises(ValueError, match="device_id"):
        write_device_config(tmp_path, {"device_id": "PD/1"})


def test_the_ca_goes_beside_config_json_and_comes_back(tmp_path: Path) -> None:
    ca = (Path(__file__).parents[2] / "docs/protocol-examples/ca.pem").read_text()
    write_device_config(tmp_path, {**CONFIG, "files": {"ca.pem": ca}})
    assert json.loads((tmp_path / "config.json").read_text()) == CONFIG  # no PEM in it
    assert (tmp_path / "ca.pem").read_text() == ca
    assert read_device_config(tmp_path / "config.json") == {**CONFIG, "files": {"ca.pem": ca}}
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ValueError, match="not a readable device config"):
        read_device_config(tmp_path / "config.json")
    with pytest.raises(ValueError, match="plain name"):
        write_device_config(tmp_path, {**CONFIG, "files": {"../ca.pem": ca}})


def test_the_repository_firmware_compiles(tmp_path: Path) -> None:
    firmware = default_firmware_dir()
    if not (firmware / "main.py").exists():
        pytest.skip("firmware/main.py is not written yet")
    shutil.copytree(firmware, tmp_path / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    written = deploy_firmware(tmp_path / "flash", tmp_path / "firmware")
    assert any(path.suffix == ".mpy" for path in written)
