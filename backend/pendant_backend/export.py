"""Case exports: one alarm, its trail and its audit events in a file that anyone holding the force's public
key can verify, without the database and without any secret of the backend (docs/evidence.md).

The file holds the alarm's own events in full and, for the stretch of the chain they span, only the
numbers and hashes of the other events (which belong to other pendants and are not disclosed). It is
signed with the backend's Ed25519 key (pendant_backend.export_key) over `signed_bytes`: the document
without its `signature` member, as canonical JSON in UTF-8. Making an export and verifying one against
this backend are audit events naming who did it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, alarms, audit, chain, export_key
from pendant_backend.db import session_scope
from pendant_backend.export_check import check_content
from pendant_backend.models import Alarm, AlarmLocation, AuditEvent, iso, utc_now
from pendant_backend.queries import alarm_as_dict
from pendant_backend.settings import Settings

FORMAT = "pendant-case-export/2"
# Exports made before Ed25519: HMAC-SHA256 under secrets/signing.key, checkable only by this backend.
FORMAT_HMAC = "pendant-case-export/1"
ALGORITHM = "Ed25519"
# The audit events of this module.
EXPORTED = "alarm_exported"
VERIFIED = "export_verified"


class ExportError(BackendError):
    """An export could not be made or read."""


def signed_bytes(document: dict[str, Any]) -> bytes:
    """What the signature covers: the document without `signature`, as canonical JSON (chain.canonical:
    keys sorted, no white space, non-ASCII characters as themselves) encoded in UTF-8."""
    return chain.canonical({k: v for k, v in document.items() if k != "signature"}).encode("utf-8")


def content_digest(document: dict[str, Any]) -> str:
    """SHA-256 (hex) of `signed_bytes`: names one export in the audit log, whatever its layout on disk."""
    return hashlib.sha256(signed_bytes(document)).hexdigest()


def export_alarm(
    settings: Settings, engine: Engine, *, ref: str, actor: str = audit.SYSTEM
) -> dict[str, Any]:
    """The signed export document of one alarm (write it with `json.dump`), recorded as an
    `alarm_exported` audit event by `actor` with the export's digest and the key that signed it."""
    with Session(engine) as session:
        alarm = alarms.find_alarm(session, ref)
        if alarm is None:
            raise ExportError(f"no alarm {ref}: see `pendant alarms list`")
        points = list(
            session.exec(
                select(AlarmLocation)
                .where(AlarmLocation.alarm_pk == alarm.id)
                .order_by(col(AlarmLocation.id))
            )
        )
        own = list(
            session.exec(
                select(AuditEvent).where(AuditEvent.alarm_pk == alarm.id).order_by(col(AuditEvent.seq))
            )
        )
        if not own:
            raise ExportError(f"alarm {ref} has no audit events: run `pendant alarms verify` on the database")
        span = list(
            session.exec(
                select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash)
                .where(AuditEvent.seq >= own[0].seq, AuditEvent.seq <= own[-1].seq)
                .order_by(col(AuditEvent.seq))
            )
        )
    key = export_key.signing_key(settings)
    now = utc_now()
    document: dict[str, Any] = {
        "format": FORMAT,
        "exported_at": iso(now),
        "exported_by": actor,
        "signed_by": {"algorithm": ALGORITHM, "key_sha256": export_key.fingerprint(key.public_key())},
        "alarm": alarm_as_dict(alarm),
        "content": audit.alarm_content(alarm),
        "trail": [audit.point_content(p) | {"id": p.id} for p in points],
        "events": [{"seq": e.seq, "body": e.body, "prev_hash": e.prev_hash, "hash": e.hash} for e in own],
        "chain": [{"seq": seq, "prev_hash": prev, "hash": digest} for seq, prev, digest in span],
    }
    # Sign exactly what a reader of the file will load (JSON has no tuples, no int keys, ...).
    document = json.loads(json.dumps(document, ensure_ascii=False, allow_nan=False))
    document["signature"] = base64.b64encode(key.sign(signed_bytes(document))).decode("ascii")
    with session_scope(engine) as session:
        audit.append(
            session,
            kind=EXPORTED,
            at=now,
            actor=actor,
            device_id=alarm.device_id,
            alarm_pk=alarm.id,
            data={"format": FORMAT, "sha256": content_digest(document), "key_sha256": key_sha256(document)},
        )
    return document


