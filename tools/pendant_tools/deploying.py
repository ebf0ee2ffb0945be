"""Installing the pendant firmware (firmware/) on a pendant that runs MicroPython: compile the package
to .mpy for the .mpy format the pendant reports, copy over its REPL only the files whose SHA-256 differs
from what the pendant holds, remove stale ones, then hash everything on the pendant again and compare.
The scripting API behind `pendant deploy`:

    from pendant_tools.deploying import deploy
    result = deploy("/dev/ttyUSB0")

The pendant's own files (config.json with its credentials, state.json, outbox/, sim.json) are never
touched: only main.py and the pendant/ package belong to a deployment.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pendant_hardware.flash import default_firmware_dir, mpy_cross_command
from pendant_tools.device_repl import DeviceInfo, PendantRepl
from pendant_tools.errors import DeviceError, JobFailed, ToolError
from pendant_tools.progress import Report, no_progress

PACKAGE = "pendant"
ENTRY = "main.py"
DEPLOYED_ROOTS = [ENTRY, PACKAGE]  # what a deployment owns on the pendant's flash
FLAGS_FILE = "mpy-cross.flags"  # the firmware's own compiler options, beside main.py
PLATFORMS = ("esp32", "linux")  # the pendant's ESP32, and the bench's virtual pendants (unix port)
_EMITS = re.compile(r"mpy-cross emitting mpy v(\d+)\.(\d+)")
_FIRMWARE_VERSION = re.compile(r'^FW\s*=\s*"([^"]+)"', re.MULTILINE)


class BuildError(ToolError):
    """The firmware does not compile, or not for this pendant's MicroPython."""


@dataclass(frozen=True)
class DeployFile:
    """One file as it must be on the pendant: its path there and its bytes."""

    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What to do to make the pendant hold exactly the manifest (pure result of `plan_deployment`)."""

    copy: list[DeployFile]
    unchanged: list[str]
    remove: list[str]

    @property
    def bytes_to_copy(self) -> int:
        """Total size of the files to copy."""
        return sum(len(item.data) for item in self.copy)


@dataclass(frozen=True)
class DeployResult:
    """What was done, for the summary and --json."""

    port: str
    micropython: str
    mpy_abi: str
    firmware_version: str
    files: int
    copied: list[str]
    unchanged: int
    removed: list[str]
    bytes_copied: int
    verified: bool
    rebooted: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# -- pure parts ------------------------------------------------------------------------------------


def mpy_header_version(data: bytes) -> tuple[int, int]:
    """(.mpy version, small-int bits) from a compiled file's 4-byte header ('M', version, flags, bits)."""
    if len(data) < 4 or data[0] != ord("M"):
        raise BuildError("mpy-cross wrote something that is not a .mpy file")
    return data[1], data[3]


def check_compatible(device: DeviceInfo, compiler_version: tuple[int, int]) -> None:
    """BuildError unless bytecode from a compiler emitting `compiler_version` loads on `device`: the
    major .mpy version must match (the sub-version matters only for native code, which we do not use)."""
    if device.mpy_version == 0:
        raise BuildError(f"the pendant's MicroPython {device.micropython} cannot load .mpy files")
    if compiler_version[0] != device.mpy_version:
        emitted = f"v{compiler_version[0]}.{compiler_version[1]}"
        raise BuildError(
            f"the pendant runs MicroPython {device.micropython}, which loads .mpy {device.mpy_abi}, but "
            f"mpy-cross emits {emitted}: flash the current MicroPython first (pendant flash), or name an "
            f"mpy-cross for MicroPython {device.micropython} with --mpy-cross"
        )


def plan_deployment(manifest: Iterable[DeployFile], on_device: Mapping[str, str]) -> Plan:
    """Compare the manifest with the hashes of the deployed files on the pendant: copy what differs or
    is missing, keep what matches, remove what a deployment owns but the manifest no longer has."""
    wanted = {item.path: item for item in manifest}
    copy = [item for path, item in sorted(wanted.items()) if on_device.get(path) != item.sha256]
    unchanged = sorted(path for path, item in wanted.items() if on_device.get(path) == item.sha256)
    remove = sorted(path for path in on_device if path not in wanted and _owned(path))
    return Plan(copy=copy, unchanged=unchanged, remove=remove)


def _owned(path: str) -> bool:
    return path == ENTRY or path.startswith(PACKAGE + "/")


def verify_deployment(manifest: Iterable[DeployFile], on_device: Mapping[str, str]) -> list[str]:
    """Paths whose hash on the pendant differs from the manifest, and stale files; [] if all is well."""
    plan = plan_deployment(manifest, on_device)
    return [item.path for item in plan.copy] + plan.remove


