"""Connecting MQTT over a modem whose MQTT service runs (start.py starts it, with TLS when config.json
says so): the will set, CONNECT (clean_session 0), the subscriptions and the birth published;
network.py brings the modem up before, when needed.
"""

import json

from micropython import const

from . import FW, log, protocol
from .atchan import ATError
from .modem import START

_CONNECT_MS = const(30000)


async def connect(session):
    """Connect the session: the will, CONNECT, the subscriptions and the birth. Return the session
    number; ATError / ATTimeout on the way (the session retries)."""
    modem = session.modem
    device_id = session.device_id
    with open("config.json") as f:  # checked at boot
        mqtt = json.load(f)["mqtt"]
    state = session.state
    state.sess += 1  # a new session number, on flash before it is used
    state.save()
    sess = state.sess
    topic = (session.root + "status").encode()
    will = status(False, state.boot, sess)
    user = mqtt.get("user", device_id)
    await modem.mqtt((("DISC=0,10", None, 12000),), True)
    items = [
        ("WILLTOPIC=0,%d" % len(topic), topic, 0),
        ("WILLMSG=0,%d,1" % len(will), will, 0),
        ('CONNECT=0,"tcp://%s:%d",%d,0' % (mqtt["host"], mqtt["port"], mqtt.get("keepalive", 60))
         + (',"%s","%s"' % (user, mqtt.get("password", "")) if user else ""), None, _CONNECT_MS),
    ]
    for sub in ("alarm/ack", "config", "cmd"):
        sub = (session.root + sub).encode()
        items.append(("SUBTOPIC=0,%d,1" % len(sub), sub, 0))
        items.append(("SUB=0", None, 15000))
    err = await modem.mqtt(items)
    if err:
        if err == 11 or err == 20:  # no connection / client not acquired: start the service again
            session.need = START
        elif mqtt.get("tls") and 31 < err < 35:  # 32 handshake failed, 33 no certificate, 34 no session
            if err == 33:
                session.need = START  # the modem lost its CA: set TLS up again
                why = "the modem has no CA"
            else:
                why = "the server's certificate is not from our CA, or is out of date"
            log("mqtt", "%s (TLS handshake failed, %d)" % (why, err))
        raise ATError("connect or subscribe: %d" % err)
    session.up = None  # connected, but nothing else is published before the birth; a loss sets False
    if await modem.mqtt_publish(topic, status(True, state.boot, sess, FW)):
        raise ATError("status")
    return sess


def status(online, boot, sess, fw=None):
    """`status`: the birth (online True, with fw) or the will (online False)."""
    if online:
        return protocol.encode('{"online":true,"boot":%s,"sess":%s,"fw":%s}', (boot, sess, fw))
    return protocol.encode('{"online":false,"boot":%s,"sess":%s}', (boot, sess))
