"""Starting the modem's MQTT service from scratch: whatever ran stopped, AT+CMQTTSTART, TLS set up when
config.json says so, client 0 acquired. The session runs it when it needs to (session.need START: at
boot, after +CMQTTNONET, or after repeated failures), before connect.py.

TLS (docs/protocol.md, "TLS from the pendant"): the CA the server's certificate must come from is `ca.pem` on the
flash beside config.json, never in config.json itself (read on every connect: a PEM string would be 1-2
KB of heap). The modem keeps certificates in its own flash; the CA is stored there under a
name made from its SHA-256, so `AT+CCERTLIST` tells whether the modem has this CA already, and it is
written (streamed from the flash in small pieces) only when it has not.
"""

import hashlib
import json
from binascii import hexlify

from micropython import const

from . import log
from .atchan import ATError
from .modem import NOTHING

_START_MS = const(12000)  # +CMQTTSTART: 0 can take up to 12 s
# AT+CSSLCFG for context 0 (A76XX AT manual): TLS 1.2 ("sslversion" 3; the manual knows nothing newer),
# the server verified against "cacert" ("authmode" 1), the host name sent as SNI.
_SSL = ('"sslversion",0,3', '"authmode",0,1', '"enableSNI",0,1')


async def start(session):
    """Stop whatever ran, start the MQTT service, set TLS up (config.json's mqtt "tls") and acquire
    client 0 (with TLS, bound to SSL context 0); then session.need is NOTHING. ATError / ATTimeout on the
    way."""
    modem = session.modem
    with open("config.json") as f:  # checked at boot
        mqtt = json.load(f)["mqtt"]
    tls = mqtt.get("tls")
    for step in "DISC=0,10", "REL=0", "STOP":
        await modem.mqtt([(step, None, 0 if step == "REL=0" else 12000)], True)
    try:
        err = await modem.mqtt((("START", None, _START_MS),))
    except ATError:
        err = 0  # a bare ERROR: the service runs already
    if err and err != 23:  # 23: opened already
        raise ATError("mqtt start: %d" % err)
    if tls:
        await secure(modem.chan, mqtt.get("ca", "ca.pem"))
    await modem.mqtt((('ACCQ=0,"%s"%s' % (session.device_id, ",1" if tls else ""), None, 0),))
    if tls:
        await modem.mqtt((("SSLCFG=0,0", None, 0),))  # MQTT client 0 uses SSL context 0
    session.need = NOTHING


async def secure(chan, path):
    """Set up SSL context 0 for the pendant's TLS: the CA of the file `path` in the modem's store (loaded
    only when the modem does not list it; a CA of before is deleted), TLS 1.2, the server verified against
    that CA, its validity dates too when the modem's clock is set, and SNI. ATError when the modem
    refuses or the file is missing."""
    digest = hashlib.sha256()
    buf = bytearray(128)
    size = 0
    try:
        with open(path, "rb") as f:
            n = f.readinto(buf)
            while n:
                digest.update(memoryview(buf)[:n])
                size += n
                n = f.readinto(buf)
    except OSError:
        log("mqtt", "no %s on the flash: provision the pendant again" % path)
        raise ATError("no CA") from None
    name = "ca_%s.pem" % hexlify(digest.digest()[:4]).decode()
    have = False
    for line in await chan.command("AT+CCERTLIST", 5000):
        if name in line:
            have = True
        elif '"ca_' in line:  # the CA before this one: the modem's store is small
            await chan.command("AT+CCERTDELE=" + line[line.find('"') :], 5000)
    if not have:
        log("mqtt", "loading the CA into the modem as " + name)
        await chan.command('AT+CCERTDOWN="%s",%d' % (name, size), 10000, path)
    # The modem checks the dates by its own clock, set from the network (a power-on leaves it at 1970 or
    # 1980): checked without one, every certificate would fail.
    line = (await chan.command("AT+CCLK?", 5000) or ("",))[0]
    year = line[line.find('"') + 1 :][:2]
    clock = year.isdigit() and 24 <= int(year) < 70
    for option in _SSL + ('"ignorelocaltime",0,%d' % (not clock), '"cacert",0,"%s"' % name):
        await chan.command("AT+CSSLCFG=" + option, 5000)