def firmware_version(firmware_dir: Path) -> str:
    """The FW string of firmware/pendant/__init__.py."""
    found = _FIRMWARE_VERSION.search((firmware_dir / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    if not found:
        raise BuildError(f'no FW = "..." version in {firmware_dir / PACKAGE / "__init__.py"}')
    return found.group(1)


# -- building --------------------------------------------------------------------------------------


def compiler_version(command: list[str]) -> tuple[int, int]:
    """The .mpy version an mpy-cross emits (`mpy-cross --version`)."""
    try:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise BuildError(f"cannot run mpy-cross ({' '.join(command)}): {exc.strerror}") from None
    found = _EMITS.search(result.stdout + result.stderr)
    if not found:
        raise BuildError(f"{' '.join(command)} does not say which .mpy version it emits: is it mpy-cross?")
    return int(found.group(1)), int(found.group(2))


def build_flags(firmware_dir: Path) -> list[str]:
    """The firmware's own mpy-cross options (`mpy-cross.flags` beside main.py: e.g. `-X no-source-lines`,
    which leaves the line tables out of the bytecode to save heap), [] when it has none."""
    path = firmware_dir / FLAGS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [word for line in lines if not line.lstrip().startswith("#") for word in line.split()]


def build_manifest(firmware_dir: Path, command: list[str]) -> list[DeployFile]:
    """main.py as source and every module of the package compiled by `command` (mpy-cross) with the
    firmware's flags, other package files as they are. Each module's source name is its path on the
    flash (`pendant/app.mpy`): what tracebacks show, and the same string as the module's __file__, so
    the pendant keeps one copy of it. BuildError naming every module that failed to compile."""
    entry, package = firmware_dir / ENTRY, firmware_dir / PACKAGE
    if not entry.is_file() or not package.is_dir():
        raise BuildError(f"no firmware in {firmware_dir}: expected {ENTRY} and a {PACKAGE}/ folder")
    flags = build_flags(firmware_dir)
    files = [DeployFile(ENTRY, entry.read_bytes())]
    failures = []
    with tempfile.TemporaryDirectory(prefix="pendant-deploy-") as scratch:
        for source in sorted(package.rglob("*")):
            relative = source.relative_to(package)
            if source.is_dir() or "__pycache__" in relative.parts:
                continue
            device_path = f"{PACKAGE}/{relative.as_posix()}"
            if source.suffix != ".py":
                files.append(DeployFile(device_path, source.read_bytes()))
                continue
            output = Path(scratch) / relative.with_suffix(".mpy")
            output.parent.mkdir(parents=True, exist_ok=True)
            compiled_path = device_path[: -len(".py")] + ".mpy"
            result = subprocess.run(
                [*command, *flags, "-o", str(output), "-s", compiled_path, str(source)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0 and (result.stderr or result.stdout).lstrip().startswith("usage:"):
                raise BuildError(
                    f"{' '.join(command)} does not take the firmware's mpy-cross options {' '.join(flags)} "
                    f"({FLAGS_FILE}): use the mpy-cross of a newer MicroPython, or flash the pendant with "
                    "the current MicroPython (pendant flash) and deploy with the installed one"
                )
            if result.returncode != 0:
                message = (result.stderr or result.stdout).strip().splitlines()
                failures.append(f"{device_path}: {message[-1] if message else 'mpy-cross failed'}")
                continue
            files.append(DeployFile(compiled_path, output.read_bytes()))
    if failures:
        raise BuildError("the firmware does not compile: " + "; ".join(failures))
    return files


# -- the whole job ---------------------------------------------------------------------------------


def deploy(
    port: str,
    *,
    firmware_dir: Path | None = None,
    mpy_cross: list[str] | None = None,
    reboot: bool = True,
    report: Report = no_progress,
) -> DeployResult:
    """Make the pendant on `port` run the firmware of `firmware_dir` (default: this repository's).

    Raises NoDeviceError/DeviceError (no pendant or no REPL), BuildError (does not compile, or not for
    the pendant's MicroPython) or JobFailed (the pendant's files do not match after copying)."""
    firmware_dir = firmware_dir or default_firmware_dir()
    command = mpy_cross or mpy_cross_command()
    version = firmware_version(firmware_dir)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    report("connect", 0, 0)
    with PendantRepl(port) as repl:
        device = repl.info()
        if device.platform not in PLATFORMS:
            raise DeviceError(f"the MicroPython on {port} runs on {device.platform!r}: this is not a pendant")
        check_compatible(device, compiler_version(command))
        seconds["connect"] = _since(started)

        started = time.monotonic()
        report("compile", 0, 0)
        manifest = build_manifest(firmware_dir, command)
        seconds["compile"] = _since(started)

        started = time.monotonic()
        report("compare", 0, 0)
        plan = plan_deployment(manifest, repl.hashes(DEPLOYED_ROOTS))
        seconds["compare"] = _since(started)

        started = time.monotonic()
        total, done = plan.bytes_to_copy, 0
        if plan.copy:
            report("copy", 0, total)
        for item in plan.copy:
            repl.write_file(
                item.path, item.data, progress=lambda n, base=done: report("copy", base + n, total)
            )
            done += len(item.data)
        for path in plan.remove:
            repl.remove(path)
        seconds["copy"] = _since(started)

        started = time.monotonic()
        report("verify", 0, 0)
        wrong = verify_deployment(manifest, repl.hashes(DEPLOYED_ROOTS))
        if wrong:
            raise JobFailed(
                f"after copying, {len(wrong)} file(s) on the pendant do not match: {', '.join(wrong[:5])}; "
                "run pendant deploy again, and if it fails twice the pendant's flash may be faulty"
            )
        seconds["verify"] = _since(started)
        if reboot:
            repl.reset()
    return DeployResult(
        port=port,
        micropython=device.micropython,
        mpy_abi=device.mpy_abi,
        firmware_version=version,
        files=len(manifest),
        copied=[item.path for item in plan.copy],
        unchanged=len(plan.unchanged),
        removed=plan.remove,
        bytes_copied=plan.bytes_to_copy,
        verified=True,
        rebooted=reboot,
        seconds=seconds,
    )


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
