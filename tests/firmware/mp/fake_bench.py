"""A stand-in bench for one pendant: FakeA7670 on the modem port and a scripted board on the io port.

Run by tests/firmware/test_on_micropython.py (no heap limit) as
    micropython fake_bench.py <modem_port> <io_port> <presses> <ack 0|1> <expect> [chaos 0|1|2]
It prints `bench: listening`, waits for the pendant to subscribe, holds the button for 2.3 s `presses`
times (with acks, each press after the last ack made the pendant vibrate), answers each alarm publish
with an `alarm/ack` (ack=1) or not (ack=0), and ends once `expect` distinct alarms were acked (or, with
ack=0, published), or after 60 s. With chaos=1 the MQTT connection drops (+CMQTTCONNLOST) right after
each alarm and a retained config arrives after every subscribe, as a broker sends it; chaos=2 also sends
a new config and a cmd with every alarm.
"""

import asyncio
import json
import sys

from fakes import FakeA7670


class Bench:
    def __init__(self, ack, chaos):
        self.chaos = chaos
        self.fake = FakeA7670()
        self.fake.gnss = (
            "+CGNSSINFO: 3,10,04,00,52.373101,N,4.892203,E,291125,075950.0,2.0,0.0,0.0,1.4,0.9,1.0"
        )
        self.fake.on_publish = self.on_publish
        self.fake.on_subscribe = self.on_subscribe
        self.ack = ack
        self.alarms = []
        self.io = None
        self.received = 0  # "VIB received" lines: acks that reached the pendant

    def on_subscribe(self, topic):
        if self.chaos and topic.endswith(b"/config"):  # the broker sends the retained config
            self.fake.deliver(
                topic,
                b'{"rev":1,"heartbeat_s":180,"press_ms":2000,"ack_timeout_s":5,"sms":["+31612345678"],"call":["112","+31201234567"]}',
            )

    def on_publish(self, topic, payload):
        print("bench: published on %s" % topic.decode())
        if topic.endswith(b"/alarm"):
            alarm_id = json.loads(payload)["alarm_id"]
            if alarm_id not in self.alarms:
                self.alarms.append(alarm_id)
            if self.ack:
                self.fake.deliver(
                    topic + b"/ack", b'{"alarm_id":"%s","state":"received"}' % alarm_id.encode()
                )
            root = topic[: -len(b"alarm")]
            if self.chaos > 1:  # a new config and a command with every alarm (a stress test)
                self.fake.deliver(
                    root + b"config", b'{"rev":%d,"heartbeat_s":60,"press_ms":1500}' % len(self.alarms)
                )
                self.fake.deliver(root + b"cmd", b'{"id":"c-%d","cmd":"locate"}' % len(self.alarms))
            if self.chaos:  # and the connection drops
                self.fake.send("\r\n+CMQTTCONNLOST: 0,1\r\n")

    async def modem_client(self, reader, writer):
        print("bench: modem connected")
        fake = self.fake
        fake._rx = bytearray()

        async def pump():
            buf = bytearray(256)
            while True:
                n = fake.readinto(buf)
                if n is None:
                    await asyncio.sleep_ms(5)
                    continue
                writer.write(bytes(buf[:n]))
                await writer.drain()

        pumping = asyncio.create_task(pump())
        while True:
            data = await reader.read(256)
            if not data:
                pumping.cancel()
                print("bench: modem disconnected")
                return
            fake.write(data)

    async def io_client(self, reader, writer):
        print("bench: io connected")
        writer.write(b"BTN 0\nPWR 0\nVBAT 3987\nCHG 0\n")
        await writer.drain()
        self.io = writer
        while True:
            line = await reader.readline()
            if not line:
                return
            line = line.decode().strip()
            print("bench: io got %s" % line)
            if line == "VIB received":
                self.received += 1

    async def script(self, presses, expect):
        while not self.fake.subscribed or self.io is None:
            await asyncio.sleep_ms(50)
        for press in range(presses):
            # With acks, the next press waits until the last ack reached the pendant (its vibration):
            # a press 300 ms after the last one would otherwise fall inside the reconnect that chaos
            # forces, and a pendant that is slow to poll (a loaded machine) sees one long press.
            while self.ack and self.received < press:
                await asyncio.sleep_ms(50)
            await asyncio.sleep_ms(300)
            self.io.write(b"BTN 1\n")
            await self.io.drain()
            await asyncio.sleep_ms(2300)
            self.io.write(b"BTN 0\n")
            await self.io.drain()
        while len(self.alarms) < expect:
            await asyncio.sleep_ms(50)
        await asyncio.sleep_ms(1000 + int(__import__("os").getenv("LINGER_MS") or 0))
        print("bench: all %d alarms %s" % (expect, "acked" if self.ack else "published"))


async def main(modem_port, io_port, presses, ack, expect, chaos=0):
    bench = Bench(ack, chaos)
    await asyncio.start_server(bench.modem_client, "127.0.0.1", modem_port)
    await asyncio.start_server(bench.io_client, "127.0.0.1", io_port)
    print("bench: listening")
    try:
        await asyncio.wait_for(bench.script(presses, expect), 60)
    except asyncio.TimeoutError:  # MicroPython has no built-in TimeoutError
        print("bench: gave up waiting")


asyncio.run(main(*[int(arg) for arg in sys.argv[1:7]]))
