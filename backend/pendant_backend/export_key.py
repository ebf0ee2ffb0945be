"""The Ed25519 key that signs case exports (docs/evidence.md).

The backend creates it on first use in the secrets folder (0700): the private key in PKCS#8 PEM, mode
0600, never logged and never put in an export; the public key beside it in PEM. The force publishes the
public key and its fingerprint, the SHA-256 (hex) of the raw 32-byte key, so that anyone holding an
export can check it without any secret of the backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pendant_backend import BackendError
from pendant_backend.settings import Settings, create_private_once, write_private_file

log = logging.getLogger(__name__)

PRIVATE_NAME = "export-ed25519.key"
PUBLIC_NAME = "export-ed25519.pub"


class ExportKeyError(BackendError):
    """The signing key or a public key could not be read."""


def private_key_path(settings: Settings) -> Path:
    """Where the private key lives: `secrets/export-ed25519.key` (0600)."""
    return settings.secrets_dir / PRIVATE_NAME


def public_key_path(settings: Settings) -> Path:
    """Where the public key lives beside it: `secrets/export-ed25519.pub` (PEM)."""
    return settings.secrets_dir / PUBLIC_NAME


def fingerprint(key: Ed25519PublicKey) -> str:
    """The key's fingerprint: SHA-256 (lowercase hex) of its raw 32 bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The key as a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo), as it is published."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The backend's signing key, created (with its public PEM beside it) on first use."""
    path = private_key_path(settings)
    key = _load_private(path)
    if key is None:
        key = _create_private(path)
    public = public_pem(key.public_key())
    pub_path = public_key_path(settings)
    # The public file is derived from the private key: restore it if it is missing or replaced.
    if not pub_path.is_file() or pub_path.read_bytes() != public:
        write_private_file(pub_path, public)
    return key


def own_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """This backend's public key, or None if it has never signed an export (nothing is created)."""
    if not private_key_path(settings).exists():
        return None
    return signing_key(settings).public_key()


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file `path`; ExportKeyError, one sentence, for anything else."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ExportKeyError(f"cannot read the public key {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        # Someone about to hand over the private key: say so rather than use it.
        raise ExportKeyError(
            f"{path} holds a private key: give the verifier the public key "
            "(`pendant alarms public-key --out FILE`), and keep the private one secret"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ExportKeyError(
            f"{path} is not a PEM public key: use the file `pendant alarms public-key --out FILE` wrote"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ExportKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _load_private(path: Path) -> Ed25519PrivateKey | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != 0o600:
        # A key restored from a backup with a looser mode: nobody else may read it from now on.
        os.chmod(path, 0o600)
        log.warning("%s had mode %o: set it to 0600", path, mode)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ExportKeyError(
            f"{path} is damaged: it must hold the Ed25519 key that signs case exports (restore it from "
            "a backup; a new key would not match the public key the force published)"
        )
    return key


def _create_private(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not create_private_once(path, data):
        # Another process created it first: both go on with the winner's.
        return _load_private(path) or _create_private(path)
    log.info(
        "created the Ed25519 key that signs case exports in %s (fingerprint %s)",
        path,
        fingerprint(key.public_key()),
    )
    return key
