"""The bench for the firmware's scenario tests: FakeA7670 on the modem port, a scripted board on the io port.

Run by tests/firmware/test_scenarios.py (no heap limit; the pendant runs in its own process within its
budget) as
    micropython scenario_bench.py <modem_port> <io_port> <scenario>
It prints `bench: listening`, runs the scenario (a coroutine below, named `s_<scenario>`) and prints
`bench: done` when every step of it held, or `bench: FAIL <step>` at the first that did not (a step waits
for a condition with a generous timeout, never for a fixed time). Every message the pendant publishes is
printed as `bench: pub <subtopic> <payload>`, every io line as `bench: io <line>`; the pytest side checks
the pendant's own log as well.
"""

import asyncio
import json
import sys
import time

from fakes import FakeA7670

CONFIG = (
    b'{"rev":%d,"ack_timeout_s":5,"sms":["+31612345678"],"call":["+31699999999","112"],'
    b'"callback":["+31201234567"]%s}'
)


class Failed(Exception):
    pass


class Bench:
    def __init__(self):
        self.fake = fake = FakeA7670()
        fake.on_publish = self.on_publish
        fake.on_subscribe = self.on_subscribe
        self.pubs = []  # (subtopic, payload dict) in order
        self.io_lines = []
        self.io = None
        self.root = b"pendant/v1/pd-0001/"
        self.retained = CONFIG % (1, b"")  # the config the broker keeps
        self.auto_ack = True
        self.modem_clients = 0
        self.wdt = None  # [ms, ticks of the last FEED] while the pendant's watchdog is armed
        self.resets = 0  # watchdog resets (firmware_runner restarts the pendant at each)

    def on_subscribe(self, topic):
        if topic.endswith(b"/config") and self.retained:
            self.fake.deliver(topic, self.retained)

    def on_publish(self, topic, payload):
        sub = topic[len(self.root) :].decode()
        print("bench: pub %s %s" % (sub, payload.decode()))
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        self.pubs.append((sub, message))
        if sub == "alarm" and self.auto_ack:
            self.ack(message["alarm_id"], "received")

    def ack(self, alarm_id, state):
        self.deliver("alarm/ack", '{"alarm_id":"%s","state":"%s"}' % (alarm_id, state))

    def deliver(self, sub, payload):
        self.fake.deliver(self.root + sub.encode(), payload.encode() if type(payload) is str else payload)

    def send_io(self, line):
        self.io.write(line.encode() + b"\n")

    async def wait(self, what, condition, timeout_s=30):
        for _ in range(timeout_s * 20):
            found = condition()
            if found:
                print("bench: ok %s" % what)
                return found
            await asyncio.sleep_ms(50)
        raise Failed(what)

    async def pub(self, sub, what, test=None, after=0, timeout_s=30):
        """The first message published on sub (from index `after` on) for which test(message) holds."""

        def found():
            for i in range(after, len(self.pubs)):
                name, message = self.pubs[i]
                if name == sub and (test is None or test(message)):
                    return message
            return None

        return await self.wait(what, found, timeout_s)

    async def io_line(self, prefix, what, after=0, timeout_s=30):
        return await self.wait(
            what, lambda: [x for x in self.io_lines[after:] if x.startswith(prefix)], timeout_s
        )

    async def online(self):
        await self.wait("pendant online", lambda: self.io and len(self.fake.subscribed) >= 3, 60)
        await self.pub("evt", "config applied", lambda m: m["evt"] == "config_applied")

    async def press(self, ms=2300, button="BTN"):
        self.send_io("%s 1" % button)
        await asyncio.sleep_ms(ms)
        self.send_io("%s 0" % button)

    async def modem_client(self, reader, writer):
        fake = self.fake
        fake._rx = bytearray()
        self.modem_clients += 1
        print("bench: modem connected")

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
                return
            fake.write(data)

    async def io_client(self, reader, writer):
        writer.write(b"BTN 0\nPWR 0\nVBAT 3987\nCHG 0\n")
        await writer.drain()
        self.io = writer
        while True:
            line = await reader.readline()
            if not line:
                return
            line = line.decode().strip()
            if not line.startswith("FEED") and not line.startswith("DTR"):
                print("bench: io %s" % line)
            self.io_lines.append(line)
            if line.startswith("WDT "):
                self.wdt = [int(line[4:]), time.ticks_ms()]
            elif line == "FEED" and self.wdt:
                self.wdt[1] = time.ticks_ms()
            elif line == "OFF":  # no power, no watchdog
                self.wdt = None
            if line.startswith("PWRKEY") and self.fake.silent:  # the power cycle revives a hung modem
                self.fake.silent = False
                self.fake.subscribed = []

    async def watchdog(self):
        # The board's watchdog, as the WDT line armed it: no FEED within its ms resets the pendant. The
        # line below is the reset: firmware_runner kills the pendant's process and starts it again.
        while True:
            await asyncio.sleep_ms(100)
            wdt = self.wdt
            if wdt and time.ticks_diff(time.ticks_ms(), wdt[1]) > wdt[0]:
                self.wdt = None
                self.resets += 1
                print("bench: watchdog reset")


