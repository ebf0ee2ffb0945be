"""Check a pendant case export with the force's public key alone (docs/evidence.md).

    python3 verify_export.py case.json pendant-export-key.pem [FINGERPRINT]

Needs only Python 3.8+ and the `cryptography` package. Exit code 0: the export is intact and was
signed by that key; 2: it was altered or signed by another key; 1: a file could not be read.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def refuse(reason, code=2):
    print(f"REFUSED: {reason}")
    sys.exit(code)


def canonical(value):
    # The signed form: sorted keys, no white space, non-ASCII characters as themselves, UTF-8.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def main(export_path, key_path, expected_fingerprint=None):
    try:
        with open(export_path, encoding="utf-8") as file:
            export = json.load(file)
        with open(key_path, "rb") as file:
            key = serialization.load_pem_public_key(file.read())
    except (OSError, ValueError) as exc:
        refuse(f"cannot read the files: {exc}", code=1)
    if not isinstance(key, Ed25519PublicKey):
        refuse(f"{key_path} is not an Ed25519 public key", code=1)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fingerprint = hashlib.sha256(raw).hexdigest()
    if expected_fingerprint and fingerprint != expected_fingerprint.lower():
        refuse(f"the key file's fingerprint is {fingerprint}, not the published {expected_fingerprint}")
    if not isinstance(export, dict) or export.get("format") != "pendant-case-export/2":
        refuse("this is not a pendant-case-export/2 file")
    signed_by = export.get("signed_by")
    if not isinstance(signed_by, dict) or signed_by.get("key_sha256") != fingerprint:
        refuse(f"the export names the key {signed_by}, not this key ({fingerprint})")
    if "signature" not in export:
        refuse("the export has no signature")
    unsigned = {name: value for name, value in export.items() if name != "signature"}
    try:
        key.verify(base64.b64decode(export["signature"], validate=True), canonical(unsigned))
    except (InvalidSignature, ValueError):
        refuse("the signature does not match: the file was altered after it was signed")
    # The audit chain inside: each event's hash covers the hash before it and its own body.
    links = export["chain"]
    for before, after in [(links[i - 1], links[i]) for i in range(1, len(links))]:
        if after["seq"] != before["seq"] + 1 or after["prev_hash"] != before["hash"]:
            refuse(f"the chain is broken between events {before['seq']} and {after['seq']}")
    chain = {link["seq"]: link for link in links}
    for event in export["events"]:
        digest = hashlib.sha256(f"{event['prev_hash']}\n{event['body']}".encode()).hexdigest()
        if digest != event["hash"] or chain.get(event["seq"], {}).get("hash") != digest:
            refuse(f"audit event {event['seq']} does not match its hash in the chain")
    print(
        f"OK: alarm {export['alarm']['ref']}, {len(export['events'])} audit events, exported by "
        f"{export['exported_by']} at {export['exported_at']}, signed by the Ed25519 key {fingerprint}"
    )


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        refuse("usage: python3 verify_export.py EXPORT.json PUBLIC_KEY.pem [FINGERPRINT]", code=1)
    main(*sys.argv[1:])
