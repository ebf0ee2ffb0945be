"""modem on MicroPython against the fake modem: the state of calls from their URCs (as the A76XX manual and
real modems print them), the clock, and the CMQTT family with its quirks."""

import asyncio

from fakes import FakeA7670
from mptest import araises, eq, run, test, true, until
from pendant import gnss
from pendant.atchan import ATChannel, ATError
from pendant.modem import ACTIVE, DIALLING, ENDED, FAILED, IDLE, Modem, unix_time


async def modem_on(fake):
    async def opener():
        return fake

    chan = ATChannel(opener)
    asyncio.create_task(chan.run())
    return Modem(chan)


@test
def unix_time_of_known_dates():
    eq(unix_time([1970, 1, 1, 0, 0, 0]), 0)
    eq(unix_time([2000, 1, 1, 0, 0, 0]), 946684800)  # the ESP32 epoch
    eq(unix_time([2025, 11, 29, 8, 0, 0]), 1764403200)
    eq(unix_time([2024, 2, 29, 12, 0, 0]), 1709208000)  # a leap day


@test
async def clock_counts_from_what_it_was_set_to():
    fake = FakeA7670()
    modem = await modem_on(fake)
    eq(modem.now(), None)  # no network or GNSS time yet
    modem.set_time(1764403200)
    await asyncio.sleep_ms(1100)
    true(modem.now() in (1764403201, 1764403202), "one second later")


@test
async def an_outgoing_call_answered_then_ended():
    fake = FakeA7670()
    modem = await modem_on(fake)
    call = modem.call
    call.state = DIALLING
    fake.send("\r\nVOICE CALL: BEGIN\r\n")
    await until(lambda: call.state == ACTIVE)
    fake.send("\r\nVOICE CALL: END: 000212\r\n\r\nNO CARRIER\r\n")  # 2 min 12 s; NO CARRIER after it
    await until(lambda: call.state == ENDED)
    eq(call.seconds, 132)
    eq(await modem.chan.command("AT"), [])  # nothing left over for the next command


@test
async def an_outgoing_call_busy_or_not_answered():
    fake = FakeA7670()
    modem = await modem_on(fake)
    call = modem.call
    for line in ("BUSY", "NO ANSWER", "NO CARRIER"):
        call.state = DIALLING
        fake.send("\r\n%s\r\n" % line)
        await until(lambda: call.state == FAILED, 1000, line)


@test
async def an_incoming_call_rings_with_its_number_until_it_is_missed():
    fake = FakeA7670()
    modem = await modem_on(fake)
    eq(modem.ringing(), None)
    fake.ring("+31201234567")
    await until(lambda: modem.ringing() == "+31201234567")
    fake.send("\r\nMISSED_CALL: 11:53AM +31201234567\r\n")
    await until(lambda: modem.ringing() is None)
    fake.send("\r\nRING\r\n")  # a withheld number: no +CLIP number
    modem.call.number = None
    await until(lambda: modem.ringing() == "")
    eq(modem.call.state, IDLE)


@test
async def gnss_ready_is_noted():
    fake = FakeA7670()
    modem = await modem_on(fake)
    eq(modem.gnss, None)
    fake.send("\r\n+CGNSSPWR: READY!\r\n")
    await until(lambda: modem.gnss is True)


class Located:  # what gnss.tick reads of the app: an idle pendant (no alarm open, no locate waiting)
    def __init__(self, modem):
        self.modem = modem
        self.uptime = 100
        self.gnss_at = gnss.Schedule()
        self.gnss_at.refresh = 200  # the next refresh at 200 s; the current one over
        self.state = self
        self.open = self.locating = None
        self.settings = {"fix_s": 600, "loc_s": 60}


@test
async def a_modem_refusing_cgnsspwr_is_a_sim7600_cgps_and_cgpsinfo():
    fake = FakeA7670()
    fake.replies["AT+CGNSSPWR"] = "\r\nERROR\r\n"  # no such command on a SIM7600
    fake.replies["AT+CGPS="] = "\r\nOK\r\n"
    fake.replies["AT+CGPSINFO"] = (
        "\r\n+CGPSINFO: 5222.386060,N,00453.532180,E,291125,080000.0,5.2,0.0,0.0\r\n\r\nOK\r\n"
    )
    modem = await modem_on(fake)
    eq(await gnss.query(modem), None)  # powering it: no fix asked for yet
    eq((fake.count("AT+CGNSSPWR=1"), fake.count("AT+CGPS=1"), modem.gps), (1, 1, True))
    eq(await gnss.query(modem), (52373101, 4892203, 50, 1764403200))
    eq(modem.fix, (52373101, 4892203, 50, 1764403200))
    eq((fake.count("AT+CGPSINFO"), fake.count("AT+CGNSSINFO")), (1, 0))
    await gnss.tick(Located(modem))  # nothing needs it any more: off the SIM7600 way
    eq((fake.count("AT+CGPS=0"), fake.count("AT+CGNSSPWR=0"), modem.gnss), (1, 0, None))


@test
async def publish_retries_while_the_client_is_busy():
    fake = FakeA7670()
    fake.pub_results = [14, 14]
    modem = await modem_on(fake)
    eq(await modem.mqtt_publish(b"r/alarm", b'{"a":1}'), 0)
    eq(fake.count("AT+CMQTTPUB=0,1,"), 3)
    eq(fake.published, [(b"r/alarm", b'{"a":1}')])


@test
async def publish_error_result_before_error_is_its_code():
    fake = FakeA7670()
    fake.replies["AT+CMQTTPUB="] = "\r\n+CMQTTPUB: 0,11\r\n\r\nERROR\r\n"
    modem = await modem_on(fake)
    eq(await modem.mqtt_publish(b"t", b"p"), 11)


@test
async def publish_without_connection_raises():
    fake = FakeA7670()
    fake.replies["AT+CMQTTTOPIC="] = "\r\n+CME ERROR: 11\r\n"
    modem = await modem_on(fake)
    await araises(ATError, modem.mqtt_publish(b"t", b"p"))


@test
async def query_returns_the_response_line():
    fake = FakeA7670()
    modem = await modem_on(fake)
    eq(await modem.query("AT+CSQ"), "+CSQ: 21,99")
    eq(await modem.query("AT+CGSN"), "864321050123456")  # no prefix: the first line


run()
