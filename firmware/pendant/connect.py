"""Connecting MQTT over a modem that is up: the MQTT service started (when session.need says so), the
will set, CONNECT (clean_session 0), the subscriptions and the birth published. Loaded only while the
session connects (pendant.use / pendant.drop); network.py brings the modem up before, when needed.
"""

import json

from micropython import const

from . import FW, protocol
from .atchan import ATError

_START_MS = const(12000)  # +CMQTTSTART: 0 can take up to 12 s
_CONNECT_MS = const(30000)


async def connect(session):
    """Connect the session: the MQTT service started first when session.need is 1; then the will,
    CONNECT, the subscriptions and the birth. Return the session number; ATError / ATTimeout on the way
    (the session retries)."""
    modem = session.modem
    device_id = session.device_id
    with open("config.json") as f:  # checked at boot; read only now, to keep no copy in the heap
        mqtt = json.load(f)["mqtt"]
    if session.need:
        # Start from scratch, stopping whatever ran, and acquire client 0.
        for step in "DISC=0,10", "REL=0", "STOP":
            await modem.mqtt([(step, None, 0 if step == "REL=0" else 12000)], True)
        try:
            err = await modem.mqtt((("START", None, _START_MS),))
        except ATError:
            err = 0  # a bare ERROR: the service runs already
        if err and err != 23:  # 23: opened already
            raise ATError("mqtt start: %d" % err)
        await modem.mqtt((('ACCQ=0,"%s"%s' % (device_id, ",1" if mqtt.get("tls") else ""), None, 0),))
        session.need = 0
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
            session.need = 1
        raise ATError("connect or subscribe: %d" % err)
    session.up = None  # connected, but nothing else is published before the birth; a loss sets False
    if await modem.mqtt_publish(topic, status(True, state.boot, sess, FW)):
        raise ATError("status")
    return sess


def status(*v):
    """`status`: (True, boot, sess, fw) is the birth, (False, boot, sess) the will."""
    return protocol.encode('{"online":%s,"boot":%s,"sess":%s' + (',"fw":%s}' if v[0] else "}"), v)


