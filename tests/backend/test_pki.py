"""The project CA and the certificates the operator supplies (pendant_backend.pki), with real keys and
certificates from `cryptography`: what is created and kept, what is issued again, and one clear error
for every fault in the operator's files."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pendant_backend import pki
from pendant_backend.pki import TlsError
from pendant_backend.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.for_data_dir(tmp_path / "data")


def project_ca(settings: Settings) -> pki.Issued:
    folder = settings.tls_dir
    return pki.Issued(pki.load_key(folder / "ca.key", "ca"), pki.load_certs(folder / "ca.crt", "ca")[0])


def test_the_ca_is_created_once_private_and_names_nothing(settings: Settings) -> None:
    settings.tls_dir.mkdir(parents=True, mode=0o755)
    files = pki.ensure(settings)
    assert mode(settings.tls_dir) == 0o700
    assert mode(settings.tls_dir / "ca.key") == 0o600
    assert mode(files.server_key) == 0o600
    facts = pki.certificate_facts(settings)
    assert facts["ca"].is_ca and not facts["server"].is_ca
    assert facts["server"].issuer == facts["ca"].subject
    assert facts["server"].names == ("localhost", "127.0.0.1", "::1")
    assert 3640 < facts["ca"].days_left() <= 3650
    assert 390 < facts["server"].days_left() <= 397
    assert pki.ensure(settings) == files
    assert pki.certificate_facts(settings) == facts  # nothing issued twice
    assert pki.ca_pem(settings) == (settings.tls_dir / "ca.crt").read_bytes()


def test_nothing_exists_until_asked_for(settings: Settings) -> None:
    assert pki.certificate_facts(settings) == {}
    assert not settings.tls_dir.exists()


def test_rotate_issues_a_new_key_and_certificate_from_the_same_ca(settings: Settings) -> None:
    files = pki.ensure(settings)
    key_before, cert_before = files.server_key.read_bytes(), files.server_cert.read_bytes()
    ca_before = (settings.tls_dir / "ca.key").read_bytes(), files.ca_cert.read_bytes()
    rotated = pki.rotate_server_cert(settings)
    assert rotated == files
    assert files.server_key.read_bytes() != key_before
    assert files.server_cert.read_bytes() != cert_before
    assert ((settings.tls_dir / "ca.key").read_bytes(), files.ca_cert.read_bytes()) == ca_before
    pki.load_certs(files.server_cert, "")[0].verify_directly_issued_by(project_ca(settings).cert)


def test_a_new_public_name_gets_a_new_certificate_from_the_same_ca(settings: Settings) -> None:
    pki.ensure(settings)
    ca = pki.certificate_facts(settings)["ca"]
    moved = dataclasses.replace(settings, mqtt_public_host="mqtt.police.example")
    pki.ensure(moved)
    facts = pki.certificate_facts(moved)
    assert facts["server"].names == ("mqtt.police.example", "localhost", "127.0.0.1", "::1")
    assert facts["server"].subject == "CN=mqtt.police.example"
    assert facts["ca"] == ca


def test_a_server_certificate_near_its_end_is_issued_again_at_the_next_start(settings: Settings) -> None:
    files = pki.ensure(settings)
    ending = pki.issue_server(project_ca(settings), pki.server_names(settings), days=10)
    files.server_cert.write_bytes(pki.pem_cert(ending.cert))
    files.server_key.write_bytes(pki.pem_key(ending.key))
    pki.ensure(settings)
    assert pki.certificate_facts(settings)["server"].days_left() > 390


def test_the_web_certificate_is_separate_and_names_the_api_host(settings: Settings) -> None:
    web = pki.ensure_web(dataclasses.replace(settings, api_host="10.1.2.3"))
    server = pki.ensure(settings)
    assert web.server_key != server.server_key and web.ca_cert == server.ca_cert
    assert pki.certificate_facts(settings)["web"].names == ("localhost", "10.1.2.3", "127.0.0.1", "::1")


def test_a_lost_ca_key_is_a_clear_error_not_a_new_ca(settings: Settings) -> None:
    pki.ensure(settings)
    (settings.tls_dir / "ca.key").unlink()
    with pytest.raises(TlsError, match=r"ca\.crt exists but .*ca\.key does not: restore it from a backup"):
        pki.ensure(settings)


def test_a_ca_key_that_is_not_the_cas_is_a_clear_error(settings: Settings) -> None:
    pki.ensure(settings)
    other = pki.new_ca("another")
    (settings.tls_dir / "ca.key").write_bytes(pki.pem_key(other.key))
    with pytest.raises(TlsError, match=r"ca\.key is not the key of .*ca\.crt"):
        pki.ensure(settings)


def test_an_expired_project_ca_is_a_clear_error(settings: Settings) -> None:
    old = pki.new_ca("old", now=datetime.now(UTC) - timedelta(days=20), days=10)
    settings.tls_dir.mkdir(parents=True)
    (settings.tls_dir / "ca.crt").write_bytes(pki.pem_cert(old.cert))
    (settings.tls_dir / "ca.key").write_bytes(pki.pem_key(old.key))
    with pytest.raises(TlsError, match="the project CA .* expired on"):
        pki.ensure(settings)


def test_a_ca_within_a_year_of_its_end_is_warned_about(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ending = pki.new_ca("ending", days=100)
    settings.tls_dir.mkdir(parents=True)
    (settings.tls_dir / "ca.crt").write_bytes(pki.pem_cert(ending.cert))
    (settings.tls_dir / "ca.key").write_bytes(pki.pem_key(ending.key))
    with caplog.at_level(logging.WARNING, logger="pendant_backend.pki"):
        pki.ensure(settings)
    assert "the project CA expires on" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


# ---- the operator's certificates --------------------------------------------------------------------


class OperatorPki:
    """An operator's CA and server certificate for mqtt.police.example, written to a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = pki.new_ca("police CA")
        self.server = pki.issue_server(self.ca, ["mqtt.police.example"])

    def write(self, server: pki.Issued | None = None, ca: pki.Issued | None = None) -> dict[str, str]:
        server, ca = server or self.server, ca or self.ca
        (self.folder / "fullchain.pem").write_bytes(pki.pem_cert(server.cert))
        (self.folder / "key.pem").write_bytes(pki.pem_key(server.key))
        os.chmod(self.folder / "key.pem", 0o600)
        (self.folder / "ca.pem").write_bytes(pki.pem_cert(ca.cert))
        return {
            "tls_cert": str(self.folder / "fullchain.pem"),
            "tls_key": str(self.folder / "key.pem"),
            "tls_ca": str(self.folder / "ca.pem"),
        }


