"""The response parsers on MicroPython, fed lines as the A76XX manual prints them and as real modems vary
them (shared/reference/a7670-at.md): GNSS in both latitude formats and with 3 or 4 satellite fields, the
SIM7600's AT+CGPSINFO, no fix; the serving cell (AT+CPSI?); the network clock (AT+CCLK?)."""

from mptest import eq, run, test
from pendant.atparse import fields
from pendant.gnss import parse_gnss
from pendant.network import parse_cclk, parse_cpsi

TST = 1764403190  # 2025-11-29 07:59:50 UTC


@test
def cgnssinfo_decimal_degrees_three_satellite_fields():
    line = "+CGNSSINFO: 3,10,04,52.373101,N,4.892203,E,291125,075950.0,2.0,0.0,0.0,1.4,0.9,1.0"
    eq(parse_gnss(line), (52373101, 4892203, 5, TST))


@test
def cgnssinfo_decimal_degrees_four_satellite_fields():
    line = "+CGNSSINFO: 3,10,04,00,52.373101,N,4.892203,E,291125,075950.0,2.0,0.0,0.0,1.4,0.9,1.0"
    eq(parse_gnss(line), (52373101, 4892203, 5, TST))


@test
def cgnssinfo_nmea_ddmm_south_and_west():
    line = "+CGNSSINFO: 2,09,05,00,3352.123400,S,15112.567800,W,291125,075950.0,5.2,0.0,0.0,1.9,1.6,1.0"
    lat, lon, acc, tst = parse_gnss(line)
    eq((lat, lon, acc, tst), (-33868723, -151209463, 8, TST))


@test
def cgpsinfo_of_the_sim7600():
    line = "+CGPSINFO: 5222.386060,N,00453.532180,E,291125,075950.0,5.2,0.0,0.0"
    eq(parse_gnss(line), (52373101, 4892203, 50, TST))  # no HDOP: a modest accuracy


@test
def no_fix_and_garbage_are_none():
    for line in (
        "+CGNSSINFO: ,,,,,,,,,,,,,,,",
        "+CGPSINFO: ,,,,,,,,",
        "+CGNSSINFO: 3,x,N,y,E",
        "+CGNSSINFO:",
        "+CGNSSINFO: 2,09,05,00,95.0,N,4.8,E,291125,075950.0,5.2",
    ):
        eq(parse_gnss(line), None, line)


@test
def a_fix_without_a_date_has_no_time():
    eq(parse_gnss("+CGNSSINFO: 3,10,04,52.373101,N,4.892203,E,,,2.0,0.0,0.0,1.4")[3], None)


@test
def cpsi_lte_gsm_and_no_service():
    lte = "+CPSI: LTE,Online,204-08,0x2B5C,27013936,257,EUTRAN-BAND20,6300,5,5,-94,-850,-545,15"
    eq(parse_cpsi(lte), ("LTE", ("LTE", 204, 8, "0x2B5C", "0x19C3330")))
    gsm = "+CPSI: GSM,Online,204-16,0x0BB8,12345,44,EGSM 900,-71,0,40-40"
    eq(parse_cpsi(gsm), ("GSM", ("GSM", 204, 16, "0x0BB8", "0x0003039")))
    eq(parse_cpsi("+CPSI: NO SERVICE,Online"), (None, None))
    eq(parse_cpsi("+CPSI: LTE,Online"), ("LTE", None))


@test
def cclk_local_time_with_zone_and_the_unset_default():
    eq(parse_cclk('+CCLK: "25/11/29,09:00:00+04"'), 1764403200)  # +04 quarter hours = UTC+1
    eq(parse_cclk('+CCLK: "25/11/29,08:00:00-00"'), 1764403200)
    eq(parse_cclk('+CCLK: "70/01/01,00:00:08+00"'), None)  # the power-on default: no network time
    eq(parse_cclk("+CCLK: garbage"), None)


@test
def fields_of_a_response_line():
    eq(fields("+CSQ: 21,99"), ["21", "99"])
    eq(fields("+CPSI: LTE,Online,204-08"), ["LTE", "Online", "204-08"])


run()
