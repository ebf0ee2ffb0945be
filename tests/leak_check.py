"""No secrets where they don't belong: the secrets the end-to-end suite creates, the logs and console
output it produces, and the check that none of the first appears in any of the second.

While an end-to-end test runs (tests/e2e/conftest.py calls `REGISTRY.start` and `stop`), fixtures and
helpers tell the registry what they create: `add_secret` for a password or key made in the test, and
`harvest(folder)` for a data folder about to be deleted, which reads the secrets kept in it (broker
accounts, device configs, keys) and every log in it, at once. `watch(folder)` harvests a folder that is
kept, at the end. The check (tests/e2e/test_no_secrets_in_output.py) runs after every other test and
looks for every secret in every output, as text, hex and base64 (at any byte offset, as inside an
encoded blob), and percent- or JSON-escaped.

Imported by name (`import leak_check`): tests/ is on sys.path through the root conftest.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

# Shorter values are not secrets worth the name (a test's "x"), and a short form could match by chance.
MIN_SECRET = 8
MIN_FORM = 10
LOG_SUFFIXES = (".log", ".out", ".err")
# JSON members that hold a secret, in the files a data folder keeps (broker.json, config.json, ...).
SECRET_MEMBER = re.compile(r"pass|secret|token", re.IGNORECASE)
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----\s+(.*?)-----END \1-----", re.S)
MAX_FILE = 20_000_000


@dataclass(frozen=True)
class Secret:
    """One secret: `label` names it in a report (never the value), `value` is what must not leak."""

    label: str
    # Never in a repr: a failing assertion prints the objects it compares.
    value: str | bytes = field(repr=False)
    # Extra exact strings it shows as (the lines of a PEM key, the raw key inside it).
    extra_forms: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Output:
    """One log file or console capture, read when it was registered."""

    label: str
    text: str


@dataclass(frozen=True)
class Leak:
    """`secret` was found in `output`, written as `form`."""

    secret: str
    output: str
    form: str

    def __str__(self) -> str:
        return f"{self.secret} appears in {self.output} ({self.form})"


def _base64_at_every_offset(raw: bytes) -> Iterator[tuple[str, str]]:
    """The base64 text that `raw` turns into wherever it sits in a longer blob: for each of the three
    byte offsets, the characters that depend on `raw` alone."""
    for offset in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * offset + raw).decode("ascii")
            start = 4 if offset else 0  # the first group mixes in the padding bytes
            usable = (offset + len(raw)) // 3 * 4  # the last group is partial unless it is full
            yield f"{name} at offset {offset}", text[start:usable]


def forms(secret: Secret) -> dict[str, str]:
    """form name -> the exact text to look for."""
    found: dict[str, str] = {}
    raw = secret.value.encode("utf-8") if isinstance(secret.value, str) else secret.value
    if isinstance(secret.value, str):
        found["plain"] = secret.value
        found["percent-encoded"] = quote(secret.value, safe="")
        found["percent-encoded path"] = quote(secret.value)
        found["form-encoded"] = quote_plus(secret.value, safe="")
        found["JSON-escaped"] = json.dumps(secret.value)[1:-1]
    found["hex"] = raw.hex()
    found["HEX"] = raw.hex().upper()
    found.update(_base64_at_every_offset(raw))
    for number, text in enumerate(secret.extra_forms, start=1):
        found[f"form {number}"] = text
    unique: dict[str, str] = {}
    for name, text in found.items():
        if len(text) >= MIN_FORM and text not in unique.values():
            unique[name] = text
    return unique


def find_leaks(
    outputs: Iterable[Output],
    secrets: Iterable[Secret],
    handed_over: Mapping[tuple[str, str | bytes], int] | None = None,
) -> list[Leak]:
    """Every (secret, output) pair where the output holds the secret in one of its forms.

    `handed_over` maps (output label, secret value) to how many times that output may show it: the
    console line that hands a one-time password to its person, and nothing more."""
    table = [(secret, forms(secret)) for secret in secrets]
    allowed = handed_over or {}
    leaks = []
    for output in outputs:
        for secret, texts in table:
            text = output.text
            times = allowed.get((output.label, secret.value), 0)
            if times and isinstance(secret.value, str):
                text = text.replace(secret.value, "<handed over>", times)
            for name, form in texts.items():
                if form in text:
                    leaks.append(Leak(secret.label, output.label, name))
                    break
    return leaks


def pem_private_keys(text: str, label: str) -> list[Secret]:
    """The private keys in a PEM text: each as its DER bytes, its body lines, and its raw key."""
    found = []
    for match in PEM_BLOCK.finditer(text):
        body = match.group(2)
        lines = tuple(line.strip() for line in body.splitlines() if len(line.strip()) >= MIN_FORM)
        der = base64.b64decode("".join(body.split()))
        found.append(Secret(f"{label} ({match.group(1).lower()})", der, lines + _raw_private(der)))
    return found


def _raw_private(der: bytes) -> tuple[str, ...]:
    """The bare private value inside a key (Ed25519 seed, EC scalar), hex and base64, when there is one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        return ()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.private_numbers().private_value
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    else:
        return ()
    return (raw.hex(), base64.b64encode(raw).decode("ascii"))