@pytest.fixture
def operator(tmp_path: Path) -> OperatorPki:
    return OperatorPki(tmp_path)


def with_files(settings: Settings, files: dict[str, str]) -> Settings:
    return dataclasses.replace(settings, mqtt_public_host="mqtt.police.example", **files)


def test_good_operator_files_are_used_as_they_are_and_no_ca_is_made(settings, operator) -> None:
    given = with_files(settings, operator.write())
    files = pki.ensure(given)
    assert (str(files.server_cert), str(files.server_key), str(files.ca_cert)) == (
        given.tls_cert,
        given.tls_key,
        given.tls_ca,
    )
    assert pki.ensure_web(given) == files
    assert pki.ca_pem(given) == pki.pem_cert(operator.ca.cert)
    assert not settings.tls_dir.exists()
    with pytest.raises(TlsError, match="renew it where it was issued"):
        pki.rotate_server_cert(given)


def test_an_intermediate_in_the_chain_file_is_accepted(settings, operator) -> None:
    # As a public CA's chain has: root -> intermediate -> server; the chain file holds the last two.
    root = pki.new_ca("root", path_length=1)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    intermediate_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )
    intermediate = pki.Issued(key, intermediate_cert)
    leaf = pki.issue_server(intermediate, ["mqtt.police.example"])
    files = operator.write(server=leaf, ca=root)
    Path(files["tls_cert"]).write_bytes(pki.pem_cert(leaf.cert) + pki.pem_cert(intermediate.cert))
    assert pki.ensure(with_files(settings, files)).server_cert == Path(files["tls_cert"])
    # Without the intermediate, the chain does not reach the root: refused.
    Path(files["tls_cert"]).write_bytes(pki.pem_cert(leaf.cert))
    with pytest.raises(TlsError, match="does not check out against PENDANT_TLS_CA"):
        pki.ensure(with_files(settings, files))


