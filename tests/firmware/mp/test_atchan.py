"""atchan on MicroPython against a fake modem stream: commands, waiters, URCs, prompts, timeouts."""

import asyncio

from fakes import FakeA7670
from mptest import araises, eq, run, test, true, until
from pendant.atchan import ATChannel, ATError, ATTimeout


def start(coro):
    """Run coro as a task; the returned list gets its outcome: ["done", value] or ["raised", error]."""
    outcome = []

    async def wrapper():
        try:
            outcome.extend(["done", await coro])
        except Exception as e:
            outcome.extend(["raised", e])

    asyncio.create_task(wrapper())
    return outcome


async def channel():
    fake = FakeA7670()

    async def opener():
        return fake

    chan = ATChannel(opener)
    reader = start(chan.run())
    await asyncio.sleep_ms(0)
    return chan, fake, reader


@test
async def response_lines_are_returned():
    chan, fake, _ = await channel()
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])
    eq(fake.commands, ["AT+CSQ"])


@test
async def echo_is_not_part_of_the_response():
    chan, fake, _ = await channel()
    fake.replies["AT+CSQ"] = "AT+CSQ\r\r\n+CSQ: 9,99\r\n\r\nOK\r\n"
    eq(await chan.command("AT+CSQ"), ["+CSQ: 9,99"])


@test
async def cme_error_raises_with_the_line():
    chan, fake, _ = await channel()
    fake.replies["AT+CPIN?"] = "\r\n+CME ERROR: 10\r\n"
    try:
        await chan.command("AT+CPIN?")
    except ATError as e:
        eq(str(e), "+CME ERROR: 10")
    else:
        raise AssertionError("no ATError")


@test
async def silence_times_out_and_a_late_answer_does_not_confuse_the_next_command():
    chan, fake, _ = await channel()
    fake.replies["AT+CGNSSINFO"] = ""
    await araises(ATTimeout, chan.command("AT+CGNSSINFO", 100))
    fake.send("\r\n+CGNSSINFO: ,,,,,,,,,,,,,,,\r\n\r\nOK\r\n")  # the late answer
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])


@test
async def start_result_before_ok_is_not_lost():
    chan, fake, _ = await channel()
    fake.start_before_ok = True
    eq(await chan.command("AT+CMQTTSTART", final="+CMQTTSTART:", final_ms=1000), "+CMQTTSTART: 0")


@test
async def start_result_after_ok():
    chan, fake, _ = await channel()
    fake.start_before_ok = False
    eq(await chan.command("AT+CMQTTSTART", final="+CMQTTSTART:", final_ms=1000), "+CMQTTSTART: 0")


@test
async def async_result_is_awaited_outside_the_lock():
    chan, fake, _ = await channel()
    fake.replies["AT+CMQTTPUB="] = "\r\nOK\r\n"
    publish = start(chan.command("AT+CMQTTPUB=0,1,60", final="+CMQTTPUB: 0,", final_ms=3000))
    await until(lambda: fake.count("AT+CMQTTPUB") == 1)
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])  # runs while the publish waits for its PUBACK
    eq(publish, [], "publish still waiting")
    fake.send("\r\n+CMQTTPUB: 0,0\r\n")
    await until(lambda: publish)
    eq(publish, ["done", "+CMQTTPUB: 0,0"])


@test
async def error_result_with_error_is_returned_not_raised():
    chan, fake, _ = await channel()
    fake.replies["AT+CMQTTPUB="] = "\r\n+CMQTTPUB: 0,14\r\n\r\nERROR\r\n"
    eq(await chan.command("AT+CMQTTPUB=0,1,60", final="+CMQTTPUB: 0,", final_ms=1000), "+CMQTTPUB: 0,14")


@test
async def missing_async_result_times_out():
    chan, fake, _ = await channel()
    fake.replies["AT+CMQTTSUB=0"] = "\r\nOK\r\n"
    await araises(ATTimeout, chan.command("AT+CMQTTSUB=0", final="+CMQTTSUB: 0,", final_ms=100))


@test
async def urcs_interleaved_with_a_response_go_to_their_handlers():
    chan, fake, _ = await channel()
    seen = []
    chan.on("+CMQTTCONNLOST:", lambda line, data: seen.append(line))
    chan.on("RING", lambda line, data: seen.append(line))
    fake.replies["AT+CSQ"] = "\r\n+CSQ: 21,99\r\n\r\nRING\r\n\r\n+CMQTTCONNLOST: 0,1\r\n\r\nOK\r\n"
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])
    eq(seen, ["RING", "+CMQTTCONNLOST: 0,1"])