# ---------------------------------------------------------------- scenarios


async def s_press_ack_feedback(b):
    """Press -> alarm with the fix -> received -> acknowledged -> resolved, felt each time; short presses
    and bounces raise nothing; a location update follows while the alarm is open."""
    b.fake.gnss = (
        "+CGNSSINFO: 2,09,05,00,5222.386060,N,00453.532180,E,291125,080000.0,5.2,0.0,0.0,1.9,1.6,1.0"
    )
    await b.online()
    await b.wait("a fix read", lambda: b.fake.count("AT+CGNSSINFO"), 30)
    await b.press(300)  # short: nothing
    for _ in range(3):  # bounces
        await b.press(20)
    await asyncio.sleep_ms(100)
    await b.press()
    alarm = await b.pub("alarm", "alarm published", lambda m: m["kind"] == "panic")
    if abs(alarm["loc"]["lat"] - 52.373101) > 0.00001 or alarm["cell"] is not None:
        raise Failed("alarm carries the fix and no cell: %r" % alarm)
    if len([p for p in b.pubs if p[0] == "alarm"]) != 1:
        raise Failed("short presses and bounces raised an alarm")
    await b.io_line("VIB sent", "VIB sent")
    await b.io_line("VIB received", "VIB received")
    b.ack(alarm["alarm_id"], "acknowledged")
    await b.io_line("VIB acknowledged", "VIB acknowledged")
    await b.pub(
        "evt", "location update", lambda m: m["evt"] == "location" and m["alarm_id"] == alarm["alarm_id"]
    )
    b.ack(alarm["alarm_id"], "resolved")
    await b.wait(
        "no light, no sound",
        lambda: not [x for x in b.io_lines if x.startswith("LED") or x.startswith("BUZ")],
    )


async def s_no_ack_sms_then_call(b):
    """No alarm/ack within ack_timeout_s: SMS with the location to the numbers, then calls in order until
    one answers; when the ack comes, the fallback is reported as an event."""
    b.auto_ack = False
    b.fake.outcomes = {"+31699999999": "busy", "112": "answer"}
    b.fake.gnss = "+CGNSSINFO: 2,09,05,00,52.373101,N,4.892203,E,291125,080000.0,5.2,0.0,0.0,1.9,1.6,1.0"
    await b.online()
    await b.wait("a fix read", lambda: b.fake.count("AT+CGNSSINFO"), 30)
    await b.press()
    alarm = await b.pub("alarm", "alarm published")
    await b.wait("SMS sent", lambda: b.fake.texts, 30)
    number, text = b.fake.texts[0]
    if (
        number != "+31612345678"
        or "52.373101,4.892203" not in text
        or "maps" not in text
        or "batt" not in text
    ):
        raise Failed("SMS text: %r" % text)
    await b.wait(
        "first number called, then the second", lambda: b.fake.dialled == ["+31699999999", "112"], 60
    )
    b.fake.send("\r\nVOICE CALL: END: 000012\r\n")  # the operator hangs up after 12 s
    await asyncio.sleep_ms(500)
    b.ack(alarm["alarm_id"], "received")
    report = await b.pub("evt", "fallback reported", lambda m: m["evt"] == "fallback")
    if report["sms"] != ["+31612345678"] or report["answered"] != "112" or report["call_s"] != 12:
        raise Failed("fallback event: %r" % report)


