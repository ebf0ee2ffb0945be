"""outbox and state on MicroPython, on the real filesystem: atomic writes, order, power-cut leftovers."""

import json
import os

from mptest import eq, run, test, true
from pendant.outbox import Outbox
from pendant.state import State


def fresh(folder):
    try:
        for name in os.listdir(folder):
            os.remove(folder + "/" + name)
    except OSError:
        pass
    for name in ("state.json", "state.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    return Outbox(folder)


@test
def messages_keep_their_order_and_survive_new_objects():
    box = fresh("ob1")
    for i in range(12):
        box.put("alarm", b'{"n":%d}' % i)
    again = Outbox("ob1")
    eq([json.loads(again.read(name)[1])["n"] for name in again.names()], list(range(12)))
    eq(again.read(again.names()[0]), ("alarm", b'{"n":0}'))
    eq(again.put("alarm", b"{}"), "00000013.msg")  # numbering goes on after the last


@test
def only_complete_files_are_ever_seen():
    box = fresh("ob2")
    name = box.put("alarm", b'{"a":1}')
    box.replace(name, "alarm", b'{"a":2}')  # rewritten whole (tmp + rename)
    eq(box.read(name), ("alarm", b'{"a":2}'))
    eq(os.listdir("ob2"), [name])


@test
def removing_twice_is_no_error():
    box = fresh("ob3")
    name = box.put("alarm", b"{}")
    box.remove(name)
    box.remove(name)
    eq(box.names(), [])
    eq(box.read(name), None)


@test
def torn_temp_files_go_complete_ones_stay():
    fresh("ob4").put("alarm", b'{"a":1}')
    for name, body in (
        ("00000002.tmp", b'alarm\n{"a":'),
        ("00000003.tmp", b"alar"),
        ("00000004.tmp", b'alarm\n{"a":4}'),
    ):
        with open("ob4/" + name, "wb") as f:
            f.write(body)
    box = Outbox("ob4")
    eq(box.names(), ["00000001.msg", "00000004.msg"])
    eq(box.put("alarm", b"{}"), "00000005.msg")


@test
def state_counts_and_persists():
    fresh("ob5")
    state = State()
    eq((state.boot, state.seq, state.sess), (0, 0, 0))
    state.begin_boot()
    eq((state.next_alarm_id(), state.next_alarm_id(), state.next_sess()), ("1-1", "1-2", 1))
    again = State()  # a reboot
    eq((again.boot, again.seq, again.sess), (1, 2, 1))
    again.begin_boot()
    eq((again.boot, again.seq, again.next_alarm_id()), (2, 0, "2-1"))
    true("state.tmp" not in os.listdir(), "no temp file left")


@test
def state_never_goes_below_a_floor_and_survives_a_cut_replace():
    fresh("ob6")
    state = State()
    state.begin_boot(7)  # the highest boot in the outbox
    eq(state.next_alarm_id(), "8-1")
    os.rename("state.json", "state.tmp")  # cut between removing state.json and renaming (FAT)
    eq(State().boot, 8)
    with open("state.json", "w") as f:
        f.write('{"boot":')  # torn: falls back to state.tmp
    eq(State().boot, 8)


run()
