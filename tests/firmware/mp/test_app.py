"""app on MicroPython: config.json checks and the battery estimate."""

import os

from mptest import eq, raises, run, test
from pendant import app

EXAMPLES = os.getenv("PENDANT_EXAMPLES") or "../../../docs/protocol-examples"


@test
def the_example_device_config_loads():
    device = app.load_device_config(EXAMPLES + "/device-config.json")
    eq((device["device_id"], device["mqtt"]["port"]), ("pd-0001", 18830))


@test
def a_missing_or_unusable_device_config_says_so():
    raises(ValueError, app.load_device_config, "no-such-file.json")
    for text in (
        '{"device_id":"pd-1"}',
        '{"device_id":"pd-1","mqtt":{"host":"h","port":"x"}}',
        '{"device_id":"pd-1","mqtt":{"host":"h","port":1,"password":"a\\"b"}}',
        "[1]",
        "{",
    ):
        with open("config.json", "w") as f:
            f.write(text)
        raises(ValueError, app.load_device_config)


@test
def battery_percent_from_millivolts():
    a = app.App(None)
    a.board = a
    for mv, percent in ((None, None), (4250, 100), (4200, 100), (3750, 50), (3300, 0), (3000, 0)):
        a.battery_mv = lambda mv=mv: mv
        eq(a.battery(), percent, "%s mV" % mv)


run()
