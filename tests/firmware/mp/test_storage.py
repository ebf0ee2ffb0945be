"""store.py and boot.py's reading of it on MicroPython, on the real filesystem: atomic writes, order,
what a power cut leaves behind, and alarm ids that never repeat across reboots."""

import json
import os

from mptest import eq, run, test, true, wipe
from pendant.boot import load_state, open_outbox
from pendant.store import write


def fresh(folder):
    wipe(folder, folder + "-fb")
    return open_outbox(folder)


@test
def messages_keep_their_order_and_survive_a_reboot():
    box = fresh("ob1")
    for i in range(12):
        box.put("alarm", b'{"n":%d}' % i)
    again = open_outbox("ob1")  # a reboot
    eq([json.loads(again.read(name)[1])["n"] for name in again.names()], list(range(12)))
    eq(again.read(again.names()[0]), ("alarm", b'{"n":0}'))
    eq(again.put("alarm", b"{}"), "00000013.msg")  # numbering goes on after the last


@test
def a_rewrite_is_all_or_nothing():
    wipe("ob2")
    os.mkdir("ob2") if "ob2" not in os.listdir() else None
    write("ob2/x", b"old")
    write("ob2/x", b"new")  # tmp + rename
    with open("ob2/x", "rb") as f:
        eq(f.read(), b"new")
    eq(os.listdir("ob2"), ["x"])


@test
def removing_twice_is_no_error_and_takes_the_note():
    box = fresh("ob3")
    name = box.put("alarm", b"{}")
    box.put_note(name, b"[1]")
    eq(box.note(name), b"[1]")
    eq(os.listdir("ob3"), [name])  # the outbox folder holds the messages only
    box.remove(name)
    box.remove(name)
    eq((box.names(), box.read(name), box.note(name)), ([], None, None))


@test
def after_a_power_cut_torn_files_go_and_complete_ones_stay():
    fresh("ob4").put("alarm", b'{"a":1}')
    for name, body in (
        ("00000002.msg.tmp", b'alarm\n{"a":'),  # cut mid-write
        ("00000003.msg.tmp", b"alar"),
        ("00000004.msg.tmp", b'alarm\n{"a":4}'),  # cut between the write and the rename
    ):
        with open("ob4/" + name, "wb") as f:
            f.write(body)
    write("ob4-fb/00000009.fb", b"[]")  # the note of a message that is gone
    box = open_outbox("ob4")
    eq(box.names(), ["00000001.msg", "00000004.msg"])
    eq(box.put("alarm", b"{}"), "00000005.msg")
    eq(os.listdir("ob4-fb"), [])


@test
def alarm_ids_never_repeat_across_reboots():
    wipe("ob5")
    state = load_state()  # a new pendant: a random boot counter
    true(0 <= state.boot < 2**29, "boot counter in range")
    state.boot = 7
    state.seq = 0
    eq((state.next_alarm_id(), state.next_alarm_id()), ("7-1", "7-2"))
    again = load_state()  # a reboot: the counters as they were on flash
    eq((again.boot, again.seq), (7, 2))
    os.rename("state.json", "state.json.tmp")  # a cut between removing state.json and the rename (FAT)
    eq(load_state().boot, 7)
    with open("state.json", "w") as f:
        f.write('{"boot":')  # torn: the .tmp is read instead
    eq(load_state().boot, 7)


run()
