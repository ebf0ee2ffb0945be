"""mqtt.Session over TLS on MicroPython against the fake modem: the CA loaded into the modem only when it
does not have it (and a CA of before deleted), SSL context 0 with server verification (authmode 1, never
0), TLS 1.2 and SNI, the TLS client and context bound."""

from fakes import FakeA7670
from mptest import eq, run, test, true, until

from mqtt_session import session
from tls_flash import CA, flash, ssl_options, stored


@test
async def the_ca_goes_into_the_modem_and_the_server_is_verified():
    flash()
    s, fake, _ = await session()
    names = stored(fake)
    eq(len(names), 1, "certificates in the modem")
    true(names[0].startswith("ca_") and len(names[0]) == 15, "named by its hash: " + names[0])
    eq(fake.data[names[0]], CA, "the CA as on the flash")
    eq(fake.count("AT+CCERTDOWN="), 1)
    options = ssl_options(fake)
    for option in ('"sslversion",0,3', '"authmode",0,1', '"enableSNI",0,1', '"cacert",0,"%s"' % names[0]):
        true(option in options, option + " in " + repr(options))
    true('"ignorelocaltime",0,0' in options, "dates checked: the modem has network time")
    true([c for c in fake.commands if c == 'AT+CMQTTACCQ=0,"pd-0001",1'], "a TLS client")
    eq(fake.count("AT+CMQTTSSLCFG=0,0"), 1)
    eq(fake.connects, ['AT+CMQTTCONNECT=0,"tcp://localhost:8883",60,0,"pd-0001","pw"'])
    true(s.up, "connected")
    true(not [o for o in options if o.startswith('"authmode",0,0')], "authmode 0 is never sent")


@test
async def a_modem_that_has_the_ca_is_not_written_again():
    flash()
    fake = FakeA7670()
    s, fake, _ = await session(fake)
    eq(fake.count("AT+CCERTDOWN="), 1)
    del fake.commands[:]
    fake.send("\r\n+CMQTTNONET\r\n")  # the service must start again: TLS is set up again
    await until(lambda: not s.up, 2000, "noticed the loss")
    await until(lambda: s.up, 5000, "reconnected")
    eq((fake.count("AT+CMQTTSTART"), fake.count("AT+CCERTLIST")), (1, 1))
    eq(fake.count("AT+CCERTDOWN="), 0)
    true('"authmode",0,1' in ssl_options(fake), "the context set again")


@test
async def a_new_ca_replaces_the_old_one_in_the_modem():
    flash()
    fake = FakeA7670()
    fake.data["ca_00000000.pem"] = b"an older CA"
    fake.data["other.pem"] = b"not ours"
    s, fake, _ = await session(fake)
    names = stored(fake)
    true("ca_00000000.pem" not in names and "other.pem" in names, "the old CA gone, others kept: %r" % names)
    eq(len(names), 2)
    eq(fake.count('AT+CCERTDELE="ca_00000000.pem"'), 1)


@test
async def without_a_clock_the_dates_are_not_checked():
    # A modem without network time: checking the dates would refuse every certificate.
    flash()
    fake = FakeA7670()
    fake.replies["AT+CCLK?"] = '\r\n+CCLK: "70/01/01,00:00:00+00"\r\n\r\nOK\r\n'
    s, fake, _ = await session(fake)
    options = ssl_options(fake)
    true('"ignorelocaltime",0,1' in options and '"authmode",0,1' in options, repr(options))


run()
