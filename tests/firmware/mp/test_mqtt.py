"""mqtt.Session on MicroPython against the fake modem: connect, will and birth, subscriptions, received
messages in chunks, reconnect after +CMQTTCONNLOST, a fresh start after +CMQTTNONET, outages."""

import asyncio
import json

from fakes import FakeA7670
from mptest import eq, run, test, true, until
from pendant import mqtt
from pendant.atchan import ATChannel
from pendant.modem import Modem
from pendant.state import State

mqtt.config["backoff_ms"] = 20
DEVICE = json.loads(
    '{"device_id":"pd-0001","mqtt":{"host":"127.0.0.1","port":18830,"user":"pd-0001","password":"pw",'
    '"tls":false,"keepalive":60},"apn":"internet"}'
)
ROOT = b"pendant/v1/pd-0001/"


async def session():
    fake = FakeA7670()

    async def opener():
        return fake

    chan = ATChannel(opener)
    asyncio.create_task(chan.run())
    state = State()
    state.begin_boot()
    s = mqtt.Session(Modem(chan), DEVICE, state)
    s.received = []
    s.connects = 0

    async def on_message(sub, payload):
        s.received.append((sub, payload))

    def on_connect():
        s.connects += 1

    s.on_message = on_message
    s.on_connect = on_connect
    asyncio.create_task(s.run())
    await until(lambda: s.gen, 10000, "connected")
    return s, fake, state


@test
async def connect_sets_will_subscribes_and_sends_the_birth():
    s, fake, state = await session()
    eq(fake.will, [ROOT + b"status", b'{"online":false,"boot":%d,"sess":%d}' % (state.boot, state.sess)])
    eq(fake.connects, ['AT+CMQTTCONNECT=0,"tcp://127.0.0.1:18830",60,0,"pd-0001","pw"'])
    eq(fake.subscribed, [ROOT + b"alarm/ack", ROOT + b"config", ROOT + b"cmd"])
    eq(
        fake.published,
        [(ROOT + b"status", b'{"online":true,"boot":%d,"sess":%d,"fw":"0.1.0"}' % (state.boot, state.sess))],
    )
    eq((s.gen, s.connects), (1, 1))


@test
async def received_messages_in_chunks_reach_on_message():
    s, fake, _ = await session()
    fake.deliver(
        ROOT + b"alarm/ack", b'{"alarm_id":"1-1","state":"received"}', topic_chunks=3, payload_chunks=4
    )
    fake.deliver(b"pendant/v1/pd-0002/cmd", b'{"id":"x","cmd":"reboot"}')  # not ours: dropped
    await asyncio.sleep_ms(50)
    await s.dispatch()
    eq(s.received, [("alarm/ack", b'{"alarm_id":"1-1","state":"received"}')])


@test
async def connection_lost_means_reconnect_with_a_new_session():
    s, fake, state = await session()
    first = state.sess
    fake.send("\r\n+CMQTTCONNLOST: 0,1\r\n")
    await until(lambda: not s.up, 2000, "noticed the loss")
    true(not await s.publish("tele", b"{}"), "publish while down says False")
    await until(lambda: s.up, 5000, "reconnected")
    eq((s.gen, s.connects), (2, 2))
    true(state.sess > first, "a new session number")  # counted before every connect attempt
    eq(fake.will[1], b'{"online":false,"boot":%d,"sess":%d}' % (state.boot, state.sess))
    eq(fake.count("AT+CMQTTSTART"), 1)  # the service kept running: only a new CONNECT


@test
async def no_network_means_starting_the_service_again():
    s, fake, _ = await session()
    fake.send("\r\n+CMQTTNONET\r\n")
    await until(lambda: not s.up, 2000, "noticed the loss")
    await until(lambda: s.up, 5000, "reconnected")
    eq(fake.count("AT+CMQTTSTART"), 2)


@test
async def refused_connects_are_retried_and_never_raise():
    fake = FakeA7670()
    fake.connect_results = [30, 3, 26]  # bad password, socket connect failed, closed by server
    s, fake2, _ = await session_with(fake)
    eq(fake.count("AT+CMQTTCONNECT="), 4)
    true(s.up, "up in the end")


async def session_with(fake):
    async def opener():
        return fake

    chan = ATChannel(opener)
    asyncio.create_task(chan.run())
    state = State()
    s = mqtt.Session(Modem(chan), DEVICE, state)
    asyncio.create_task(s.run())
    await until(lambda: s.gen, 10000, "connected")
    return s, fake, state


@test
async def a_failed_publish_twice_means_reconnect():
    s, fake, _ = await session()
    fake.pub_results = [17, 17]  # timeout
    true(not await s.publish("tele", b"{}"), "first failure")
    true(s.up, "one failure is not a loss")
    true(not await s.publish("tele", b"{}"), "second failure")
    true(not s.up, "two are")
    await until(lambda: s.up, 5000, "reconnected")
    true(await s.publish("tele", b"{}"), "publishes again")


@test
async def a_message_too_long_to_keep_is_dropped_and_the_next_one_arrives():
    s, fake, _ = await session()
    fake.send(
        b"\r\n+CMQTTRXSTART: 0,22,4200\r\n+CMQTTRXTOPIC: 0,22\r\n"
        + ROOT
        + b"cmd\r\n+CMQTTRXPAYLOAD: 0,4200\r\n"
    )
    for _ in range(14):  # 4200 bytes, more than a message may be, in pieces as a UART delivers them
        fake.send(b"x" * 300)
        await asyncio.sleep_ms(20)
    fake.send(b"\r\n+CMQTTRXEND: 0\r\n")
    fake.deliver(ROOT + b"config", b'{"rev":1}')
    await asyncio.sleep_ms(200)
    await s.dispatch()
    eq(s.received, [("config", b'{"rev":1}')])


run()
