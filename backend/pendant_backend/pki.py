"""The project's certificate authority and the TLS certificates of the broker and the web server.

On first use `ensure()` creates a CA in <data>/tls (the folder 0700, the CA key 0600, never logged) and
a server certificate signed by it for the names pendants and clients connect to. Pendants and clients
trust the CA (`ca_pem()`), so a new server certificate (`rotate_server_cert()`) changes nothing for
them. An operator who has certificates of their own names them in PENDANT_TLS_CERT, PENDANT_TLS_KEY and
PENDANT_TLS_CA; they are checked (present, parseable, key and certificate match, not expired, signed by
the CA, naming PENDANT_MQTT_PUBLIC_HOST) and used as they are.

Keys are RSA (the A7670's TLS stack and every client support it): 3072 bits for the CA, 2048 for the
servers. Every listener that uses these files allows TLS 1.2 or later only.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from pendant_backend import BackendError
from pendant_backend.settings import Settings, write_private_file

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 397
# A certificate the project issued is replaced at the next start once it has less than this left.
RENEW_BEFORE_DAYS = 30
# Replacing the CA means a visit to every pendant: warn a year ahead.
CA_WARN_DAYS = 365
_CA_KEY_BITS, _SERVER_KEY_BITS = 3072, 2048
# A little slack for clocks that run behind (a modem's clock before NITZ).
_BACKDATE = timedelta(minutes=5)

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
WEB_CERT, WEB_KEY = "web.crt", "web.key"


class TlsError(BackendError):
    """A certificate or key is missing, damaged, expired or does not fit."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files a TLS listener needs: the CA its clients trust, its certificate (chain) and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class CertFacts:
    """What a person checks about a certificate: who it is for, who signed it, until when."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    sha256: str
    is_ca: bool

    def days_left(self, now: datetime | None = None) -> float:
        """Days until it expires (negative once it has)."""
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (dates in ISO 8601, UTC)."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256": self.sha256,
            "is_ca": self.is_ca,
        }


@dataclass(frozen=True)
class Issued:
    """A key and the certificate issued for it (objects; `pem_key`/`pem_cert` turn them into files)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate


# ---- facts --------------------------------------------------------------------------------------------


def describe(cert: x509.Certificate) -> CertFacts:
    """The facts of one certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n) for n in san.get_values_for_type(x509.DNSName)) + tuple(
            str(ip) for ip in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertFacts(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=fingerprint(cert),
        is_ca=is_ca,
    )


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as browsers and `openssl x509 -fingerprint -sha256` show it (AA:BB:...)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def fingerprint_der(der: bytes) -> str:
    """`fingerprint` of a certificate in DER (as `ssl.SSLSocket.getpeercert(True)` returns it)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def load_certs(path: Path, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file; TlsError naming `what` if the file is missing or holds none."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{what} names {path}, which does not exist") from None
    except OSError as exc:
        raise TlsError(f"cannot read {what} ({path}): {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(
            f"{what} ({path}) holds no PEM certificate (it must begin with -----BEGIN CERTIFICATE)"
        )
    return certs


def load_key(path: Path, what: str) -> Any:
    """The private key in a PEM file; TlsError if missing, damaged or protected by a passphrase."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{what} names {path}, which does not exist") from None
    except OSError as exc:
        raise TlsError(f"cannot read {what} ({path}): {exc.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsError(
            f"{what} ({path}) is protected by a passphrase: give the key without one (and keep it 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"{what} ({path}) holds no PEM private key") from None


# ---- issuing ----------------------------------------------------------------------------------------


def new_ca(
    common_name: str, *, now: datetime | None = None, days: int = CA_DAYS, path_length: int | None = 0
) -> Issued:
    """A self-signed CA; with path length 0 (the project CA's) it may sign server certificates only."""
    now = now or datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=_CA_KEY_BITS)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pendant-alarm"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension that allows only the uses named (the rest are off)."""
    uses = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{use: use in allowed for use in uses})


def issue_server(
    ca: Issued, names: list[str], *, now: datetime | None = None, days: int = SERVER_DAYS
) -> Issued:
    """A server certificate for `names` (host names and IP addresses), signed by `ca`.

    `now` and `days` may place it in the past: the tests make expired certificates with them.
    """
    if not names:
        raise TlsError("a server certificate needs at least one name")
    now = now or datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=_SERVER_KEY_BITS)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_encipherment"),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def pem_cert(cert: x509.Certificate) -> bytes:
    """A certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: rsa.RSAPrivateKey) -> bytes:
    """A private key in unencrypted PKCS#8 PEM (the file's mode 0600 protects it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# ---- the project CA in <data>/tls -------------------------------------------------------------------


def server_names(settings: Settings) -> list[str]:
    """The names in the broker's certificate: the public name, then what local clients use."""
    return _unique([settings.mqtt_public_host, "localhost", "127.0.0.1", "::1"])


