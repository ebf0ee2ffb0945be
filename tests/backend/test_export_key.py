"""The key that signs case exports: created once, private (0600 in a 0700 folder), never logged; its
public key beside it; a damaged key or a wrong public key file is one clear error."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pendant_backend import export_key
from pendant_backend.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_url="")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_key_is_created_once_private_and_its_public_key_beside_it(settings, caplog) -> None:
    assert export_key.own_public_key(settings) is None  # nothing is created by asking
    assert not settings.secrets_dir.exists()
    with caplog.at_level(logging.DEBUG):
        key = export_key.signing_key(settings)
    private, public = export_key.private_key_path(settings), export_key.public_key_path(settings)
    assert (_mode(settings.secrets_dir), _mode(private), _mode(public)) == (0o700, 0o600, 0o600)
    assert export_key.signing_key(settings).public_key() == key.public_key()
    assert export_key.own_public_key(settings) == key.public_key()
    assert public.read_bytes() == export_key.public_pem(key.public_key())
    # The log names the fingerprint, never the key.
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    logged = caplog.text
    assert export_key.fingerprint(key.public_key()) in logged
    assert raw.hex() not in logged and base64.b64encode(raw).decode() not in logged
    assert "PRIVATE KEY" not in logged


def test_the_fingerprint_is_the_sha256_of_the_raw_public_key(settings) -> None:
    key = export_key.signing_key(settings).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    # The last 32 bytes of the DER form are the raw key (`openssl pkey -pubin -outform DER | tail -c 32`).
    assert export_key.fingerprint(key) == hashlib.sha256(der[-32:]).hexdigest()


def test_a_lost_public_file_is_written_again_and_a_loose_mode_tightened(settings) -> None:
    key = export_key.signing_key(settings)
    export_key.public_key_path(settings).unlink()
    os.chmod(export_key.private_key_path(settings), 0o644)
    assert export_key.signing_key(settings).public_key() == key.public_key()
    assert export_key.public_key_path(settings).read_bytes() == export_key.public_pem(key.public_key())
    assert _mode(export_key.private_key_path(settings)) == 0o600


def test_a_damaged_key_is_an_error_not_a_new_key(settings) -> None:
    export_key.signing_key(settings)
    export_key.private_key_path(settings).write_text("damaged\n")
    with pytest.raises(export_key.ExportKeyError, match=r"is damaged: .* \(restore it from a backup"):
        export_key.signing_key(settings)
    assert export_key.private_key_path(settings).read_text() == "damaged\n"


def test_reading_a_public_key_file(settings, tmp_path) -> None:
    key = export_key.signing_key(settings).public_key()
    assert export_key.read_public_key(export_key.public_key_path(settings)) == key
    with pytest.raises(export_key.ExportKeyError, match="holds a private key: give the verifier the public"):
        export_key.read_public_key(export_key.private_key_path(settings))
    text = tmp_path / "notes.txt"
    text.write_text("the key is on the website\n")
    with pytest.raises(export_key.ExportKeyError, match="is not a PEM public key"):
        export_key.read_public_key(text)
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(export_key.ExportKeyError, match="not an Ed25519 public key"):
        export_key.read_public_key(other)
    with pytest.raises(export_key.ExportKeyError, match="cannot read the public key"):
        export_key.read_public_key(tmp_path / "missing.pem")