def json_secrets(value: Any, label: str, member: str = "") -> list[Secret]:
    """The string members of a JSON document whose names say they are secret (password, secret, token)."""
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in json_secrets(item, label, f"{member}.{key}")]
    if isinstance(value, list):
        return [
            s for index, item in enumerate(value) for s in json_secrets(item, label, f"{member}[{index}]")
        ]
    last = member.rsplit(".", 1)[-1]
    if isinstance(value, str) and len(value) >= MIN_SECRET and SECRET_MEMBER.search(last):
        return [Secret(f"{label} {member.lstrip('.')}", value)]
    return []


def folder_secrets(folder: Path) -> list[Secret]:
    """The secrets a data folder keeps: JSON members named like secrets, hex keys in secrets/, private
    keys in PEM anywhere."""
    found: list[Secret] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        name = str(path.relative_to(folder))
        if path.suffix not in (".json", ".key", ".pem") or path.stat().st_size > MAX_FILE:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "PRIVATE KEY-----" in text:
            found += pem_private_keys(text, name)
        elif path.suffix == ".json":
            try:
                found += json_secrets(json.loads(text), name)
            except ValueError:
                continue
        elif path.suffix == ".key" and re.fullmatch(r"[0-9a-f]{32,}", text.strip()):
            found.append(Secret(name, bytes.fromhex(text.strip())))
    return found


def folder_logs(folder: Path) -> list[Output]:
    """Every log and console capture a data folder holds (`*.log`, `*.out`, `*.err`), read now."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")[:MAX_FILE]
            found.append(Output(str(path.resolve()), text))
        except OSError:
            continue
    return found


@dataclass
class Registry:
    """What the end-to-end tests created and produced, for the check that runs after them."""

    collecting: bool = False
    secrets: dict[str | bytes, Secret] = field(default_factory=dict, repr=False)
    outputs: list[Output] = field(default_factory=list, repr=False)
    watched: list[Path] = field(default_factory=list)
    harvested: set[Path] = field(default_factory=set)
    tests: set[str] = field(default_factory=set)
    handed_over: dict[tuple[str, str | bytes], int] = field(default_factory=dict, repr=False)
    # Data folders that ran a broker, whose log the check must have read.
    broker_folders: int = 0

    def start(self, test: str) -> None:
        """Collect from now on, for the test named `test` (its fixtures are about to start)."""
        self.collecting = True
        self.tests.add(test)

    def stop(self) -> None:
        """Stop collecting (the test's fixtures have been torn down)."""
        self.collecting = False

    def add_secret(self, label: str, value: str | bytes) -> None:
        """A secret the test created (a password it chose, a one-time password it read)."""
        if self.collecting and value and len(value) >= MIN_SECRET:
            self.secrets.setdefault(value, Secret(label, value))

    def add_output(self, label: str, text: str) -> None:
        """Console output a test captured (a command's stdout and stderr)."""
        if self.collecting and text:
            self.outputs.append(Output(label, text))

    def hand_over(self, output: Path | str, value: str, *, times: int = 1) -> None:
        """`output` (a log file's path, or a capture's label) shows `value` `times` times on purpose:
        the line that hands a one-time password to its person."""
        if self.collecting:
            label = str(output.resolve()) if isinstance(output, Path) else output
            self.handed_over[(label, value)] = times

    def leaks(self) -> list[Leak]:
        """Every secret found in every output, but for the hand-overs."""
        return find_leaks(self.outputs, self.secrets.values(), self.handed_over)

    def watch(self, folder: Path) -> None:
        """A data folder that is kept after its test: harvested when the check runs."""
        if self.collecting:
            self.watched.append(Path(folder))

    def harvest(self, folder: Path) -> None:
        """Read the secrets and the logs of `folder` now (it is about to be deleted)."""
        folder = Path(folder)
        if not self.collecting or folder in self.harvested or not folder.is_dir():
            return
        self.harvested.add(folder)
        self.broker_folders += (folder / "broker").is_dir()
        for secret in folder_secrets(folder):
            self.secrets.setdefault(secret.value, secret)
        self.outputs += folder_logs(folder)

    def harvest_watched(self) -> None:
        """Harvest the kept folders (called by the check)."""
        self.collecting = True
        try:
            for folder in self.watched:
                self.harvest(folder)
        finally:
            self.collecting = False

    def summary(self) -> str:
        """What the check read: how many outputs (logs by name, captures) and secrets, for the report."""
        files = [o for o in self.outputs if o.label.startswith("/")]
        names = Counter(Path(o.label).name for o in files)
        size = sum(len(o.text) for o in self.outputs)
        return (
            f"{len(self.outputs)} outputs ({len(files)} log files"
            + "".join(f", {count} {name}" for name, count in sorted(names.items()))
            + f"; {len(self.outputs) - len(files)} console captures; {size} characters) from "
            f"{len(self.tests)} end-to-end tests and {len(self.harvested)} data folders, searched for "
            f"{len(self.secrets)} secrets ("
            + ", ".join(f"{count} {kind}" for kind, count in sorted(self._secret_kinds().items()))
            + ")"
        )

    def _secret_kinds(self) -> Counter[str]:
        # Where each secret came from: the file of a data folder it is kept in, or the test that made it.
        return Counter(
            Path(secret.label.split(" ", 1)[0]).name
            if "/" in secret.label.split(" ", 1)[0]
            else "made by a test"
            for secret in self.secrets.values()
        )


REGISTRY = Registry()
