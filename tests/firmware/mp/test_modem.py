"""modem on MicroPython: parsers on A7670 lines (both GNSS formats and field counts), and the driver
against the fake modem (bring-up, clock, GNSS power, the CMQTT family and its quirks)."""

import asyncio

from fakes import CPSI_LTE, GNSS_FIX, FakeA7670
from mptest import araises, eq, run, test, true
from pendant.atchan import ATChannel, ATError
from pendant.modem import Clock, Modem, parse_cclk, parse_cpsi, parse_gnss, unix_time

AMSTERDAM = (52373101, 4892203)  # micro-degrees


@test
def unix_time_of_known_dates():
    eq(unix_time([1970, 1, 1, 0, 0, 0]), 0)
    eq(unix_time([2000, 1, 1, 0, 0, 0]), 946684800)  # the ESP32 epoch
    eq(unix_time([2025, 11, 29, 8, 0, 0]), 1764403200)
    eq(unix_time([2024, 2, 29, 12, 0, 0]), 1709208000)  # a leap day


@test
def cclk_is_local_time_with_quarter_hours():
    eq(parse_cclk('+CCLK: "25/11/29,09:00:00+04"'), 1764403200)  # UTC+1
    eq(parse_cclk('+CCLK: "25/11/29,06:00:00-08"'), 1764403200)  # UTC-2
    eq(parse_cclk('+CCLK: "70/01/01,00:00:12+00"'), None)  # power-on default: no network time yet
    eq(parse_cclk("+CCLK: garbage"), None)


@test
def gnss_ddmm_with_three_satellite_fields():
    # the manual's: <mode>,<GPS sats>,<GLONASS sats>,<BEIDOU sats>,<lat ddmm.mmmm>,N,<lon dddmm.mmmm>,E,...
    lat, lon, acc, tst = parse_gnss(GNSS_FIX)
    true(abs(lat - AMSTERDAM[0]) <= 1 and abs(lon - AMSTERDAM[1]) <= 1, "position %d %d" % (lat, lon))
    eq(acc, 8)  # HDOP 1.6 x 5 m
    eq(tst, 1764403200)


@test
def gnss_decimal_degrees_with_four_satellite_fields():
    line = "+CGNSSINFO: 3,10,04,02,00,52.373101,N,4.892203,E,291125,075950.0,2.0,0.0,0.0,1.4,0.9,1.0"
    eq(parse_gnss(line), (AMSTERDAM[0], AMSTERDAM[1], 5, 1764403190))


@test
def gnss_southern_and_western_hemispheres():
    lat, lon, _, _ = parse_gnss(
        "+CGNSSINFO: 2,06,03,00,3352.1234,S,07036.5678,W,010125,120000.0,1,0,0,2,1.0,1"
    )
    eq((lat, lon), (-33868723, -70609463))


@test
def gnss_without_fix_is_none():
    eq(parse_gnss("+CGNSSINFO: ,,,,,,,,,,,,,,,"), None)
    eq(parse_gnss("+CGNSSINFO: ,,,,,,,,,,,,,,,,"), None)
    eq(parse_gnss("+CGNSSINFO: 2,06,03,00,99xx.1,N,00453.5,E,,,,,,,,"), None)


@test
def cpsi_serving_cell():
    eq(parse_cpsi(CPSI_LTE), ("LTE", ("LTE", 204, 8, "0x2B5C", "0x19C3330")))
    eq(
        parse_cpsi("+CPSI: GSM,Online,460-00,0x182d,12401,27 EGSM 900,-64,2110,42-42")[1][3:],
        ("0x182D", "0x0003071"),
    )
    eq(parse_cpsi("+CPSI: NO SERVICE,Online"), (None, None))


@test
async def clock_counts_from_what_it_was_set_to():
    clock = Clock()
    eq(clock.now(), None)
    clock.set(1764403200)
    await asyncio.sleep_ms(1100)
    true(clock.now() in (1764403201, 1764403202), "one second later")


