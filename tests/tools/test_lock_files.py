"""The lock files (requirements/*.txt, written by scripts/lock): they hold every dependency that
pyproject.toml asks for, pinned with hashes; the demo's holds no test tool; and the suite runs on exactly
the versions of the test lock (issue 13, item 6)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(name: str) -> dict[str, str]:
    """The lock file's packages (canonical names) and their versions."""
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2).rstrip(" \\")
    return found


def entries(name: str) -> list[str]:
    """The lock file's requirement entries: each pin with its continuation lines."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text()
    return [chunk for chunk in re.split(r"\n(?=\S)", text) if _PIN.match(chunk)]


def wanted(*extras: str) -> list[Requirement]:
    asked = list(PROJECT["dependencies"])
    for extra in extras:
        asked += PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in asked]


@pytest.mark.parametrize(("lock", "extras"), [("demo", ("demo",)), ("test", ("demo", "test"))])
def test_the_lock_pins_every_dependency_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in wanted(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in requirements/{lock}.txt: run scripts/lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock}.txt pins {name} {pinned[name]}, outside {requirement.specifier}: "
            "run scripts/lock"
        )


@pytest.mark.parametrize("lock", ["demo", "test"])
def test_every_pin_has_its_hashes(lock: str) -> None:
    found = entries(lock)
    assert len(found) == len(pins(lock)) > 10
    for entry in found:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]


def test_the_demo_installs_no_test_tool() -> None:
    demo = pins("demo")
    test_only = {
        canonicalize_name(Requirement(text).name) for text in PROJECT["optional-dependencies"]["test"]
    }
    test_only -= {canonicalize_name(r.name) for r in wanted("demo")}
    assert {"pytest", "basedpyright", "playwright", "ruff"} <= test_only
    assert not test_only & set(demo), f"the demo's lock holds test tools: {sorted(test_only & set(demo))}"
    # Everything the demo installs is what the tests ran on.
    test = pins("test")
    assert {name: test.get(name) for name in demo} == demo


def test_the_suite_runs_on_the_locked_versions() -> None:
    """scripts/setup.sh installs requirements/test.txt: a package at another version here means the
    suite is not testing what a fresh machine gets."""
    differ = {}
    for name, version in pins("test").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"locked vs installed: {differ}"
