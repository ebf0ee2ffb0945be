"""The alarm flow on MicroPython against a fake MQTT session, over a real outbox folder: press ->
outbox file -> publish -> ack -> outbox empty; no ack -> kept and resent; reboot -> the same alarm_id
again; duplicates and strangers harmless; a torn temp file from a power cut ignored, nothing lost."""

import json
import os
from time import ticks_add

from mptest import eq, run, test, wipe
from pendant.alarm import Alarms
from pendant.boot import count_boot, load_state, open_outbox

FIX = (52373101, 4892203, 8, 1764403190)
CELL = ("LTE", 204, 8, "0x2B5C", "0x01A2F30")


class Session:  # what Alarms needs from mqtt.Session
    def __init__(self):
        self.up = True
        self.gen = 1
        self.failures = 0
        self.published = []

    async def publish(self, sub, payload):
        if self.up:
            self.published.append((sub, json.loads(payload)))
        return self.up


class Modem:  # what Alarms reads from the modem: fix, cell, registration, clock
    def __init__(self, fix=FIX):
        self.fix = fix
        self.fix_ticks = 0
        self.cell = CELL
        self.reg = "home"

    def now(self):
        return 1764403200


class Board:
    def __init__(self):
        self.vibrations = []

    async def vibrate(self, pattern):
        self.vibrations.append(pattern)


def clean():
    wipe("outbox", "outbox-fb")
    with open("state.json", "w") as f:  # a pendant that has booted 0 times
        f.write('{"boot":0,"seq":0,"sess":0,"open":null}')


def boot(modem=None, session=None):
    """A pendant starting over the flash in the current directory: new objects, same files."""
    state = load_state()
    alarms = Alarms(
        session or Session(),
        open_outbox(),
        state,
        modem or Modem(),
        Board(),
        {"ack_timeout_s": 30},
        lambda: 87,
        lambda count=0: None,
    )
    count_boot(state, alarms)
    return alarms


def queued(alarms):
    return [json.loads(alarms.outbox.read(name)[1])["alarm_id"] for name in alarms.outbox.names()]


@test
async def press_publish_ack_and_the_outbox_is_empty():
    clean()
    alarms = boot()
    alarm_id = alarms.raise_alarm()
    eq(alarm_id, "1-1")
    eq(queued(alarms), ["1-1"])  # on flash before anything else
    await alarms.send()
    sub, message = alarms.session.published[0]
    eq(sub, "alarm")
    eq(
        message,
        {
            "alarm_id": "1-1",
            "kind": "panic",
            "tst": 1764403200,
            "batt": 87,
            "test": False,
            "cell": None,
            "loc": {"lat": 52.373101, "lon": 4.892203, "acc": 8, "tst": 1764403190, "src": "gnss"},
        },
    )
    await alarms.on_ack("1-1", "received")
    eq(queued(alarms), [])
    await alarms.on_ack("1-1", "acknowledged")  # the operator took it
    eq(alarms.board.vibrations, ["sent", "received", "acknowledged"])


@test
async def without_ack_it_stays_and_is_resent_after_a_reconnect_and_after_the_timeout():
    clean()
    alarms = boot()
    alarms.raise_alarm()
    await alarms.send()
    await alarms.send()  # not due again yet
    eq(len(alarms.session.published), 1)
    eq(queued(alarms), ["1-1"])
    alarms.session.gen += 1  # a reconnect
    alarms.on_connect()
    await alarms.send()
    eq(len(alarms.session.published), 2)
    entry = alarms.queued["00000001.msg"]
    # the ack timeout passes (the send's ticks moved back)
    entry.published = ticks_add(entry.published, -30000)
    alarms._looked -= 1000
    await alarms.send()
    eq([m["alarm_id"] for _, m in alarms.session.published], ["1-1", "1-1", "1-1"])
    eq(alarms.board.vibrations, ["sent"])  # the wearer feels the first send only


async def resent_after(alarms, ms):
    # Move every queued alarm's last send ms back in time (a clock that ran on) and let send() look:
    # the ids published now.
    for entry in alarms.queued.values():
        entry.published = ticks_add(entry.published, -ms)
    published = alarms.session.published
    n = len(published)
    alarms._due = True
    await alarms.send()
    return [m["alarm_id"] for _, m in published[n:]]


