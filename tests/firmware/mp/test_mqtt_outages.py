"""mqtt.Session on MicroPython against the fake modem: refused connects, failed publishes and a message
too long to keep; never an exception into the app."""

import asyncio

from fakes import FakeA7670
from mptest import eq, run, test, true, until

from mqtt_session import ROOT, session


@test
async def refused_connects_are_retried_and_never_raise():
    fake = FakeA7670()
    fake.connect_results = [30, 3, 26]  # bad password, socket connect failed, closed by server
    s, _, _ = await session(fake)
    eq(fake.count("AT+CMQTTCONNECT="), 4)
    true(s.up, "up in the end")


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
    await until(lambda: s.received, 2000, "received")
    eq(s.received, [("config", b'{"rev":1}')])


run()
