"""Stand-in firmware for the bench tests: says HELLO on the board channel, asks the modem for its IMEI,
prints fixed log lines; on a button press it logs an alarm and vibrates; on release it exits (reboots);
the power button makes it crash (an uncaught exception).
It never exits by itself otherwise, so a bench that dies must take it down."""

import asyncio
import json
import sys
import time


def log(module, message):
    print(time.ticks_ms(), module + ": " + message)


async def _answer(reader):
    lines = []
    while True:
        answer = (await reader.readline()).strip()
        if answer in (b"OK", b"ERROR"):
            return lines
        if answer:
            lines.append(answer.decode())


async def command(reader, writer, line):
    # A modem that is still booting hears nothing: ask again, as a driver does.
    while True:
        writer.write(line.encode() + b"\r")
        await writer.drain()
        try:
            return await asyncio.wait_for(_answer(reader), 1)
        except asyncio.TimeoutError:  # noqa: UP041 (MicroPython names it so)
            pass


async def main():
    with open("config.json") as file:
        config = json.load(file)
    with open("sim.json") as file:
        ports = json.load(file)
    io_reader, io_writer = await asyncio.open_connection(ports["io"][0], ports["io"][1])
    io_writer.write(("HELLO " + config["device_id"] + " fake-1\n").encode())
    await io_writer.drain()
    modem_reader, modem_writer = await asyncio.open_connection(ports["modem"][0], ports["modem"][1])
    await command(modem_reader, modem_writer, "ATE0")
    imei = (await command(modem_reader, modem_writer, "AT+CGSN"))[-1]
    log("modem", "imei " + imei)
    log("mem", "peak 1000 free 2000")
    pressed = False
    while True:
        line = await io_reader.readline()
        if not line:  # the bench went away: wait, as a real board would keep running
            await asyncio.sleep(3600)
        if line == b"BTN 1\n":
            pressed = True
            log("alarm", "raised 1-1")
            io_writer.write(b"VIB sent\n")
            await io_writer.drain()
        elif line == b"BTN 0\n" and pressed:
            log("app", "button released, rebooting")
            sys.exit(0)
        elif line == b"PWR 1\n":
            raise ValueError("the stand-in firmware crashes on the power button")


def run():
    asyncio.run(main())