def web_names(settings: Settings) -> list[str]:
    """The names in the web server's certificate: the public name, the API address, and loopback."""
    wildcard = settings.api_host in ("", "0.0.0.0", "::")
    api_host = [] if wildcard else [settings.api_host]
    return _unique([settings.mqtt_public_host, *api_host, "localhost", "127.0.0.1", "::1"])


def ensure(settings: Settings) -> TlsFiles:
    """The broker's TLS files: the operator's (checked), or the project CA's, created on first use.

    A certificate the project issued is issued again, from the same CA, when it is missing, expires
    within RENEW_BEFORE_DAYS or no longer names PENDANT_MQTT_PUBLIC_HOST.
    """
    return _files(settings, SERVER_CERT, SERVER_KEY, server_names(settings))


def ensure_web(settings: Settings) -> TlsFiles:
    """`ensure` for the console and the API: the operator's files, or a web certificate of the project
    CA (a key of its own, so that the broker's copy of its key opens nothing else)."""
    return _files(settings, WEB_CERT, WEB_KEY, web_names(settings))


def _files(settings: Settings, cert_name: str, key_name: str, names: list[str]) -> TlsFiles:
    """The operator's files, or the project CA's certificate `cert_name` for `names` (issued when due)."""
    if settings.operator_tls:
        return operator_files(settings)
    with _locked(settings):
        ca = _ensure_ca(settings)
        return _ensure_leaf(settings, ca, cert_name, key_name, names)


def ca_file(settings: Settings) -> Path:
    """The PEM file of the CA that pendants and clients must trust (the project CA is created on first
    use; the operator's PENDANT_TLS_CA is checked with the rest of their files)."""
    if settings.operator_tls:
        return operator_files(settings).ca_cert
    with _locked(settings):
        _ensure_ca(settings)
    return settings.tls_dir / CA_CERT


def ca_pem(settings: Settings) -> bytes:
    """The PEM of the CA that pendants and clients must trust (created on first use)."""
    return ca_file(settings).read_bytes()


def rotate_server_cert(settings: Settings) -> TlsFiles:
    """A new key and certificate for the broker from the same CA; the CA and device credentials stay.

    The running broker serves the new one once it is reloaded (`broker.reload_certificates`).
    """
    if settings.operator_tls:
        raise TlsError(
            "the broker's certificate is the operator's own (PENDANT_TLS_CERT): renew it where it was "
            "issued, then reload the broker"
        )
    with _locked(settings):
        ca = _ensure_ca(settings)
        files = _issue_leaf(settings, ca, SERVER_CERT, SERVER_KEY, server_names(settings))
    log.info("issued a new broker certificate, %s", describe(load_certs(files.server_cert, "")[0]).sha256)
    return files


def certificate_facts(settings: Settings) -> dict[str, CertFacts]:
    """The facts of the CA and of the broker's and the web server's certificates, as they are on disk
    (nothing is created): keys `ca`, `server` and `web`, each only if present."""
    if settings.operator_tls:
        paths = {"ca": Path(settings.tls_ca), "server": Path(settings.tls_cert)}
    else:
        folder = settings.tls_dir
        paths = {"ca": folder / CA_CERT, "server": folder / SERVER_CERT, "web": folder / WEB_CERT}
    return {role: describe(load_certs(path, role)[0]) for role, path in paths.items() if path.is_file()}


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    # The broker, the web server and provisioning may all want the CA at once; one creates it.
    folder = settings.tls_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ensure_ca(settings: Settings) -> Issued:
    folder = settings.tls_dir
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        host = socket.gethostname().split(".")[0] or "pendant"
        ca = new_ca(f"pendant alarm CA {host} {secrets.token_hex(3)}")
        write_private_file(key_path, pem_key(ca.key))
        write_private_file(cert_path, pem_cert(ca.cert))
        log.info("created the project CA in %s (give %s to the pendants)", folder, cert_path)
        return ca
    if not (cert_path.exists() and key_path.exists()):
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise TlsError(
            f"{present} exists but {missing} does not: restore it from a backup, or delete the folder "
            f"{folder} to start a new CA (every pendant must then be provisioned again)"
        )
    cert = load_certs(cert_path, "the project CA")[0]
    key = load_key(key_path, "the project CA key")
    if _public_der(key) != _public_der(cert):
        raise TlsError(f"{key_path} is not the key of {cert_path}: restore both from the same backup")
    left = describe(cert).days_left()
    if left <= 0:
        raise TlsError(
            f"the project CA ({cert_path}) expired on {cert.not_valid_after_utc:%Y-%m-%d}: delete {folder} "
            "to start a new CA, and provision every pendant again"
        )
    if left < CA_WARN_DAYS:
        log.warning(
            "the project CA expires on %s: plan a new CA and a visit to every pendant before then",
            f"{cert.not_valid_after_utc:%Y-%m-%d}",
        )
    return Issued(key, cert)