@test
async def unacked_alarms_are_resent_with_backoff_in_order_until_the_ack():
    clean()
    alarms = boot()
    alarms.raise_alarm()
    await alarms.send()
    waits = []
    for _ in range(6):
        wait = alarms.queued["00000001.msg"].wait
        waits.append(wait)
        eq(await resent_after(alarms, wait - 500), [], "half a second before the wait is over")
        eq(await resent_after(alarms, 500), ["1-1"], "once the wait is over")
    eq(waits, [30000, 60000, 120000, 240000, 300000, 300000])
    eq(await resent_after(alarms, 299000), [], "capped, and not sooner")
    eq(await resent_after(alarms, 1000), ["1-1"])
    alarms.raise_alarm()  # a second alarm: sent at once, its own wait starts at the ack timeout
    eq(await resent_after(alarms, 0), ["1-2"])
    eq(alarms.queued["00000002.msg"].wait, 30000)
    alarms.session.gen += 1  # a reconnect: both at once, oldest first, and the waits start again
    alarms.on_connect()
    eq(await resent_after(alarms, 0), ["1-1", "1-2"])
    eq([alarms.queued[name].wait for name in sorted(alarms.queued)], [30000, 30000])
    eq(await resent_after(alarms, 29500), [])
    eq(await resent_after(alarms, 500), ["1-1", "1-2"])
    await alarms.on_ack("1-1", "received")  # the ack ends the resends of that alarm only
    eq(await resent_after(alarms, 60000), ["1-2"])
    await alarms.on_ack("1-2", "received")
    eq(await resent_after(alarms, 300000), [])
    eq(queued(alarms), [])
    eq(alarms.board.vibrations, ["sent", "sent", "received", "received"])  # felt once per alarm


@test
async def offline_the_alarm_waits_on_flash():
    clean()
    session = Session()
    session.up = False
    alarms = boot(session=session)
    alarms.raise_alarm()
    await alarms.send()
    eq(session.published, [])
    eq(queued(alarms), ["1-1"])


@test
async def after_a_reboot_the_same_alarm_id_is_sent_again_and_new_ones_differ():
    clean()
    first = boot()
    first.raise_alarm()
    await first.send()
    second = boot()  # power cut and reboot: new objects over the same folder
    await second.send()
    eq(second.session.published[0][1]["alarm_id"], "1-1")
    eq(second.raise_alarm(), "2-1")
    await second.send()
    eq([m["alarm_id"] for _, m in second.session.published], ["1-1", "2-1"])
    await second.on_ack("1-1", "received")
    eq(queued(second), ["2-1"])


@test
async def duplicate_and_unknown_acks_are_harmless():
    clean()
    alarms = boot()
    alarms.raise_alarm()
    alarms.raise_alarm()
    await alarms.send()
    await alarms.on_ack("9-9", "received")
    await alarms.on_ack("1-1", "received")
    await alarms.on_ack("1-1", "received")
    eq(queued(alarms), ["1-2"])
    eq(alarms.board.vibrations, ["sent", "sent", "received"])


@test
async def a_torn_temp_file_is_ignored_and_nothing_is_lost():
    clean()
    alarms = boot()
    alarms.raise_alarm()
    with open("outbox/00000002.msg.tmp", "wb") as f:  # the power went while the next alarm was written
        f.write(b'alarm\n{"alarm_id":"1-2","kind":"pa')
    again = boot()
    eq(queued(again), ["1-1"])
    eq(os.listdir("outbox"), ["00000001.msg"])  # the torn file removed
    await again.send()
    eq(again.session.published[0][1]["alarm_id"], "1-1")


@test
async def a_complete_temp_file_is_kept():
    clean()
    try:
        os.mkdir("outbox")
    except OSError:
        pass  # there already
    with open("outbox/00000007.msg.tmp", "wb") as f:  # written in full; the rename did not happen
        f.write(b'alarm\n{"alarm_id":"4-2","kind":"panic"}')
    alarms = boot()
    eq(queued(alarms), ["4-2"])
    eq(alarms.state.boot, 5)  # never below a queued alarm's boot: its id is never reused


@test
async def without_a_fix_the_cell_goes_with_the_alarm():
    clean()
    alarms = boot(Modem(None))
    alarms.raise_alarm()
    await alarms.send()
    message = alarms.session.published[0][1]
    eq(
        (message["loc"], message["cell"]),
        (None, {"mcc": 204, "mnc": 8, "lac": "0x2B5C", "cid": "0x01A2F30", "rat": "LTE"}),
    )


@test
async def without_a_data_path_the_fallback_is_due_at_once():
    clean()
    session = Session()
    session.up = False
    session.failures = 2  # reconnecting has failed
    alarms = boot(session=session)
    eq(alarms.fallback_due(), None)
    alarms.raise_alarm()
    eq(alarms.fallback_due()[1].alarm_id, "1-1")
    again = boot(session=session)  # and after a reboot it goes on at once
    eq(again.fallback_due()[1].alarm_id, "1-1")


@test
async def a_test_alarm_is_marked_as_one():
    clean()
    alarms = boot()
    alarms.raise_alarm("test", True)
    await alarms.send()
    eq((alarms.session.published[0][1]["kind"], alarms.session.published[0][1]["test"]), ("test", True))


run()
