"""identity on MicroPython: the firmware version, IMEI and ICCID a technician reads at the REPL."""

import os

from fakes import FakeA7670, opener
from mptest import eq, run, test
from pendant import FW, identity


class Board:
    NAME = "test"


@test
def identity_for_the_repl():
    with open("config.json", "w") as f:
        f.write('{"device_id":"pd-0042","mqtt":{"host":"h","port":1}}')
    about = identity.about(Board, opener(FakeA7670()))
    eq(
        about,
        {
            "fw": FW,
            "board": "test",
            "device_id": "pd-0042",
            "imei": "864321050123456",
            "iccid": "8931080019071234567",
        },
    )


@test
def identity_without_config_or_modem():
    os.remove("config.json")

    async def no_modem():
        raise OSError("no modem")

    eq(
        identity.about(Board, no_modem),
        {"fw": FW, "board": "test", "device_id": None, "imei": None, "iccid": None},
    )


run()