def _ensure_leaf(settings: Settings, ca: Issued, cert_name: str, key_name: str, names: list[str]) -> TlsFiles:
    folder = settings.tls_dir
    files = TlsFiles(folder / CA_CERT, folder / cert_name, folder / key_name)
    reason = _why_reissue(files, ca, names)
    if reason is None:
        return files
    log.info("issuing %s from the project CA: %s", files.server_cert.name, reason)
    return _issue_leaf(settings, ca, cert_name, key_name, names)


def _why_reissue(files: TlsFiles, ca: Issued, names: list[str]) -> str | None:
    if not files.server_cert.exists() or not files.server_key.exists():
        return "there is none yet"
    try:
        cert = load_certs(files.server_cert, files.server_cert.name)[0]
        key = load_key(files.server_key, files.server_key.name)
        cert.verify_directly_issued_by(ca.cert)
    except (TlsError, ValueError, TypeError, InvalidSignature) as exc:
        return f"the one there cannot be used ({type(exc).__name__})"
    if _public_der(key) != _public_der(cert):
        return "its key does not match it"
    facts = describe(cert)
    if facts.days_left() < RENEW_BEFORE_DAYS:
        return f"it expires on {facts.not_after:%Y-%m-%d}"
    missing = [n for n in names if n not in facts.names]
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


def _issue_leaf(settings: Settings, ca: Issued, cert_name: str, key_name: str, names: list[str]) -> TlsFiles:
    folder = settings.tls_dir
    leaf = issue_server(ca, names)
    # The key first: a certificate beside the wrong key would be reissued at the next start anyway.
    write_private_file(folder / key_name, pem_key(leaf.key))
    write_private_file(folder / cert_name, pem_cert(leaf.cert))
    return TlsFiles(folder / CA_CERT, folder / cert_name, folder / key_name)


def _public_der(item: Any) -> bytes:
    public = item.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


# ---- certificates the operator supplies -------------------------------------------------------------


def operator_files(settings: Settings, *, now: datetime | None = None) -> TlsFiles:
    """PENDANT_TLS_CERT/_KEY/_CA, checked; one TlsError naming the first fault otherwise."""
    given = {"PENDANT_TLS_CERT": settings.tls_cert, "PENDANT_TLS_KEY": settings.tls_key}
    given["PENDANT_TLS_CA"] = settings.tls_ca
    unset = [name for name, value in given.items() if not value]
    if unset:
        raise TlsError(
            "PENDANT_TLS_CERT, PENDANT_TLS_KEY and PENDANT_TLS_CA go together: set "
            f"{' and '.join(unset)} too, or none of them to use the project CA"
        )
    files = TlsFiles(Path(settings.tls_ca), Path(settings.tls_cert), Path(settings.tls_key))
    chain = load_certs(files.server_cert, "PENDANT_TLS_CERT")
    anchors = load_certs(files.ca_cert, "PENDANT_TLS_CA")
    key = load_key(files.server_key, "PENDANT_TLS_KEY")
    leaf = chain[0]
    if _public_der(key) != _public_der(leaf):
        raise TlsError(
            f"PENDANT_TLS_KEY ({files.server_key}) is not the key of the certificate in PENDANT_TLS_CERT "
            f"({files.server_cert}): give the key it was issued for"
        )
    now = now or datetime.now(UTC)
    facts = describe(leaf)
    if facts.not_after <= now:
        raise TlsError(
            f"the certificate in PENDANT_TLS_CERT ({files.server_cert}) expired on "
            f"{facts.not_after:%Y-%m-%d %H:%M} UTC: renew it"
        )
    if facts.not_before > now:
        raise TlsError(
            f"the certificate in PENDANT_TLS_CERT ({files.server_cert}) is valid only from "
            f"{facts.not_before:%Y-%m-%d %H:%M} UTC: check this machine's clock"
        )
    _verify_chain(settings, leaf, chain[1:], anchors, now=now, files=files)
    if facts.days_left(now) < RENEW_BEFORE_DAYS:
        log.warning(
            "the certificate in PENDANT_TLS_CERT expires on %s: renew it, then reload the broker",
            f"{facts.not_after:%Y-%m-%d}",
        )
    if files.server_key.stat().st_mode & 0o077:
        log.warning("PENDANT_TLS_KEY (%s) can be read by other users: chmod 600 it", files.server_key)
    return files


def _verify_chain(
    settings: Settings,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    *,
    now: datetime,
    files: TlsFiles,
) -> None:
    host = settings.mqtt_public_host
    try:
        subject: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = PolicyBuilder().store(Store(anchors)).time(now).build_server_verifier(subject)  # type: ignore[arg-type]
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise TlsError(
            f"the certificate in PENDANT_TLS_CERT ({files.server_cert}) does not check out against "
            f"PENDANT_TLS_CA ({files.ca_cert}) for the name {host} (PENDANT_MQTT_PUBLIC_HOST): {exc}"
        ) from None
