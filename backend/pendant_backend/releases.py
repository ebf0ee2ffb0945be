"""The release store: firmware builds the backend can offer to pendants over the air (issue 14).

A release is a folder `<data dir>/releases/<version>/` holding `files/` (main.py and the compiled
pendant/ package, exactly as they go on the pendant's flash) and `manifest.json`:

    {"format": 1, "version": "0.3.0", "min_from": "0.2.0", "boards": ["sim", "t_a7670e"],
     "mpy": "6.3", "created_at": "2026-12-08T01:30:00Z", "total_bytes": 41234,
     "files": [{"path": "main.py", "sha256": "...", "size": 512}, ...]}

`min_from` is the oldest running version that may update to it; `boards` the board modules it carries
(a pendant refuses a release for another board); `mpy` the bytecode version its .mpy files need. A release
is written once, whole or not at all (built in a scratch folder, then renamed into place), and never
changed: a new build is a new version. The store checks every file against the manifest when it reads one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pendant_backend import BackendError

FORMAT = 1
MANIFEST = "manifest.json"
FILES = "files"
_VERSION = re.compile(r"^\d{1,4}(\.\d{1,4}){1,3}$")
_FILE_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


class ReleaseError(BackendError):
    """A release cannot be built, found or trusted."""


def parse_version(text: str) -> tuple[int, ...]:
    """`0.2.0` -> (0, 2, 0), compared as numbers; ReleaseError for anything else."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ReleaseError(
            f"{text!r} is not a firmware version: use 2 to 4 numbers separated by dots, like 0.3.0"
        )
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: its path on the pendant's flash, SHA-256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    """A release's manifest as read from the store."""

    version: str
    min_from: str
    boards: tuple[str, ...]
    mpy: str
    created_at: str
    files: tuple[ReleaseFile, ...]
    folder: Path

    @property
    def total_bytes(self) -> int:
        """Bytes a pendant downloads for the whole release."""
        return sum(item.size for item in self.files)

    def as_json(self) -> dict[str, object]:
        """The manifest, as `pendant release show --json` prints it (and the pendant will receive it)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "min_from": self.min_from,
            "boards": list(self.boards),
            "mpy": self.mpy,
            "created_at": self.created_at,
            "total_bytes": self.total_bytes,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
        }

    def can_update(self, running: str, board: str) -> str | None:
        """Why a pendant running `running` on `board` may not take this release; None if it may."""
        if board not in self.boards:
            return f"release {self.version} is for {', '.join(self.boards)}, not for a {board} board"
        have, offered = parse_version(running), parse_version(self.version)
        if offered <= have:
            return f"release {self.version} is not newer than the running {running}"
        if have < parse_version(self.min_from):
            return f"release {self.version} updates from {self.min_from} or later, not from {running}"
        return None


def store_dir(data_dir: Path) -> Path:
    """Where the releases of a backend's data folder live."""
    return Path(data_dir) / "releases"


def write_release(
    store: Path,
    *,
    version: str,
    files: Iterable[tuple[str, bytes]],
    min_from: str,
    boards: Iterable[str],
    mpy: str,
    now: datetime | None = None,
) -> Release:
    """Write a new release (path on flash, bytes) into the store and return it. ReleaseError when the
    version exists, a version or path is malformed, or `min_from` is newer than the release itself."""
    if parse_version(min_from) > parse_version(version):
        raise ReleaseError(f"--min-from {min_from} is newer than the release {version} itself")
    boards = tuple(sorted(set(boards)))
    if not boards:
        raise ReleaseError("a release must name at least one board it runs on")
    items = list(files)
    if not items:
        raise ReleaseError(f"release {version} has no files")
    seen: set[str] = set()
    for path, _ in items:
        if not _FILE_PATH.match(path) or ".." in path.split("/"):
            raise ReleaseError(f"{path!r} is not a file path a pendant can hold")
        if path in seen:
            raise ReleaseError(f"{path} is in release {version} twice")
        seen.add(path)
    final = Path(store) / version
    if final.exists():
        raise ReleaseError(
            f"release {version} already exists in {store}: a release never changes; raise FW in "
            "firmware/pendant/__init__.py to build a new one"
        )
    Path(store).mkdir(parents=True, exist_ok=True)
    scratch = Path(store) / f".building-{version}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        entries = []
        for path, data in sorted(items):
            target = scratch / FILES / path
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(target, data)
            entries.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        manifest = {
            "format": FORMAT,
            "version": version,
            "min_from": min_from,
            "boards": list(boards),
            "mpy": mpy,
            "created_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "total_bytes": sum(entry["size"] for entry in entries),
            "files": entries,
        }
        _write_synced(scratch / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        try:
            scratch.rename(final)  # whole or not at all; a second build of the same version loses here
        except OSError:
            raise ReleaseError(f"release {version} already exists in {store}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return load_release(store, version)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_release(store: Path, version: str) -> Release:
    """The release `version`, every file checked against its manifest; ReleaseError if it is missing,
    its manifest is damaged, or a file is missing or differs."""
    parse_version(version)
    folder = Path(store) / version
    path = folder / MANIFEST
    if not path.is_file():
        known = ", ".join(release.version for release in list_releases(store)[0]) or "none"
        raise ReleaseError(f"no release {version} in {store} (releases there: {known})")
    release = _read_manifest(path)
    if release.version != version:
        raise ReleaseError(f"{path} says it is release {release.version}, but it is in folder {version}")
    problems = verify_files(release)
    if problems:
        raise ReleaseError(f"release {version} is damaged: {'; '.join(problems)}; build it again")
    return release


def verify_files(release: Release) -> list[str]:
    """Each file of the release that is missing or whose bytes differ from the manifest; [] if none."""
    problems = []
    for item in release.files:
        path = release.folder / FILES / item.path
        try:
            data = path.read_bytes()
        except OSError:
            problems.append(f"{item.path} is missing")
            continue
        if len(data) != item.size or hashlib.sha256(data).hexdigest() != item.sha256:
            problems.append(f"{item.path} differs from its manifest")
    return problems


def list_releases(store: Path) -> tuple[list[Release], list[str]]:
    """(the releases in the store, newest first; a line for each folder that is not a readable release)."""
    releases, broken = [], []
    if not Path(store).is_dir():
        return [], []
    for folder in sorted(Path(store).iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # a build in progress, or not ours
        try:
            release = _read_manifest(folder / MANIFEST)
        except ReleaseError as exc:
            broken.append(str(exc))
            continue
        releases.append(release)
    releases.sort(key=lambda release: parse_version(release.version), reverse=True)
    return releases, broken


def _read_manifest(path: Path) -> Release:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseError(f"{path.parent} has no {MANIFEST}: not a release") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path} cannot be read ({exc}): not a release") from None
    try:
        if document["format"] != FORMAT:
            raise ReleaseError(f"{path} is of format {document['format']}; this backend reads {FORMAT}")
        parse_version(document["version"])
        parse_version(document["min_from"])
        files = tuple(
            ReleaseFile(str(item["path"]), str(item["sha256"]), int(item["size"]))
            for item in document["files"]
        )
        return Release(
            version=document["version"],
            min_from=document["min_from"],
            boards=tuple(str(board) for board in document["boards"]),
            mpy=str(document["mpy"]),
            created_at=str(document["created_at"]),
            files=files,
            folder=path.parent,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"{path} is not a release manifest ({exc.__class__.__name__}: {exc})") from None