async def s_fallback_fails(b):
    """Nobody reached (the SMS refused, both numbers busy) in the last round: the wearer feels `failed`,
    and the report says so."""
    b.retained = CONFIG % (1, b',"rounds":1')
    b.auto_ack = False
    b.fake.sms_fail = 1
    b.fake.outcomes = {"+31699999999": "busy", "112": "busy"}
    await b.online()
    await b.press()
    await b.pub("alarm", "alarm published")
    await b.io_line("VIB failed", "VIB failed", timeout_s=60)
    report = await b.pub("evt", "fallback reported", lambda m: m["evt"] == "fallback")
    nobody = not report["sms"] and not report["answered"]
    if not nobody or report["sms_failed"] != ["+31612345678"] or report["calls"] != 2:
        raise Failed("fallback event: %r" % report)


async def s_no_data_at_press(b):
    """No data path at the press: the SMS and the call at once; the data path is kept trying, and the
    alarm and the fallback report go out once it is back."""
    b.fake.outcomes = {"+31699999999": "answer"}
    await b.online()
    b.fake.connect_results = [3] * 1000  # the broker cannot be reached from now on
    b.fake.send("\r\n+CMQTTCONNLOST: 0,3\r\n")
    await b.wait("reconnects failing", lambda: len(b.fake.connects) >= 3, 60)
    await b.press()
    await b.wait("SMS at once", lambda: b.fake.texts, 20)
    await b.wait("call at once", lambda: b.fake.dialled, 30)
    b.fake.send("\r\nVOICE CALL: END: 000005\r\n")
    b.fake.connect_results = []  # the data path is back
    alarm = await b.pub("alarm", "alarm sent once data is back", timeout_s=120)
    report = await b.pub("evt", "fallback reported", lambda m: m["evt"] == "fallback", timeout_s=60)
    if report["alarm_id"] != alarm["alarm_id"] or report["answered"] != "+31699999999":
        raise Failed("fallback event: %r" % report)


async def s_tls_refused(b):
    """Over TLS (the example config), the broker's address starts answering with a certificate that is
    not from the pendant's CA (the modem's handshake fails, 32): the pendant says so, a press goes out by
    SMS and call at once, the alarm waits on flash and goes out once the real server is back."""
    b.fake.outcomes = {"+31699999999": "answer"}
    await b.online()
    if not [name for name in b.fake.data if name.startswith("ca_")]:
        raise Failed("the pendant loaded no CA into the modem")
    b.fake.connect_results = [32] * 1000
    b.fake.send("\r\n+CMQTTCONNLOST: 0,1\r\n")
    await b.wait("handshakes failing", lambda: len(b.fake.connects) >= 3, 60)
    await b.press()
    await b.wait("SMS at once", lambda: b.fake.texts, 20)
    await b.wait("call at once", lambda: b.fake.dialled, 30)
    b.fake.send("\r\nVOICE CALL: END: 000005\r\n")
    b.fake.connect_results = []  # the real server again
    await b.pub("alarm", "alarm sent once the server is ours again", timeout_s=120)


async def s_callback_whitelist(b):
    """An incoming call from a whitelisted number (the police calling back) is answered; others are not."""
    await b.online()
    b.fake.ring("+31611111111")
    await asyncio.sleep_ms(1500)
    if b.fake.count("ATA"):
        raise Failed("answered an unknown number")
    print("bench: ok unknown number not answered")
    b.fake.ring("+31201234567")
    await b.wait("call-back answered", lambda: b.fake.count("ATA"), 15)


