"""mqtt.Session on MicroPython against the fake modem: connect, will and birth, subscriptions, received
messages in chunks, reconnect after +CMQTTCONNLOST, a fresh start after +CMQTTNONET."""

import asyncio

from mptest import eq, run, test, true, until
from pendant import FW

from mqtt_session import ROOT, session


@test
async def connect_sets_will_subscribes_and_sends_the_birth():
    s, fake, state = await session()
    eq(fake.will, [ROOT + b"status", b'{"online":false,"boot":%d,"sess":%d}' % (state.boot, state.sess)])
    eq(fake.connects, ['AT+CMQTTCONNECT=0,"tcp://127.0.0.1:18830",60,0,"pd-0001","pw"'])
    eq(fake.subscribed, [ROOT + b"alarm/ack", ROOT + b"config", ROOT + b"cmd"])
    eq(
        fake.published,
        [(ROOT + b"status", b'{"online":true,"boot":%d,"sess":%d,"fw":"%s"}' % (state.boot, state.sess, FW))],
    )
    eq((s.gen, s.connects), (1, 1))


@test
async def received_messages_in_chunks_reach_on_message():
    s, fake, _ = await session()
    fake.deliver(
        ROOT + b"alarm/ack", b'{"alarm_id":"1-1","state":"received"}', topic_chunks=3, payload_chunks=4
    )
    fake.deliver(b"pendant/v1/pd-0002/cmd", b'{"id":"x","cmd":"reboot"}')  # not ours: dropped
    await until(lambda: s.received, 2000, "received")
    await asyncio.sleep_ms(100)
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


run()