@test
async def raw_blocks_reach_their_handler():
    chan, fake, _ = await channel()
    seen = []
    chan.on("+CMQTTRXPAYLOAD:", lambda line, data: seen.append(data))
    fake.send(b"+CMQTTRXPAYLOAD: 0,6\r\nab\r\ncd\r\n")
    await until(lambda: seen)
    eq(seen, [b"ab\r\ncd"])


@test
async def a_failing_handler_does_not_stop_the_reader():
    chan, fake, _ = await channel()
    chan.on("RING", lambda line, data: 1 // 0)
    fake.send("\r\nRING\r\n")
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])


@test
async def data_is_written_only_after_the_prompt():
    chan, fake, _ = await channel()
    await chan.command("AT+CMQTTTOPIC=0,5", data=b"hello")
    eq(fake.data["TOPIC"], b"hello")
    fake.replies["AT+CMQTTPAYLOAD="] = "\r\n+CME ERROR: 22\r\n"
    await araises(ATError, chan.command("AT+CMQTTPAYLOAD=0,5", data=b"world"))
    eq(fake.data.get("PAYLOAD"), None)


@test
async def commands_are_serialised():
    chan, fake, _ = await channel()
    fake.replies["AT+CSQ"] = ""
    first = start(chan.command("AT+CSQ", 2000))
    second = start(chan.command("AT+CPIN?", 2000))
    await asyncio.sleep_ms(50)
    eq(fake.commands, ["AT+CSQ"])  # the second waits for the first's final result
    fake.send("\r\n+CSQ: 5,99\r\n\r\nOK\r\n")
    await until(lambda: first and second)
    eq((first, second), (["done", ["+CSQ: 5,99"]], ["done", ["+CPIN: READY"]]))


@test
async def unknown_unsolicited_lines_are_dropped():
    chan, fake, _ = await channel()
    fake.send("\r\nRDY\r\n\r\n*ATREADY: 1\r\n\r\nSMS DONE\r\n")
    await asyncio.sleep_ms(50)  # the reader polls every 10 ms
    eq(await chan.command("AT"), [])


@test
async def end_of_stream_ends_the_reader_and_commands_fail_fast():
    chan, fake, reader = await channel()
    fake.close()
    await until(lambda: reader)
    eq((reader[0], type(reader[1])), ("raised", OSError))
    await araises(ATTimeout, chan.command("AT", 100))


@test
async def the_reader_starts_again_on_a_new_stream():
    streams = [FakeA7670(), FakeA7670()]
    first = streams[0]

    async def opener():
        return streams.pop(0)

    chan = ATChannel(opener)
    reader = start(chan.run())
    await asyncio.sleep_ms(0)
    first.close()
    await until(lambda: reader)
    start(chan.run())
    eq(await chan.command("AT+CSQ"), ["+CSQ: 21,99"])


@test
async def one_handler_for_several_prefixes():
    chan, fake, _ = await channel()
    seen = []
    chan.on(("RING", "+CLIP:", "NO CARRIER"), lambda line, data: seen.append(line))
    fake.send('\r\nRING\r\n\r\n+CLIP: "+31201234567",145,,,,0\r\n\r\nNO CARRIER\r\n')
    eq(await chan.command("AT"), [])
    eq(seen, ["RING", '+CLIP: "+31201234567",145,,,,0', "NO CARRIER"])


@test
async def silence_and_idleness_are_measured():
    chan, fake, _ = await channel()
    eq(await chan.command("AT"), [])
    eq(chan.silent_ms(), 0)  # it answers
    await asyncio.sleep_ms(30)
    true(chan.idle_ms() >= 30, "idle since the last command")
    fake.silent = True  # it hangs
    await araises(ATTimeout, chan.command("AT", 50))
    await asyncio.sleep_ms(20)
    true(chan.silent_ms() >= 70, "silent since the last answer: %d" % chan.silent_ms())
    fake.silent = False
    eq(await chan.command("AT"), [])
    eq(chan.silent_ms(), 0)


@test
async def a_sleeping_modem_is_woken_by_dtr_before_the_next_command():
    chan, fake, _ = await channel()
    levels = []
    chan.dtr = levels.append
    chan.sleep()
    chan.sleep()  # once is enough
    eq(levels, [1])
    eq(await chan.command("AT"), [])
    eq(levels, [1, 0])  # low before the command went out
    eq(fake.commands, ["AT"])


run()
