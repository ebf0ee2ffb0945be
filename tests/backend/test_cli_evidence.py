"""`pendant alarms export|verify|public-key` as the force and a third party use them: the export is
signed and recorded, the public key is published with its fingerprint, `verify --public-key` needs the
file and the key alone (an empty data folder, nothing recorded), and `verify` on the backend records
who checked. Both databases; no broker is needed."""

from __future__ import annotations

import getpass
import json
import os
import stat
from pathlib import Path

import pytest
from backend_samples import alarm, topic
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from pendant_backend import export_key
from pendant_backend.models import AuditEvent
from pendant_tools.cli import main

from support import add_account, cli_env


@pytest.fixture
def cli(pendant_settings):
    """`pendant ...` on the test's data folder and database; returns click's result."""

    def run(*args: str, env: dict[str, str] | None = None):
        result = CliRunner().invoke(main, list(args), env=env or cli_env(pendant_settings))
        assert "Traceback" not in result.output, result.output
        return result

    return run


@pytest.fixture
def case(cli, engine, ingest, tmp_path) -> Path:
    """pd-0001's alarm 12-3, exported by the supervisor sue to case.json."""
    add_account(engine, "sue", "supervisor")
    add_account(engine, "ann", "dispatcher")
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    out = tmp_path / "cases" / "case.json"
    out.parent.mkdir(mode=0o755)
    done = cli("alarms", "export", "pd-0001/12-3", "--out", str(out), "--operator", "sue")
    assert done.exit_code == 0, done.output
    return out


def events(engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.seq)))
        )


def test_export_writes_a_private_signed_file_and_records_it(cli, engine, case, pendant_settings) -> None:
    document = json.loads(case.read_text())
    fingerprint = export_key.fingerprint(export_key.own_public_key(pendant_settings))
    assert document["signed_by"]["key_sha256"] == fingerprint
    assert stat.S_IMODE(os.stat(case).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(case.parent).st_mode) == 0o755  # the user's folder keeps its mode
    [exported] = events(engine, "alarm_exported")
    assert exported.actor == "sue" and json.loads(exported.body)["data"]["key_sha256"] == fingerprint


def test_the_public_key_is_published_as_pem_with_its_fingerprint(cli, pendant_settings, tmp_path) -> None:
    printed = cli("alarms", "public-key")
    assert printed.exit_code == 0
    # The PEM alone on stdout (`> key.pem` keeps a clean file), the fingerprint on stderr.
    assert printed.stdout.startswith("-----BEGIN PUBLIC KEY-----") and printed.stdout.endswith("-----\n")
    fingerprint = export_key.fingerprint(export_key.own_public_key(pendant_settings))
    assert printed.stderr.strip() == f"fingerprint (SHA-256 of the raw key): {fingerprint}"
    out = tmp_path / "pendant-export-key.pem"
    written = cli("alarms", "public-key", "--out", str(out))
    assert written.exit_code == 0 and fingerprint in written.output
    assert export_key.fingerprint(export_key.read_public_key(out)) == fingerprint
    as_json = json.loads(cli("alarms", "public-key", "--json").stdout)
    assert as_json == {
        "algorithm": "Ed25519",
        "key_sha256": fingerprint,
        "public_key_pem": printed.stdout,
        "file": "",
    }


def test_verify_with_the_public_key_alone_needs_no_database_and_records_nothing(
    cli, engine, case, tmp_path
) -> None:
    key = tmp_path / "key.pem"
    assert cli("alarms", "public-key", "--out", str(key)).exit_code == 0
    before = len(events(engine, "export_verified"))
    empty = tmp_path / "empty"
    empty.mkdir()
    # Nothing of the backend: an empty data folder, a database URL that leads nowhere.
    nowhere = {"PENDANT_DATA_DIR": str(empty), "PENDANT_DB_URL": "sqlite:////nonexistent/pendant.db"}
    done = cli("alarms", "verify", str(case), "--public-key", str(key), env=nowhere)
    assert done.exit_code == 0, done.output
    assert "intact: alarm pd-0001/12-3" in done.output
    assert (
        "checked with the file and the public key alone" in done.output
        and "nothing was recorded" in done.output
    )
    assert list(empty.iterdir()) == []
    assert len(events(engine, "export_verified")) == before


def test_verify_with_the_public_key_refuses_a_tampered_file_and_a_wrong_key(cli, case, tmp_path) -> None:
    key = tmp_path / "key.pem"
    cli("alarms", "public-key", "--out", str(key))
    document = json.loads(case.read_text())
    document["trail"] = [{"id": 1}]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    done = cli("alarms", "verify", str(tampered), "--public-key", str(key))
    assert done.exit_code == 2 and "FAILED: the signature does not match" in done.output
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(export_key.public_pem(Ed25519PrivateKey.generate().public_key()))
    done = cli("alarms", "verify", str(case), "--public-key", str(wrong))
    assert done.exit_code == 2 and "not by the public key given" in done.output


def test_verify_refuses_a_private_key_or_a_missing_file_in_one_line(cli, case, pendant_settings) -> None:
    done = cli(
        "alarms", "verify", str(case), "--public-key", str(export_key.private_key_path(pendant_settings))
    )
    assert done.exit_code == 1 and "holds a private key" in done.output
    done = cli("alarms", "verify", "--public-key", str(export_key.public_key_path(pendant_settings)))
    assert done.exit_code == 1 and "--public-key checks an export file: name it" in done.output


def test_verify_on_the_backend_records_who_checked(cli, engine, case) -> None:
    done = cli("alarms", "verify", str(case), "--operator", "sue")
    assert done.exit_code == 0, done.output
    assert "recorded in the audit log as verified by sue" in done.output
    done = cli("alarms", "verify", str(case))
    assert done.exit_code == 0 and f"verified by cli:{getpass.getuser()}" in done.output
    recorded = events(engine, "export_verified")
    assert [e.actor for e in recorded] == ["sue", f"cli:{getpass.getuser()}"]
    assert all(json.loads(e.body)["data"]["intact"] for e in recorded)
    # Offline, nothing is compared with the database, and nothing is recorded.
    done = cli("alarms", "verify", str(case), "--offline")
    assert done.exit_code == 0 and "nothing was recorded" in done.output
    assert len(events(engine, "export_verified")) == 2
    # A failed check is recorded as failed.
    document = json.loads(case.read_text())
    document["alarm"]["acknowledged_by"] = "bob"
    case.write_text(json.dumps(document))
    done = cli("alarms", "verify", str(case))
    assert done.exit_code == 2 and "FAILED" in done.output
    assert json.loads(events(engine, "export_verified")[-1].body)["data"]["intact"] is False


def test_a_dispatcher_is_not_named_as_the_verifier(cli, case) -> None:
    done = cli("alarms", "verify", str(case), "--operator", "ann")
    assert done.exit_code == 1 and "needs the role supervisor or administrator" in done.output


def test_verifying_the_database_is_recorded(cli, engine, case) -> None:
    done = cli("alarms", "verify", "--operator", "sue")
    assert done.exit_code == 0 and "intact" in done.output, done.output
    [event] = events(engine, "audit_verified")
    assert event.actor == "sue" and json.loads(event.body)["data"]["intact"] is True


def test_a_backend_without_a_key_says_how_to_check(cli, tmp_path, case) -> None:
    empty = tmp_path / "other-backend"
    empty.mkdir()
    done = cli("alarms", "verify", str(case), "--offline", env={"PENDANT_DATA_DIR": str(empty)})
    assert done.exit_code == 1 and "this backend has no export key" in done.output
    assert "--public-key" in done.output