async def s_config_and_commands(b):
    """A bad config is rejected naming the field (the old one stays); a good one is applied; every
    command is answered with its id."""
    await b.online()
    n = len(b.pubs)
    b.deliver("config", b'{"rev":2,"heartbeat_s":5}')
    bad = await b.pub("evt", "bad config rejected", lambda m: m["evt"] == "config_rejected", after=n)
    if bad["field"] != "heartbeat_s" or bad["rev"] != 2:
        raise Failed("rejection: %r" % bad)
    b.deliver("config", CONFIG % (3, b',"press_ms":1000'))
    await b.pub(
        "evt", "good config applied", lambda m: m["evt"] == "config_applied" and m["rev"] == 3, after=n
    )
    await b.press(1300)  # long enough with press_ms 1000, too short with the default
    await b.pub("alarm", "press_ms applied")
    for cid, cmd in (
        ("c1", "vibrate"),
        ("c2", "selftest"),
        ("c3", "test_alarm"),
        ("c4", "locate"),
        ("c5", "nope"),
    ):
        b.deliver("cmd", '{"id":"%s","cmd":"%s","pattern":"acknowledged"}' % (cid, cmd))
        res = await b.pub("cmd/res", "answer to " + cmd, lambda m, cid=cid: m["id"] == cid, timeout_s=45)
        if cmd == "nope" and res["ok"] or cmd != "nope" and not res["ok"]:
            raise Failed("answer %r" % res)
        if cmd == "selftest" and not res["report"]["modem"]:
            raise Failed("selftest %r" % res)
        if cmd == "test_alarm":
            await b.pub(
                "alarm",
                "test alarm marked test",
                lambda m, res=res: m["test"] and m["alarm_id"] == res["alarm_id"],
            )
    await b.io_line("VIB acknowledged", "vibrate command")
    b.deliver("cmd", '{"id":"c6","cmd":"reboot"}')
    await b.pub("cmd/res", "reboot answered", lambda m: m["id"] == "c6")


async def s_no_fix_cell(b):
    """Without any GNSS fix the alarm carries the serving cell; a heartbeat reports the status."""
    await b.online()
    await b.press()
    alarm = await b.pub("alarm", "alarm published")
    cell = alarm["cell"]
    if alarm["loc"] is not None or cell != {
        "mcc": 204,
        "mnc": 8,
        "lac": "0x2B5C",
        "cid": "0x19C3330",
        "rat": "LTE",
    }:
        raise Failed("cell: %r" % alarm)
    tele = await b.pub("tele", "heartbeat", timeout_s=10)
    for key in ("batt", "mv", "chg", "rssi", "reg", "rat", "loc", "fw", "cfg", "out", "boot", "up"):
        if key not in tele:
            raise Failed("tele lacks %s: %r" % (key, tele))


async def s_battery(b):
    """Low battery: one alert; critical: a last message with the location, then off."""
    await b.online()
    b.send_io("VBAT 3450")  # 16 %
    low = await b.pub("evt", "low battery", lambda m: m["evt"] == "low_battery", timeout_s=120)
    if low["batt"] > 20:
        raise Failed("low battery %r" % low)
    b.send_io("VBAT 3320")  # 2 %
    off = await b.pub("evt", "last message at critical", lambda m: m["evt"] == "power_off", timeout_s=120)
    if off["reason"] != "battery" or "loc" not in off:
        raise Failed("power_off %r" % off)
    await b.io_line("OFF", "switched off")


async def s_power_off(b):
    """The power button held: a power_off event with the location, then off."""
    await b.online()
    await b.press(3500, "PWR")
    off = await b.pub("evt", "power_off event", lambda m: m["evt"] == "power_off")
    if off["reason"] != "button" or "cell" not in off:
        raise Failed("power_off %r" % off)
    await b.io_line("OFF", "switched off")


async def s_power_off_silent_alarm(b):
    """With off_alarm set, the power button raises a silent alarm instead of switching off."""
    b.retained = CONFIG % (1, b',"off_alarm":true')
    await b.online()
    n = len(b.io_lines)
    await b.press(3500, "PWR")
    alarm = await b.pub("alarm", "silent alarm", lambda m: m["kind"] == "power_off")
    await asyncio.sleep_ms(1000)
    if [x for x in b.io_lines[n:] if x.startswith("VIB") or x == "OFF"]:
        raise Failed("the pendant showed something: %r" % b.io_lines[n:])
    print("bench: ok no vibration, not off")
    if alarm["test"]:
        raise Failed("marked test")


