"""The secret check itself (tests/leak_check.py): a log with a secret in it is caught, in every form the
secret could take; a clean log passes; a data folder's secrets and logs are found where the project
keeps them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from leak_check import Output, Registry, Secret, find_leaks, folder_logs, folder_secrets, pem_private_keys

PASSWORD = "Zk3v9Qp1Lr7Tx2Wm5Yb8Nc4"
KEY = bytes(range(240, 256))  # base64 of it has + and /, base64url - and _


def _leaks(text: str, *secrets: Secret) -> list[str]:
    return [
        leak.form for leak in find_leaks([Output("broker.log", text)], secrets or [Secret("pw", PASSWORD)])
    ]


@pytest.mark.parametrize(
    ("text", "form"),
    [
        (f"1712 New client connected as pd-0001 (p2, c0, k60, u'pd-0001', pw {PASSWORD}).", "plain"),
        (f"Authorization: Basic {base64.b64encode(f'pd-0001:{PASSWORD}'.encode()).decode()}", "base64"),
        (f"config={base64.urlsafe_b64encode(b'{x}' + KEY).decode()}", "base64url"),
        (f"-> data b'{PASSWORD.encode().hex()}'", "hex"),
        (f"frame {PASSWORD.encode().hex().upper()}", "HEX"),
        (f"GET /login?password={quote(PASSWORD + '/+')}", "percent"),
    ],
)
def test_a_log_with_the_secret_in_it_is_caught(text: str, form: str) -> None:
    secret = {"percent": PASSWORD + "/+", "base64url": KEY}.get(form, PASSWORD)
    [found] = _leaks(text, Secret("pw", secret))
    assert found.startswith(form)


def test_a_clean_log_passes_and_a_leak_names_the_secret_and_the_output() -> None:
    assert _leaks("1712 New client connected from 127.0.0.1 as pd-0001 (p2, c0, k60, u'pd-0001').") == []
    [leak] = find_leaks(
        [Output("/data/broker/mosquitto.log", PASSWORD)], [Secret("device password", PASSWORD)]
    )
    assert str(leak) == "device password appears in /data/broker/mosquitto.log (plain)"
    assert PASSWORD not in str(leak)


def test_a_private_key_is_caught_by_its_pem_lines_and_its_raw_value() -> None:
    for key in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        [secret] = pem_private_keys(pem, "tls/ca.key")
        assert _leaks(f"loaded key:\n{pem}", secret)
        second_line = pem.splitlines()[2] if len(pem.splitlines()) > 3 else pem.splitlines()[1]
        assert _leaks(f"... {second_line} ...", secret)
        assert _leaks("nothing here", secret) == []
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    [secret] = pem_private_keys(rsa_pem, "tls/server.key")
    assert secret.label == "tls/server.key (rsa private key)"
    assert _leaks(rsa_pem.splitlines()[10], secret)


def test_a_handed_over_password_may_show_once_where_it_is_handed_over() -> None:
    output = Output("/data/demo.out", f"log in as 'dispatcher' with the one-time password {PASSWORD}\n")
    secret = Secret("one-time password", PASSWORD)
    assert find_leaks([output], [secret], {("/data/demo.out", PASSWORD): 1}) == []
    twice = Output("/data/demo.out", output.text * 2)
    assert len(find_leaks([twice], [secret], {("/data/demo.out", PASSWORD): 1})) == 1
    elsewhere = Output("/data/broker/mosquitto.log", output.text)
    assert len(find_leaks([elsewhere], [secret], {("/data/demo.out", PASSWORD): 1})) == 1


def _data_folder(root: Path) -> Path:
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "broker.json").write_text(
        json.dumps({"admin": {"username": "pendant_admin", "password": "admin-" + PASSWORD}})
    )
    (root / "secrets" / "signing.key").write_text(("ab" * 32) + "\n")
    (root / "devices" / "pd-0001").mkdir(parents=True)
    (root / "devices" / "pd-0001" / "config.json").write_text(
        json.dumps(
            {
                "device_id": "pd-0001",
                "mqtt": {"user": "pd-0001", "password": PASSWORD},
                "key_sha256": "f" * 64,
            }
        )
    )
    key = ed25519.Ed25519PrivateKey.generate()
    (root / "tls").mkdir()
    (root / "tls" / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (root / "broker").mkdir()
    (root / "broker" / "mosquitto.log").write_text("1712 mosquitto version 2.0.11 running\n")
    (root / "sim" / "pd-0001").mkdir(parents=True)
    (root / "sim" / "pd-0001" / "console.log").write_text("[bench] boot 1\n")
    return root


def test_a_data_folder_gives_up_its_secrets_and_its_logs(tmp_path: Path) -> None:
    folder = _data_folder(tmp_path / "data")
    labels = sorted(secret.label for secret in folder_secrets(folder))
    assert labels == [
        "devices/pd-0001/config.json mqtt.password",
        "secrets/broker.json admin.password",
        "secrets/signing.key",
        "tls/ca.key (private key)",
    ]
    assert [Path(o.label).name for o in folder_logs(folder)] == ["mosquitto.log", "console.log"]


def test_the_registry_finds_a_password_printed_in_a_log_of_a_harvested_folder(tmp_path: Path) -> None:
    folder = _data_folder(tmp_path / "data")
    registry = Registry()
    registry.harvest(folder)  # not collecting: nothing is read
    assert registry.secrets == {} and registry.outputs == []
    registry.start("tests/e2e/test_x.py::test_y")
    registry.harvest(folder)
    registry.add_secret("account ann's password", "correct horse battery staple")
    registry.add_secret("too short to be a secret", "x")
    registry.stop()
    assert registry.leaks() == []
    assert "2 outputs (2 log files, 1 console.log, 1 mosquitto.log; 0 console captures" in registry.summary()
    assert "correct horse" not in repr(registry) and PASSWORD not in repr(registry)
    assert "searched for 5 secrets" in registry.summary()
    # The same folder, where a log now holds a device password and a console an account's password.
    with (folder / "broker" / "mosquitto.log").open("a") as log:
        log.write(f"1713 client pd-0001 password {PASSWORD}\n")
    registry = Registry()
    registry.start("tests/e2e/test_x.py::test_y")
    registry.harvest(folder)
    registry.add_secret("account ann's password", "correct horse battery staple")
    registry.add_output("pendant user add ann", "one-time password for ann: correct horse battery staple")
    registry.stop()
    assert sorted(str(leak) for leak in registry.leaks()) == [
        "account ann's password appears in pendant user add ann (plain)",
        "devices/pd-0001/config.json mqtt.password appears in "
        f"{folder.resolve()}/broker/mosquitto.log (plain)",
    ]