async def modem_on(fake):
    async def opener():
        return fake

    chan = ATChannel(opener)
    asyncio.create_task(chan.run())
    return Modem(chan)


@test
async def bring_up_with_echo_on_reads_identity_registration_and_time():
    fake = FakeA7670()
    modem = await modem_on(fake)
    await modem.bring_up("internet")
    eq(fake.commands[:5], ["AT", "ATE0", "AT+CMEE=1", 'AT+CGDCONT=1,"IP","internet"', "AT+CPIN?"])
    eq(
        (modem.imei, modem.iccid, modem.reg, modem.rssi, modem.rat),
        ("864321050123456", "8931080019071234567", "home", -71, "LTE"),
    )
    true(modem.ready, "ready")
    eq(modem.clock.now() // 10, 176440320)


@test
async def registration_roaming_on_gsm_and_denied():
    fake = FakeA7670()
    modem = await modem_on(fake)
    fake.replies["AT+CEREG?"] = "\r\n+CEREG: 0,2\r\n\r\nOK\r\n"
    fake.replies["AT+CREG?"] = "\r\n+CREG: 0,5\r\n\r\nOK\r\n"
    eq(await modem.refresh(), "roaming")
    fake.replies["AT+CEREG?"] = "\r\n+CEREG: 0,3\r\n\r\nOK\r\n"
    fake.replies["AT+CREG?"] = "\r\n+CREG: 0,0\r\n\r\nOK\r\n"
    eq(await modem.refresh(), "denied")
    fake.replies["AT+CSQ"] = "\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
    await modem.refresh()
    eq(modem.rssi, None)


@test
async def gnss_is_powered_once_and_queried_after_ready():
    fake = FakeA7670()
    fake.gnss = GNSS_FIX
    modem = await modem_on(fake)
    eq(await modem.gnss_query(), None)  # powers on; READY! follows
    fix = await modem.gnss_query()
    eq(fix[3], 1764403200)
    eq(modem.fix, fix)
    eq(fake.count("AT+CGNSSPWR=1"), 1)
    eq(modem.clock.now() // 10, 176440320)  # no network time yet: the fix set the clock


@test
async def mqtt_start_stops_what_ran_and_copes_with_start_before_ok():
    fake = FakeA7670()
    modem = await modem_on(fake)
    true(await modem.mqtt_start("pd-0001", False), "started")
    eq(
        fake.commands,
        ["AT+CMQTTDISC=0,10", "AT+CMQTTREL=0", "AT+CMQTTSTOP", "AT+CMQTTSTART", 'AT+CMQTTACCQ=0,"pd-0001"'],
    )
    fake.replies["AT+CMQTTSTART"] = "\r\nERROR\r\n"  # already started
    true(await modem.mqtt_start("pd-0001", True), "already running is fine")
    eq(fake.commands[-1], 'AT+CMQTTACCQ=0,"pd-0001",1')


@test
async def connect_sets_the_will_and_subscribes():
    fake = FakeA7670()
    modem = await modem_on(fake)
    err = await modem.mqtt_connect(
        "127.0.0.1", 18830, 60, "pd-0001", "pw", b"r/status", b'{"online":false}', "r/", ("a", "b")
    )
    eq(err, 0)
    eq(fake.will, [b"r/status", b'{"online":false}'])
    eq(fake.connects, ['AT+CMQTTCONNECT=0,"tcp://127.0.0.1:18830",60,0,"pd-0001","pw"'])
    eq(fake.subscribed, [b"r/a", b"r/b"])


@test
async def connect_refused_returns_the_code():
    fake = FakeA7670()
    fake.connect_results = [30]  # bad user name or password
    modem = await modem_on(fake)
    eq(await modem.mqtt_connect("h", 1, 60, "u", "p", b"t", b"w", "r/", ("a",)), 30)
    eq(fake.subscribed, [])


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


run()