async def s_modem_hang(b):
    """A modem that stops answering is power-cycled (PWRKEY), brought up again, and the alarm raised
    meanwhile goes out; garbage and interleaved URCs never crash the parser."""
    await b.online()
    b.fake.send(b'\r\n\xff\xfe garbage \x00\r\n+CMTI: "SM",3\r\nRING\r\n+UNKNOWN: 1,2\r\n')
    b.fake.silent = True
    await b.press()
    await b.io_line("PWRKEY", "power cycle", timeout_s=90)
    alarm = await b.pub("alarm", "alarm after the power cycle", timeout_s=90)
    if not alarm["alarm_id"]:
        raise Failed("alarm %r" % alarm)


async def s_watchdog_reset(b):
    """The pendant stuck (the sim board's HANG fault: nothing runs any more) feeds the watchdog no more:
    the board resets, the pendant boots again and resends its unacked alarm, same alarm_id."""
    b.auto_ack = False
    await b.online()
    await b.press()
    alarm = await b.pub("alarm", "alarm published")
    await b.wait("watchdog armed and fed", lambda: b.wdt and b.io_lines.count("FEED") >= 3)
    clients = b.modem_clients
    b.send_io("HANG")
    await b.wait("watchdog reset", lambda: b.resets, 60)
    n, lines = len(b.pubs), len(b.io_lines)  # the stuck pendant sends nothing, the killed one neither
    again = await b.pub("alarm", "alarm resent after the boot", after=n, timeout_s=90)
    if again["alarm_id"] != alarm["alarm_id"] or b.modem_clients <= clients:
        raise Failed("resent %r after %d modem connections" % (again, b.modem_clients))
    await b.wait("watchdog armed again", lambda: b.wdt)
    b.ack(alarm["alarm_id"], "received")
    await b.io_line("VIB received", "ack felt after the boot", after=lines)


async def s_gesture(b):
    """The multi-press gesture (config presses: 3) raises an alarm too."""
    b.retained = CONFIG % (1, b',"presses":3')
    await b.online()
    for _ in range(3):
        await b.press(200)
        await asyncio.sleep_ms(200)
    await b.pub("alarm", "gesture alarm")


async def s_button_timing(b, bare=False):
    """For benchmarks/firmware_button.py: press BENCH_PRESSES times (default 20); print, per press, the ms
    from the moment the hold reached press_ms (2000) to the AT+CMQTTPUB of its alarm."""
    presses = int(__import__("os").getenv("BENCH_PRESSES") or 20)
    if bare:  # the baseline pendant (see the benchmark) neither subscribes nor reads acks
        b.auto_ack = False
        await b.wait("bare pendant connected", lambda: b.io and b.modem_clients, 60)
    else:
        await b.online()
    published = []  # ticks of the first AT+CMQTTPUB of each alarm (resends and other topics left out)
    ids = []
    acking = b.fake.on_publish

    def on_publish(topic, payload):
        if topic.endswith(b"/alarm"):
            alarm_id = json.loads(payload)["alarm_id"]
            if alarm_id not in ids:
                ids.append(alarm_id)
                published.append(time.ticks_ms())
        acking(topic, payload)

    b.fake.on_publish = on_publish
    for i in range(presses):
        down = time.ticks_ms()
        b.send_io("BTN 1")
        await b.wait("alarm %d" % (i + 1), lambda i=i: len(published) > i, 30)
        print("bench: button_ms %d" % (time.ticks_diff(published[i], down) - 2000))
        await asyncio.sleep_ms(2300 - time.ticks_diff(time.ticks_ms(), down))
        b.send_io("BTN 0")
        await asyncio.sleep_ms(700)


async def s_button_timing_bare(b):
    await s_button_timing(b, True)


async def main(modem_port, io_port, name):
    bench = Bench()
    await asyncio.start_server(bench.modem_client, "127.0.0.1", modem_port)
    await asyncio.start_server(bench.io_client, "127.0.0.1", io_port)
    asyncio.create_task(bench.watchdog())
    print("bench: listening")
    try:
        await asyncio.wait_for(globals()["s_" + name](bench), 600)
        await asyncio.sleep_ms(1500)  # the pendant prints its last lines (not a check: nothing waits on it)
        print("bench: done")
    except Failed as e:
        print("bench: FAIL %s" % e)
    except asyncio.TimeoutError:  # MicroPython has no built-in TimeoutError
        print("bench: FAIL timed out")


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
