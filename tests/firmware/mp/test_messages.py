"""app on MicroPython: the answers to `alarm/ack`, `config` and `cmd` messages."""

import json

from mptest import eq, run, test
from pendant import app


class Stub:  # session, alarms, modem and board of an App, recording what they are asked
    def __init__(self):
        self.calls = []
        self.clock = self

    def now(self):
        return 1764403400

    async def publish(self, sub, payload):
        self.calls.append((sub, json.loads(payload)))
        return True

    async def on_ack(self, alarm_id, state):
        self.calls.append(("ack", alarm_id, state))

    async def raise_alarm(self, kind, test):
        self.calls.append(("raise", kind, test))

    async def gnss_query(self):
        self.calls.append(("gnss",))

    async def vibrate(self, pattern):
        self.calls.append(("vibrate", pattern))


def pendant():
    a = app.App(None)
    a.session = a.alarms = a.modem = a.board = Stub()
    a._beat = 99
    return a, a.session.calls


@test
async def acks_go_to_the_alarm_flow():
    a, calls = pendant()
    await a._on_message("alarm/ack", b'{"alarm_id":"1-1","state":"received"}')
    await a._on_message("alarm/ack", b'{"alarm_id":1}')  # malformed: ignored
    eq(calls, [("ack", "1-1", "received")])


@test
async def a_newer_valid_config_applies_and_is_reported():
    a, calls = pendant()
    await a._on_message("config", b'{"rev":3,"press_ms":1500,"heartbeat_s":600}')
    eq((a.settings["rev"], a.settings["press_ms"], a.settings["heartbeat_s"]), (3, 1500, 600))
    eq(calls, [("evt", {"evt": "config_applied", "tst": 1764403400, "rev": 3})])
    await a._on_message("config", b'{"rev":3,"press_ms":1500,"heartbeat_s":600}')  # retained, again
    eq(len(calls), 1)


@test
async def an_invalid_config_is_refused_once_and_changes_nothing():
    a, calls = pendant()
    await a._on_message("config", b'{"rev":4,"heartbeat_s":30,"press_ms":900}')
    eq(
        calls,
        [
            (
                "evt",
                {
                    "evt": "config_rejected",
                    "tst": 1764403400,
                    "rev": 4,
                    "field": "heartbeat_s",
                    "err": "must be 60..86400",
                },
            )
        ],
    )
    eq((a.settings["rev"], a.settings["press_ms"]), (0, 2000))
    await a._on_message("config", b'{"rev":4,"heartbeat_s":30,"press_ms":900}')
    await a._on_message("config", b"{not json")
    eq(len(calls), 1)


@test
async def commands_are_answered():
    a, calls = pendant()
    await a._on_message("cmd", b'{"id":"c-1","cmd":"test_alarm"}')
    await a._on_message("cmd", b'{"id":"c-2","cmd":"locate"}')
    await a._on_message("cmd", b'{"id":"c-3","cmd":"selftest"}')
    eq(
        calls,
        [
            ("raise", "test", True),
            ("cmd/res", {"id": "c-1", "ok": True}),
            ("gnss",),
            ("cmd/res", {"id": "c-2", "ok": True}),
            ("cmd/res", {"id": "c-3", "ok": False, "err": "not supported"}),
        ],
    )
    eq(a._beat, 0)  # locate: a tele with the new fix at the next second


run()
