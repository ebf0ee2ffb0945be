"""What the pendant is, for the technician at the REPL (the firmware never loads this module):

    >>> import pendant.identity
    >>> pendant.identity.about()
    {'fw': '0.2.0', 'board': 'sim', 'device_id': 'pd-0001', 'imei': '864321050123456', 'iccid': '8931...'}

It asks the modem itself (AT+CGSN, AT+CICCID), so run it while the firmware is stopped (Ctrl-C, or a
pendant waiting for provisioning): the modem has one UART. A modem that does not answer gives None for
those fields. device_id is None before provisioning.
"""

import asyncio
import json
import sys

from . import FW
from .atchan import ATChannel, ATError, ATTimeout


def _board():
    if sys.platform == "linux":
        from .boards import sim as board
    else:
        from .boards import t_a7670e as board
    return board


async def _ask(chan, answers):
    reader = asyncio.create_task(chan.run())
    for key, cmd in (("imei", "AT+CGSN"), ("iccid", "AT+CICCID")):
        try:
            for line in await chan.command(cmd, 3000):
                if line[:1].isdigit() or line.startswith("+ICCID:"):
                    answers[key] = line.split(":")[-1].strip()
        except (ATError, ATTimeout):
            pass  # no answer: None, as documented
    reader.cancel()  # its finally closes the stream
    try:
        await reader
    except (asyncio.CancelledError, OSError):
        pass  # cancelled as asked, or it had failed before (no modem stream): nothing is left open


def about(board_module=None, opener=None):
    """The firmware version, board, device id, IMEI and ICCID as a dict (see the module's docstring).
    board_module and opener stand in for the board's own when given (tests)."""
    try:
        with open("config.json") as f:
            device_id = json.load(f).get("device_id")
    except (OSError, ValueError):
        device_id = None
    board = board_module or _board()
    answers = {"fw": FW, "board": board.NAME, "device_id": device_id, "imei": None, "iccid": None}
    if opener is None:
        opener = board.Board(device_id or "").open_modem
    asyncio.run(_ask(ATChannel(opener), answers))  # no modem stream: the modem's fields stay None
    return answers
