"""atparse on MicroPython: A7670 responses as the A76XX manual prints them, and the quirks of real modems."""

from mptest import eq, run, test
from pendant.atparse import BLOCK, LINE, PROMPT, Parser

RAW_MAX = 4096  # the largest raw block atparse keeps


def parse(*chunks):
    events = []
    parser = Parser(lambda kind, line, data: events.append((kind, line, data)))
    for chunk in chunks:
        parser.feed(chunk)
    return events


def lines(events):
    return [line for kind, line, _ in events if kind == LINE]


@test
def response_with_echo_and_blank_lines():
    # Before ATE0 the modem echoes the command; a response is CR LF <text> CR LF, then CR LF OK CR LF.
    eq(lines(parse(b"AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n")), ["AT+CSQ", "+CSQ: 21,99", "OK"])


@test
def every_byte_in_its_own_read():
    stream = b"\r\n+CEREG: 0,1\r\n\r\nOK\r\n"
    eq(lines(parse(*[stream[i : i + 1] for i in range(len(stream))])), ["+CEREG: 0,1", "OK"])


@test
def prompt_has_no_line_end():
    eq(parse(b"\r\n>"), [(PROMPT, None, None)])
    eq(parse(b"\r\n> ", b"\r\nOK\r\n"), [(PROMPT, None, None), (LINE, "OK", None)])


@test
def prompt_split_from_its_blank():
    eq(parse(b"\r\n>", b" ", b"\r\nOK\r\n"), [(PROMPT, None, None), (LINE, "OK", None)])


@test
def cme_error():
    eq(lines(parse(b"\r\n+CME ERROR: 10\r\n")), ["+CME ERROR: 10"])


@test
def mqtt_receive_as_in_the_manual():
    # MQTT(S) application note: RXSTART with both lengths, then each part after its own header
    stream = (
        b"\r\n+CMQTTRXSTART: 0,20,60\r\n+CMQTTRXTOPIC: 0,20\r\nsimcommsg/client/sub\r\n"
        b"+CMQTTRXPAYLOAD: 0,60\r\n" + b"x" * 60 + b"\r\n+CMQTTRXEND: 0\r\n"
    )
    eq(
        parse(stream),
        [
            (LINE, "+CMQTTRXSTART: 0,20,60", None),
            (BLOCK, "+CMQTTRXTOPIC: 0,20", b"simcommsg/client/sub"),
            (BLOCK, "+CMQTTRXPAYLOAD: 0,60", b"x" * 60),
            (LINE, "+CMQTTRXEND: 0", None),
        ],
    )


@test
def payload_with_cr_lf_and_prompt_bytes_is_read_by_length():
    payload = b'{"a":"\r\nOK\r\n>"}'
    header = "+CMQTTRXPAYLOAD: 0,%d" % len(payload)
    events = parse(header.encode() + b"\r\n" + payload + b"\r\n+CMQTTRXEND: 0\r\n")
    eq(events, [(BLOCK, header, payload), (LINE, "+CMQTTRXEND: 0", None)])


@test
def payload_split_over_many_reads():
    payload = b"0123456789" * 30
    stream = b"+CMQTTRXPAYLOAD: 0,300\r\n" + payload + b"\r\n"
    eq(
        parse(*[stream[i : i + 7] for i in range(0, len(stream), 7)]),
        [(BLOCK, "+CMQTTRXPAYLOAD: 0,300", payload)],
    )


@test
def topic_and_payload_in_several_chunks():
    # the quirk: chunk lengths add up to the totals of +CMQTTRXSTART
    stream = (
        b"+CMQTTRXSTART: 0,9,6\r\n+CMQTTRXTOPIC: 0,4\r\npend\r\n+CMQTTRXTOPIC: 0,5\r\nant/a\r\n"
        b'+CMQTTRXPAYLOAD: 0,3\r\n{"a\r\n+CMQTTRXPAYLOAD: 0,3\r\n":1\r\n+CMQTTRXEND: 0\r\n'
    )
    eq([data for kind, _, data in parse(stream) if kind == BLOCK], [b"pend", b"ant/a", b'{"a', b'":1'])


@test
def urcs_interleaved_with_a_response():
    stream = b"\r\n+CSQ: 21,99\r\n\r\nRING\r\n\r\n+CMQTTCONNLOST: 0,1\r\n\r\nOK\r\n"
    eq(lines(parse(stream)), ["+CSQ: 21,99", "RING", "+CMQTTCONNLOST: 0,1", "OK"])


@test
def start_result_before_ok():
    eq(lines(parse(b"\r\n+CMQTTSTART: 0\r\n\r\nOK\r\n")), ["+CMQTTSTART: 0", "OK"])


@test
def publish_busy_result():
    eq(lines(parse(b"\r\nOK\r\n\r\n+CMQTTPUB: 0,14\r\n")), ["OK", "+CMQTTPUB: 0,14"])


@test
def garbage_bytes_do_not_break_the_lines_after_them():
    found = lines(parse(b"\x00\xff\xfe\x80garbage\r\n\xff\xff", b"\r\nOK\r\n"))
    eq(len(found), 3)
    eq(found[-1], "OK")


@test
def endless_garbage_is_cut_and_parsing_goes_on():
    found = lines(parse(b"A" * 5000, b"\r\nOK\r\n"))
    eq(found[-1], "OK")
    eq(found[0], "A" * 160)


@test
def malformed_block_headers_are_plain_lines():
    stream = b"+CMQTTRXPAYLOAD: 0,abc\r\n+CMQTTRXTOPIC: 0\r\nOK\r\n"
    eq(lines(parse(stream)), ["+CMQTTRXPAYLOAD: 0,abc", "+CMQTTRXTOPIC: 0", "OK"])


@test
def empty_block():
    eq(
        parse(b"+CMQTTRXPAYLOAD: 0,0\r\n\r\nOK\r\n"),
        [(BLOCK, "+CMQTTRXPAYLOAD: 0,0", b""), (LINE, "OK", None)],
    )


@test
def oversized_block_is_counted_not_kept():
    n = RAW_MAX + 10
    stream = b"+CMQTTRXPAYLOAD: 0,%d\r\n" % n + b"y" * n + b"\r\nOK\r\n"
    eq(parse(stream[:100], stream[100:]), [(BLOCK, "+CMQTTRXPAYLOAD: 0,%d" % n, None), (LINE, "OK", None)])


@test
def feed_reads_only_the_count_given():
    events = []
    Parser(lambda kind, line, data: events.append(line)).feed(bytearray(b"OK\r\nERROR\r\n"), 4)
    eq(events, ["OK"])


run()