def key_sha256(document: dict[str, Any]) -> str | None:
    """The fingerprint of the key the document says signed it (None if it names none)."""
    signed_by = document.get("signed_by") if isinstance(document, dict) else None
    return signed_by.get("key_sha256") if isinstance(signed_by, dict) else None


def verify_export(
    document: Any,
    *,
    public_key: Ed25519PublicKey | None = None,
    hmac_key: bytes | None = None,
    engine: Engine | None = None,
) -> list[str]:
    """Everything wrong with an export document; an empty list means it is intact.

    A format-2 export is checked with `public_key` (Ed25519); a format-1 export only with this backend's
    `hmac_key`. Then every hash and link, and the alarm and its trail against its events. With `engine`,
    also that the database still holds the same chain for that stretch. Nothing is recorded."""
    found = document.get("format") if isinstance(document, dict) else None
    if found not in (FORMAT, FORMAT_HMAC):
        return [f"not a case export (format {found!r}, expected {FORMAT!r})"]
    try:
        problems = _check_signature(document, public_key=public_key, hmac_key=hmac_key)
        return problems + check_content(document, engine)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"the file is not a complete case export ({type(exc).__name__}: {exc})"]


def _check_signature(
    document: dict[str, Any], *, public_key: Ed25519PublicKey | None, hmac_key: bytes | None
) -> list[str]:
    if document["format"] == FORMAT_HMAC:
        if hmac_key is None:
            return [
                f"a {FORMAT_HMAC} export is signed with HMAC under the secret key of the backend that made "
                "it: only `pendant alarms verify FILE` on that backend can check it (export the alarm "
                "again for a signature anyone can check)"
            ]
        expected = hmac.new(hmac_key, signed_bytes(document), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(document.get("signature", ""))):
            return ["the signature does not match: the file was altered, or signed by another backend"]
        return []
    if public_key is None:
        return ["no public key to check the signature with: pass --public-key FILE"]
    named, given = key_sha256(document), export_key.fingerprint(public_key)
    if named != given:
        return [
            f"the signature is by the key {named!r}, not by the public key given ({given}): "
            "get the public key with that fingerprint from the force that made the export"
        ]
    try:
        signature = base64.b64decode(str(document["signature"]), validate=True)
    except KeyError:
        return ["the export has no signature"]
    except binascii.Error:
        return ["the signature is not base64: the file was altered"]
    try:
        public_key.verify(signature, signed_bytes(document))
    except InvalidSignature:
        return ["the signature does not match: the file was altered after it was signed"]
    return []


def record_verification(
    engine: Engine, *, document: dict[str, Any], actor: str, problems: list[str]
) -> AuditEvent:
    """Record that `actor` verified this export against the database (`export_verified`), and the result."""
    alarm_data = document.get("alarm") if isinstance(document.get("alarm"), dict) else {}
    try:
        digest: str | None = content_digest(document)
    except ValueError:  # NaN or a lone surrogate: no canonical form, and so certainly not intact
        digest = None
    with session_scope(engine) as session:
        # The alarm's own event when its row is still there; an erased alarm is named by its reference.
        alarm = session.get(Alarm, alarm_data.get("id")) if isinstance(alarm_data.get("id"), int) else None
        if alarm is not None and alarm.ref != alarm_data.get("ref"):
            alarm = None
        event = audit.append(
            session,
            kind=VERIFIED,
            at=utc_now(),
            actor=actor,
            device_id=alarm.device_id if alarm is not None else None,
            alarm_pk=alarm.id if alarm is not None else None,
            data={
                "alarm": alarm_data.get("ref"),
                "format": document.get("format"),
                "sha256": digest,
                "key_sha256": key_sha256(document),
                "intact": not problems,
                "problems": len(problems),
            },
        )
        assert event is not None  # written at once: no deferred block is open here
        return event
