"""mqtt.Session over TLS on MicroPython against the fake modem: a refused handshake is said on the
console (one line each time) and retried, never raised; no CA on the flash is said, and nothing connects."""

import asyncio

from fakes import FakeA7670
from mptest import eq, run, test, true, until

from mqtt_session import session
from tls_flash import flash, lines


@test
async def a_refused_handshake_is_said_and_retried():
    flash()
    fake = FakeA7670()
    fake.connect_results = [32, 34, 32]  # a certificate not from our CA (34 on some A7670 firmware)
    s, fake, _ = await session(fake)  # connected once the server shows a good certificate
    said = [line for line in lines if "TLS handshake failed" in line]
    eq(len(said), 3, "one line per refusal: %r" % lines)
    true("the server's certificate is not from our CA" in said[0], said[0])
    eq(fake.count("AT+CMQTTCONNECT="), 4)


@test
async def no_ca_on_the_flash_is_said_and_nothing_connects():
    flash(None)
    fake = FakeA7670()
    asyncio.create_task(session(fake))  # never connected: dropped when the test ends
    await until(lambda: [line for line in lines if "no ca.pem on the flash" in line], 5000, "the line")
    await asyncio.sleep_ms(200)
    eq(fake.count("AT+CMQTTCONNECT="), 0)
    eq(fake.count("AT+CMQTTACCQ="), 0)


run()
