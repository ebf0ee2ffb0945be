"""The flash and the capture for the test_mqtt_tls*.py scripts: config.json over TLS, ca.pem, and the
console lines of connect.py and start.py."""

import os

from pendant import connect, start

# A stand-in for the CA certificate: the firmware streams it, hashes it and never parses it.
CA = b"-----BEGIN CERTIFICATE-----\n" + b"MIIBtest0123456789+/\n" * 8 + b"-----END CERTIFICATE-----\n"
CONFIG = (
    '{"device_id":"pd-0001","mqtt":{"host":"localhost","port":8883,"user":"pd-0001","password":"pw",'
    '"tls":true,"ca":"ca.pem","keepalive":60},"apn":"internet"}'
)
WANTED = ("TLS handshake failed", "on the flash", "loading the CA")
lines = []


def capture(module, message):
    for text in WANTED:
        if text in message:
            lines.append(message)


connect.log = start.log = capture


def flash(ca=CA):
    """config.json for TLS, and ca.pem (none when ca is None); the captured lines forgotten."""
    with open("config.json", "w") as f:
        f.write(CONFIG)
    try:
        os.remove("ca.pem")
    except OSError:
        pass  # not there
    if ca is not None:
        with open("ca.pem", "wb") as f:
            f.write(ca)
    del lines[:]


def ssl_options(fake):
    """The AT+CSSLCFG options the firmware sent (of the fake's last 40 commands)."""
    return [c[11:] for c in fake.commands if c.startswith("AT+CSSLCFG=")]


def stored(fake):
    """The certificates in the fake modem's store."""
    return [name for name in fake.data if name.endswith(".pem")]