def _expired(op: OperatorPki) -> pki.Issued:
    return pki.issue_server(
        op.ca, ["mqtt.police.example"], now=datetime.now(UTC) - timedelta(days=30), days=10
    )


def _foreign(op: OperatorPki) -> pki.Issued:
    return pki.issue_server(pki.new_ca("someone else"), ["mqtt.police.example"])


def _self_signed(op: OperatorPki) -> pki.Issued:
    return pki.new_ca("mqtt.police.example")


def _wrong_name(op: OperatorPki) -> pki.Issued:
    return pki.issue_server(op.ca, ["mqtt.elsewhere.example"])


def _future(op: OperatorPki) -> pki.Issued:
    return pki.issue_server(op.ca, ["mqtt.police.example"], now=datetime.now(UTC) + timedelta(days=3))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (_expired, r"the certificate in PENDANT_TLS_CERT \(.*fullchain\.pem\) expired on .* UTC: renew it"),
        (_future, r"is valid only from .* UTC: check this machine's clock"),
        (_foreign, r"does not check out against PENDANT_TLS_CA .* for the name mqtt\.police\.example"),
        (_self_signed, r"does not check out against PENDANT_TLS_CA"),
        (_wrong_name, r"for the name mqtt\.police\.example \(PENDANT_MQTT_PUBLIC_HOST\): .*subjectAltName"),
    ],
    ids=["expired", "not-yet-valid", "another-ca", "self-signed", "wrong-name"],
)
def test_a_bad_operator_certificate_is_one_clear_error(settings, operator, make, error: str) -> None:
    given = with_files(settings, operator.write(server=make(operator)))
    with pytest.raises(TlsError, match=error):
        pki.ensure(given)


def test_operator_files_must_come_together(settings, operator) -> None:
    files = operator.write()
    with pytest.raises(TlsError, match="set PENDANT_TLS_KEY and PENDANT_TLS_CA too, or none of them"):
        pki.ensure(dataclasses.replace(settings, tls_cert=files["tls_cert"]))


def test_a_missing_or_unreadable_operator_file_is_named(settings, operator) -> None:
    files = operator.write()
    with pytest.raises(TlsError, match=r"PENDANT_TLS_CA names .*nope\.pem, which does not exist"):
        pki.ensure(with_files(settings, {**files, "tls_ca": str(operator.folder / "nope.pem")}))
    (operator.folder / "garbage.pem").write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"PENDANT_TLS_CERT \(.*garbage\.pem\) holds no PEM certificate"):
        pki.ensure(with_files(settings, {**files, "tls_cert": str(operator.folder / "garbage.pem")}))
    with pytest.raises(TlsError, match=r"PENDANT_TLS_KEY \(.*garbage\.pem\) holds no PEM private key"):
        pki.ensure(with_files(settings, {**files, "tls_key": str(operator.folder / "garbage.pem")}))


def test_a_key_that_is_not_the_certificates_or_has_a_passphrase_is_refused(settings, operator) -> None:
    files = operator.write()
    other = pki.issue_server(operator.ca, ["mqtt.police.example"])
    Path(files["tls_key"]).write_bytes(pki.pem_key(other.key))
    with pytest.raises(TlsError, match="is not the key of the certificate in PENDANT_TLS_CERT"):
        pki.ensure(with_files(settings, files))
    locked = operator.server.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    Path(files["tls_key"]).write_bytes(locked)
    with pytest.raises(TlsError, match="is protected by a passphrase: give the key without one"):
        pki.ensure(with_files(settings, files))


def test_an_operator_certificate_near_its_end_or_a_readable_key_is_warned_about(
    settings, operator, caplog: pytest.LogCaptureFixture
) -> None:
    ending = pki.issue_server(operator.ca, ["mqtt.police.example"], days=5)
    files = operator.write(server=ending)
    os.chmod(files["tls_key"], 0o644)
    with caplog.at_level(logging.WARNING, logger="pendant_backend.pki"):
        pki.ensure(with_files(settings, files))
    assert "the certificate in PENDANT_TLS_CERT expires on" in caplog.text
    assert "can be read by other users: chmod 600 it" in caplog.text
