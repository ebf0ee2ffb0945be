"""A mqtt.Session over the fake modem for the test_mqtt*.py scripts, kept up as the app's worker does."""

import asyncio

from fakes import FakeA7670
from mptest import until, wipe
from pendant import mqtt
from pendant.atchan import ATChannel
from pendant.modem import Modem
from pendant.store import State

mqtt.config["backoff_ms"] = 20
with open("config.json", "w") as f:  # connect.py and network.py read it from the flash when they need it
    f.write(
        '{"device_id":"pd-0001","mqtt":{"host":"127.0.0.1","port":18830,"user":"pd-0001","password":"pw",'
        '"tls":false,"keepalive":60},"apn":"internet"}'
    )
ROOT = b"pendant/v1/pd-0001/"


async def keeper(s):
    # what the app's worker does for the session
    while True:
        await s.keep()
        await s.dispatch()
        await asyncio.sleep_ms(20)


async def session(fake=None):
    fake = fake or FakeA7670()

    async def opener():
        return fake

    chan = ATChannel(opener)
    asyncio.create_task(chan.run())
    wipe()
    state = State((5, 0, 0, None))
    s = mqtt.Session(Modem(chan), "pd-0001", state)
    s.received = []
    s.connects = 0

    async def on_message(sub, payload):
        s.received.append((sub, payload))

    def on_connect():
        s.connects += 1

    s.on_message = on_message
    s.on_connect = on_connect
    asyncio.create_task(keeper(s))
    await until(lambda: s.gen, 10000, "connected")
    return s, fake, state
