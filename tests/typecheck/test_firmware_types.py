"""The firmware type-checks against the MicroPython stubs (micropython-esp32-stubs and its stdlib), not
CPython's: a call to something MicroPython lacks (`time.monotonic`, `os.path`, a CPython-only keyword) is
caught here, before it fails on a pendant.

Run by hand: `.venv/bin/python -m pytest tests/typecheck -q` (prints basedpyright's findings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"

# The rules that matter against a stub set: names, modules, attributes and call signatures that exist in
# MicroPython. The rules that follow type inference through untyped code (optional members, operators on
# inferred unions) are off: the firmware carries no annotations, so they report guesses, not facts.
RULES = {
    "reportMissingImports": "error",
    "reportMissingModuleSource": "none",
    "reportAttributeAccessIssue": "error",
    "reportCallIssue": "error",
    "reportUndefinedVariable": "error",
    "reportPossiblyUnbound": "error",
    "reportArgumentType": "none",
    "reportIndexIssue": "none",
    "reportOperatorIssue": "none",
    "reportOptionalSubscript": "none",
    "reportOptionalMemberAccess": "none",
    "reportOptionalCall": "none",
    "reportGeneralTypeIssues": "none",
    "reportRedeclaration": "none",
}


def _stub_root() -> Path:
    root = Path(sysconfig.get_paths()["purelib"])
    if not (root / "machine.pyi").exists() or not (root / "stdlib").is_dir():
        pytest.fail("micropython-esp32-stubs is not installed: pip install -e '.[test]'")
    return root


def test_firmware_type_checks_against_micropython_stubs(tmp_path: Path) -> None:
    checker = shutil.which("basedpyright") or str(Path(sysconfig.get_paths()["scripts"]) / "basedpyright")
    if not Path(checker).exists():
        pytest.fail("basedpyright is not installed: pip install -e '.[test]'")
    stubs = _stub_root()
    config = {
        "include": [str(FIRMWARE)],
        # The stubs' stdlib replaces CPython's typeshed, so `time.ticks_ms` exists and `os.path` does not.
        "typeshedPath": str(stubs),
        "extraPaths": [str(stubs), str(FIRMWARE)],
        "pythonVersion": "3.11",
        "typeCheckingMode": "basic",
        **RULES,
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [checker, "-p", str(tmp_path / "pyrightconfig.json"), "--outputjson"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads(result.stdout)
    assert report["summary"]["filesAnalyzed"] >= 10, report["summary"]
    errors = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '')})"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert not errors, "the firmware does not type-check against MicroPython:\n" + "\n".join(errors)
