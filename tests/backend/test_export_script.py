"""The standalone script of docs/evidence.md, run as a third party runs it: a fresh interpreter that has
only the `cryptography` package (this project cannot be imported there), the script, the export file
and the public key file. It accepts a real export and refuses a tampered one, the wrong key and a
removed signature, each with a clear message and a non-zero exit code."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_samples import alarm, tele, topic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pendant_backend import alarms, export, export_key
from pendant_backend.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRIPT = DOCS / "verify_export.py"


def _installed_closure(name: str) -> list[importlib.metadata.Distribution]:
    """`name` and the installed distributions it needs (extras left out): what `pip install name` brings."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        wanted = todo.pop()
        try:
            dist = importlib.metadata.distribution(wanted)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python (typing-extensions below 3.11)
        if dist.metadata["Name"].lower() in found:
            continue
        found[dist.metadata["Name"].lower()] = dist
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0])
    return list(found.values())


@pytest.fixture(scope="module")
def third_party_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment holding `cryptography` (and what it needs) and nothing of this project."""
    root = tmp_path_factory.mktemp("third-party")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    for dist in _installed_closure("cryptography"):
        for top in {file.parts[0] for file in dist.files or [] if file.parts[0] != ".."}:
            if not (site / top).exists() and (ours / top).exists():
                (site / top).symlink_to(ours / top)
    probe = "import cryptography\ntry:\n import pendant_backend\nexcept ImportError:\n print('isolated')"
    answer = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=root)
    assert answer.stdout.strip() == "isolated", answer.stdout + answer.stderr
    yield python


@pytest.fixture
def case(tmp_path: Path, engine, ingest, clock) -> dict:
    settings = Settings(data_dir=tmp_path / "backend", db_url="")
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0002", "alarm"), alarm("3-3"))
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock.advance(5))
    document = export.export_alarm(settings, engine, ref="pd-0001/12-3", actor="sue")
    key = export_key.signing_key(settings).public_key()
    return {
        "document": document,
        "pem": export_key.public_pem(key),
        "fingerprint": export_key.fingerprint(key),
    }


def _run(python: Path, folder: Path, document: dict, pem: bytes, *extra: str) -> subprocess.CompletedProcess:
    """The script, the export and the key alone in `folder` (outside the repository), run there."""
    folder.mkdir(exist_ok=True)
    (folder / "verify_export.py").write_bytes(SCRIPT.read_bytes())
    (folder / "case.json").write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    (folder / "key.pem").write_bytes(pem)
    return subprocess.run(
        [str(python), "-I", "verify_export.py", "case.json", "key.pem", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_documented_script_is_the_file_in_the_repository() -> None:
    text = (DOCS / "evidence.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks == [SCRIPT.read_text()]


def test_the_script_accepts_a_real_export(third_party_python, tmp_path, case) -> None:
    done = _run(third_party_python, tmp_path / "ok", case["document"], case["pem"], case["fingerprint"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == (
        f"OK: alarm pd-0001/12-3, {len(case['document']['events'])} audit events, exported by sue at "
        f"{case['document']['exported_at']}, signed by the Ed25519 key {case['fingerprint']}"
    )


def _one_character_of_the_trail_changed(document: dict) -> None:
    point = document["trail"][0]
    text = f"{point['lat']}"
    point["lat"] = float(text[:-1] + ("1" if text[-1] != "1" else "2"))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_one_character_of_the_trail_changed, "the signature does not match: the file was altered"),
        (lambda d: d["events"][0].update(body=d["events"][0]["body"].replace("12-3", "12-4")), "signature"),
        (lambda d: d.pop("signature"), "the export has no signature"),
    ],
)
def test_the_script_refuses_a_tampered_export(third_party_python, tmp_path, case, change, said) -> None:
    changed = copy.deepcopy(case["document"])
    change(changed)
    done = _run(third_party_python, tmp_path / "bad", changed, case["pem"])
    assert done.returncode == 2 and done.stdout.startswith("REFUSED: ") and said in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_the_script_refuses_the_wrong_key(third_party_python, tmp_path, case) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    done = _run(third_party_python, tmp_path / "wrong", case["document"], export_key.public_pem(other))
    assert done.returncode == 2, done.stdout
    assert done.stdout.startswith("REFUSED: the export names the key") and case["fingerprint"] in done.stdout
    # A key file that is not the published one is refused before the export is even read.
    done = _run(third_party_python, tmp_path / "wrong", case["document"], case["pem"], "0" * 64)
    assert done.returncode == 2 and f"fingerprint is {case['fingerprint']}, not the published" in done.stdout


def test_the_script_refuses_a_file_that_is_not_a_key(third_party_python, tmp_path, case) -> None:
    done = _run(third_party_python, tmp_path / "nokey", case["document"], b"the key is on the website\n")
    assert done.returncode == 1 and done.stdout.startswith("REFUSED: cannot read the files"), done.stdout
