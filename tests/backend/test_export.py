"""A case export is signed with the backend's Ed25519 key and verifies with the public key alone and
against the database; an edited file, another key, a removed signature, or a database that changed
afterwards, fails verification. Making an export is an audit event with its digest."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json

import pytest
from backend_samples import alarm, tele, topic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlmodel import Session, select

from pendant_backend import alarms, chain, export, export_key
from pendant_backend.models import AuditEvent
from pendant_backend.settings import Settings, secret_key


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, db_url="")


@pytest.fixture
def public_key(settings):
    return export_key.signing_key(settings).public_key()


@pytest.fixture
def document(settings, engine, ingest, clock) -> dict:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0002", "alarm"), alarm("3-3"))  # another pendant's events inside the stretch
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock.advance(5))
    alarms.resolve_alarm(
        engine,
        ref="pd-0001/12-3",
        operator="Ann",
        resolution="incident",
        note="on site",
        now=clock.advance(60),
    )
    return export.export_alarm(settings, engine, ref="pd-0001/12-3", actor="Ann")


def _events(engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == kind)))


def _resign(document: dict, key: Ed25519PrivateKey) -> None:
    """Sign `document` again with `key`, as someone holding that key could."""
    document["signed_by"]["key_sha256"] = export_key.fingerprint(key.public_key())
    document["signature"] = base64.b64encode(key.sign(export.signed_bytes(document))).decode()


def test_an_export_verifies_with_the_public_key_alone_and_against_the_database(
    engine, document, public_key
) -> None:
    assert document["format"] == "pendant-case-export/2"
    assert document["signed_by"] == {"algorithm": "Ed25519", "key_sha256": export_key.fingerprint(public_key)}
    assert export.verify_export(document, public_key=public_key) == []
    assert export.verify_export(document, public_key=public_key, engine=engine) == []
    # What a reader loads from the file verifies the same.
    assert export.verify_export(json.loads(json.dumps(document, indent=2)), public_key=public_key) == []
    assert len(document["trail"]) == 2 and document["alarm"]["note"] == "on site"
    # The other pendant's events appear only as numbers and hashes.
    assert len(document["chain"]) > len(document["events"])
    assert "3-3" not in str(document["events"]) and "pd-0002" not in str(document["events"])


def test_the_signature_covers_the_canonical_json_without_the_signature(document, public_key) -> None:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    expected = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert export.signed_bytes(document) == expected
    public_key.verify(base64.b64decode(document["signature"]), expected)  # raises if it does not match


def test_the_canonical_form_is_exactly_as_documented() -> None:
    # docs/evidence.md states these rules; a third party reproduces them byte for byte.
    sample = {"signature": "left out", "b": [1, 2.5, None, True], "a": {"z": 'é\n"', "y": -0.0}}
    assert export.signed_bytes(sample) == '{"a":{"y":-0.0,"z":"é\\n\\""},"b":[1,2.5,null,true]}'.encode()


def test_making_an_export_is_an_audit_event_with_its_digest(engine, document) -> None:
    [event] = _events(engine, export.EXPORTED)
    data = json.loads(event.body)["data"]
    assert event.actor == "Ann" and event.alarm_pk == document["alarm"]["id"]
    assert data == {
        "format": export.FORMAT,
        "sha256": hashlib.sha256(export.signed_bytes(document)).hexdigest(),
        "key_sha256": document["signed_by"]["key_sha256"],
    }


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["alarm"].update(lat=52.0),
        lambda d: d["content"].update(lat=52.0),
        lambda d: d["alarm"].update(acknowledged_by="Bob"),
        lambda d: d["alarm"].update(note="nothing happened"),
        lambda d: d["trail"][1].update(lon=5.5),
        lambda d: d["events"].pop(1),
        lambda d: d["chain"].pop(2),
    ],
)
def test_an_edited_export_fails(document, public_key, tamper) -> None:
    changed = copy.deepcopy(document)
    tamper(changed)
    problems = export.verify_export(changed, public_key=public_key)
    assert problems and "signature does not match" in problems[0]
    # Even signed again (a stolen key), the content checks still fail.
    thief = Ed25519PrivateKey.generate()
    _resign(changed, thief)
    problems = export.verify_export(changed, public_key=thief.public_key())
    assert problems and not any("signature" in p for p in problems)


def test_one_character_of_the_signed_bytes_changed_fails(document, public_key) -> None:
    changed = copy.deepcopy(document)
    changed["exported_by"] = "Anm"
    assert export.verify_export(changed, public_key=public_key) == [
        "the signature does not match: the file was altered after it was signed"
    ]


def test_another_key_is_named_in_the_refusal(document, public_key) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    [problem] = export.verify_export(document, public_key=other)
    assert document["signed_by"]["key_sha256"] in problem and export_key.fingerprint(other) in problem
    # Claiming the other key's fingerprint does not help: the signature is still the first key's.
    changed = copy.deepcopy(document)
    changed["signed_by"]["key_sha256"] = export_key.fingerprint(other)
    assert export.verify_export(changed, public_key=other) == [
        "the signature does not match: the file was altered after it was signed"
    ]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d.pop("signature"), "the export has no signature"),
        (lambda d: d.update(signature="not base64!"), "the signature is not base64: the file was altered"),
        (lambda d: d.update(signature=base64.b64encode(b"x" * 64).decode()), "the signature does not match"),
    ],
)
def test_a_missing_or_broken_signature_fails(document, public_key, change, said) -> None:
    changed = copy.deepcopy(document)
    change(changed)
    assert export.verify_export(changed, public_key=public_key)[0].startswith(said)


def test_without_a_public_key_a_format_2_export_is_not_passed(document) -> None:
    assert export.verify_export(document) == [
        "no public key to check the signature with: pass --public-key FILE"
    ]


def test_a_format_1_export_is_checked_only_with_the_backend_hmac_key(settings, document) -> None:
    old = {k: v for k, v in copy.deepcopy(document).items() if k not in ("signed_by", "signature")}
    old["format"] = export.FORMAT_HMAC
    key = secret_key(settings.signing_key_path)
    old["signature"] = hmac.new(key, chain.canonical(old).encode(), hashlib.sha256).hexdigest()
    assert export.verify_export(old, hmac_key=key) == []
    [refused] = export.verify_export(old, public_key=export_key.signing_key(settings).public_key())
    assert "only `pendant alarms verify FILE` on that backend can check it" in refused
    old["alarm"]["note"] = "nothing happened"
    assert "signature does not match" in export.verify_export(old, hmac_key=key)[0]


def test_a_database_changed_after_the_export_is_found(engine, document, public_key) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET hash = :h WHERE seq = 2"), {"h": "f" * 64})
    assert any(
        "differs from the database" in p
        for p in export.verify_export(document, public_key=public_key, engine=engine)
    )


def test_verifying_against_the_database_is_recorded(engine, document, public_key) -> None:
    event = export.record_verification(engine, document=document, actor="sue", problems=[])
    data = json.loads(event.body)["data"]
    assert (event.kind, event.actor, event.alarm_pk) == (export.VERIFIED, "sue", document["alarm"]["id"])
    assert data["intact"] is True and data["alarm"] == "pd-0001/12-3"
    assert data["sha256"] == export.content_digest(document)
    # The record is the alarm's own event, yet the export made before it still verifies.
    assert export.verify_export(document, public_key=public_key, engine=engine) == []


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"format": export.FORMAT},
        {"format": export.FORMAT, "chain": 3},
        [],
        {"format": export.FORMAT_HMAC},
    ],
)
def test_a_broken_file_is_reported_not_raised(public_key, broken) -> None:
    problems = export.verify_export(broken, public_key=public_key, hmac_key=b"k" * 32)
    assert len(problems) >= 1
