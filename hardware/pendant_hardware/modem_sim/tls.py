"""TLS set-up: AT+CSSLCFG (SSL contexts), AT+CCERTDOWN / AT+CCERTLIST / AT+CCERTDELE (the modem's
certificate store) and AT+CMQTTSSLCFG (which context an MQTT client uses). `ssl_context()` turns a
configured context into the Python ssl.SSLContext the broker bridge connects with, so the handshake the
firmware configured happens for real, against the real broker.

What the A76XX AT manual (V1.09, SSL commands) gives for a context, and how each is played here:
- sslversion: 0 SSL 3.0, 1 TLS 1.0, 2 TLS 1.1, 3 TLS 1.2, 4 all (the default). The manual names nothing
  newer than TLS 1.2, so no value here goes past TLS 1.2; 3 is exactly TLS 1.2.
- authmode: 0 no authentication (the default), 1 the server is verified against `cacert`, 2 server and
  client (`clientcert`, `clientkey`), 3 client only.
- ignorelocaltime: 1 (the default) the certificates' validity dates are not checked (the modem may have
  no clock), 0 they are checked against the modem's clock (here: the host's).
- enableSNI: 1 the host name of AT+CMQTTCONNECT goes out as SNI (never for an IP address), 0 (the
  default) no SNI.
- Host names: the manual has no option for checking the server certificate's name against the host
  (Quectel modems have "checkhost"; SIMCom's AT+CSSLCFG has none), so the modem is taken to verify the
  chain (and, with ignorelocaltime 0, the dates) only, and so does the simulator: a certificate from the
  right CA for another name is accepted.
A context with authmode 1 or 2 whose `cacert` is not set or not in the store gives `+CMQTTCONNECT:
<n>,33` ("not set certificate" in the manual's MQTT result codes); a failed verification or handshake
gives 32 ("handshake fail"; some A7670 firmware reports 34, "open SSL session failed").
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pendant_hardware.modem_sim.at_parser import AtCommand, AtError, int_param, max_params, str_param
from pendant_hardware.modem_sim.command_table import CommandTable

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

CONTEXTS = 10
MAX_CERT_BYTES = 10240
FILE_OPTIONS = ("cacert", "clientcert", "clientkey")
INT_OPTIONS = {
    "sslversion": (0, 4),
    "authmode": (0, 3),
    "ignorelocaltime": (0, 1),
    "negotiatetime": (10, 300),
    "enablesni": (0, 1),
}
_TLS_VERSIONS = {
    0: (ssl.TLSVersion.SSLv3, ssl.TLSVersion.SSLv3),
    1: (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1),
    2: (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1),
    3: (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    4: (ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_2),
}
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME, which Python's ssl module has no name for: ignorelocaltime 1.
_NO_CHECK_TIME = 0x200000


NOT_SET_CERTIFICATE = 33  # +CMQTTCONNECT result: the context's certificate is not set or not stored
HANDSHAKE_FAIL = 32


class TlsSetupError(Exception):
    """A context names a certificate that is not in the store (err 33), or the store's file is not
    usable (err 32): `err` is the +CMQTTCONNECT result the modem gives."""

    def __init__(self, message: str, err: int = HANDSHAKE_FAIL) -> None:
        super().__init__(message)
        self.err = err


class ModemSslContext(ssl.SSLContext):
    """An SSLContext that sends SNI only when the modem's context says enableSNI 1: the bridge's MQTT
    library always passes the host name, and the modem without SNI does not."""

    send_sni = False

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):  # type: ignore[no-untyped-def,override]
        """ssl.SSLContext.wrap_socket, with the host name kept back unless SNI is on."""
        return super().wrap_socket(
            sock, *args, server_hostname=server_hostname if self.send_sni else None, **kwargs
        )


@dataclass
class SslConfig:
    """One SSL context as AT+CSSLCFG configured it."""

    sslversion: int = 4
    authmode: int = 0
    ignorelocaltime: int = 1
    negotiatetime: int = 300
    enablesni: int = 0
    cacert: str = ""
    clientcert: str = ""
    clientkey: str = ""


class TlsCommands:
    """SSL contexts (reset at power-on) and the certificate store (kept: it is the modem's flash)."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.files: dict[str, bytes] = {}
        self.contexts = [SslConfig() for _ in range(CONTEXTS)]
        self.mqtt_context = [0, 0]  # AT+CMQTTSSLCFG: the context of MQTT client 0 and 1

    def register(self, table: CommandTable) -> None:
        """Put this family's handlers into the modem's command table."""
        table.add("+CSSLCFG", set=self.csslcfg)
        table.add("+CCERTDOWN", set=self.ccertdown)
        table.add("+CCERTLIST", exec=self.ccertlist)
        table.add("+CCERTDELE", set=self.ccertdele)
        table.add("+CMQTTSSLCFG", set=self.cmqttsslcfg, read=self.cmqttsslcfg_read)

    def reset(self) -> None:
        """Power-on: contexts back to defaults; the stored certificates stay."""
        self.contexts = [SslConfig() for _ in range(CONTEXTS)]
        self.mqtt_context = [0, 0]

    async def csslcfg(self, command: AtCommand) -> None:
        """AT+CSSLCFG="<option>",<ctx>,<value>: an integer option or the name of a stored file."""
        params = command.args()
        max_params(params, 3)
        option = str_param(params, 0).lower()
        context = self.contexts[int_param(params, 1, 0, CONTEXTS - 1)]
        if option in INT_OPTIONS:
            low, high = INT_OPTIONS[option]
            setattr(context, option, int_param(params, 2, low, high))
        elif option in FILE_OPTIONS:
            setattr(context, option, str_param(params, 2))
        else:
            raise AtError(f"unknown SSL option {option}")

    async def ccertdown(self, command: AtCommand) -> None:
        """AT+CCERTDOWN="<name>",<len>: `>`, then exactly <len> bytes of certificate or key (.pem/.der)."""
        params = command.args()
        max_params(params, 2)
        name = str_param(params, 0)
        size = int_param(params, 1, 1, MAX_CERT_BYTES)
        if not name.lower().endswith((".pem", ".der")) or "/" in name or len(name) > 64:
            raise AtError(f"a certificate file is <name>.pem or <name>.der: {name!r}")
        self.files[name] = await self.modem.read_data(size)

    async def ccertlist(self, command: AtCommand) -> None:
        """AT+CCERTLIST: one +CCERTLIST line per stored file."""
        if self.files:
            self.modem.reply_block([f'+CCERTLIST: "{name}"' for name in sorted(self.files)])

    async def ccertdele(self, command: AtCommand) -> None:
        """AT+CCERTDELE="<name>": delete a stored file; ERROR when there is none."""
        params = command.args()
        max_params(params, 1)
        if self.files.pop(str_param(params, 0), None) is None:
            raise AtError("no such certificate file")

    async def cmqttsslcfg(self, command: AtCommand) -> None:
        """AT+CMQTTSSLCFG=<client>,<ctx>: the SSL context an MQTT client with TLS uses."""
        params = command.args()
        max_params(params, 2)
        client = int_param(params, 0, 0, 1)
        self.mqtt_context[client] = int_param(params, 1, 0, CONTEXTS - 1)

    async def cmqttsslcfg_read(self, command: AtCommand) -> None:
        """AT+CMQTTSSLCFG?"""
        self.modem.reply_block(
            [f"+CMQTTSSLCFG: {index},{ctx}" for index, ctx in enumerate(self.mqtt_context)]
        )

    def ssl_context(self, client: int) -> ssl.SSLContext:
        """The ssl.SSLContext for MQTT client `client`; TlsSetupError when a named file is missing/bad."""
        return build_ssl_context(self.contexts[self.mqtt_context[client]], self.files)


def build_ssl_context(config: SslConfig, files: dict[str, bytes]) -> ssl.SSLContext:
    """An SSLContext that verifies what `config.authmode` says, from the files in the store, with the
    TLS version, SNI and date checks of `config` (see the module docstring)."""
    context = ModemSslContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # as the modem: the chain is verified, not the name
    context.send_sni = config.enablesni == 1
    low, high = _TLS_VERSIONS[config.sslversion]
    with warnings.catch_warnings():  # the old versions are deprecated: that is what is being played
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.suppress(ValueError):  # SSL 3.0 is not built into this OpenSSL: no handshake
            context.minimum_version = low
        context.maximum_version = high
    if config.ignorelocaltime:
        context.verify_flags |= _NO_CHECK_TIME
    if config.authmode in (1, 2):
        context.verify_mode = ssl.CERT_REQUIRED
        ca = _file(files, config.cacert, "cacert")
        try:
            if config.cacert.lower().endswith(".der"):
                context.load_verify_locations(cadata=ca)
            else:
                context.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
            raise TlsSetupError(f"cacert {config.cacert} is not a certificate: {exc}") from None
    else:
        context.verify_mode = ssl.CERT_NONE
    if config.authmode in (2, 3):
        _load_client_cert(context, config, files)
    return context


def _file(files: dict[str, bytes], name: str, option: str) -> bytes:
    if not name:
        raise TlsSetupError(f"the SSL context has no {option}", NOT_SET_CERTIFICATE)
    if name not in files:
        raise TlsSetupError(
            f"{option} {name} is not in the certificate store (AT+CCERTDOWN)", NOT_SET_CERTIFICATE
        )
    return files[name]


def _load_client_cert(context: ssl.SSLContext, config: SslConfig, files: dict[str, bytes]) -> None:
    # ssl wants files for the client certificate and key: write them for the moment it reads them.
    cert = _file(files, config.clientcert, "clientcert")
    key = _file(files, config.clientkey, "clientkey")
    with tempfile.TemporaryDirectory(prefix="modem-tls-") as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            with open(path, "wb") as out:
                out.write(data)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TlsSetupError(f"client certificate or key not usable: {exc}") from None
