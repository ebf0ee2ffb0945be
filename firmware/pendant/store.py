"""What the pendant keeps on flash, written so that a power cut at any instant leaves the old or the new
content and never a torn one: every file is written to `<path>.tmp` and renamed over `<path>`.

- `State`, state.json: the boot counter, the alarm sequence within the boot, the MQTT session counter,
  and the alarm that is open (location updates go on until the backend resolves it). Every change is on
  flash before the new value is used, so an alarm id or a session number is never handed out twice. A
  pendant without any state (new, or re-flashed and wiped) starts its boot counter at a random number
  below 2**29, so its alarm ids do not repeat the ids it used before the wipe (docs/protocol.md).
- `Outbox`, outbox/: the queue of unsent or unacknowledged messages, one file `<n>.msg` each (the
  topic under the device root, a newline, the payload), oldest first. A message may have a note,
  `outbox-fb/<n>.fb` (the fallback's progress for an alarm), removed with it. The notes have a folder
  of their own so that the outbox folder holds exactly the queued messages.
- `Note`: the fallback's progress, the content of a note.
Reading them at start, and tidying what a power cut left, is in boot.py (it runs once).
"""

import json
import os


def write(path, data):
    """Write data (str or bytes) to path atomically; where the filesystem will not rename over a file
    (FAT), the old one is removed first (a cut there leaves `<path>.tmp`, which the readers look at)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


class State:
    """The counters, as attributes boot, seq, sess, and open (an alarm id or None); boot.py reads them
    at start."""

    def __init__(self, saved):
        self.boot, self.seq, self.sess, self.open = saved

    def save(self):
        """Write the counters to flash (after changing them)."""
        write("state.json", '{"boot":%d,"seq":%d,"sess":%d,"open":%s}' % (
            self.boot, self.seq, self.sess, json.dumps(self.open)))

    def next_alarm_id(self, open_it=False):
        """A new alarm id `<boot>-<seq>`, on flash before it is returned; with open_it, it is also the
        open alarm from now on."""
        self.seq += 1
        alarm_id = "%d-%d" % (self.boot, self.seq)
        if open_it:
            self.open = alarm_id
        self.save()
        return alarm_id


class Note:
    """The SMS and call fallback's progress for one alarm (fallback.py), kept in the alarm's note as a
    JSON list in the order of the attributes below."""

    def __init__(self, saved=None):
        (self.sent,  # numbers the SMS reached
         self.failed,  # numbers it did not reach (yet)
         self.calls,  # calls made
         self.answered,  # the number that answered, or None
         self.talked,  # seconds talked
         self.rounds,  # rounds done
         self.over,  # the fallback is over
         self.tried,  # numbers tried this round (SMS)
         self.next_call,  # the index of the next call this round
         self.dialled,  # the number being called, or None
         ) = saved or ([], [], 0, None, 0, 0, False, [], 0, None)

    def dumps(self):
        """The note as stored (JSON)."""
        return json.dumps([self.sent, self.failed, self.calls, self.answered, self.talked, self.rounds,
                           self.over, self.tried, self.next_call, self.dialled])


def load_note(data):
    """The Note stored as data (bytes), or None when there is none or it is not one (the `{}` written at
    a press without a data path means: started, no progress yet)."""
    try:
        saved = json.loads(data)
    except (TypeError, ValueError):
        return None
    return Note(saved) if type(saved) is list and len(saved) == 10 else None


class Outbox:
    """The queue in one folder (default `outbox` in the current directory, the flash root)."""

    def __init__(self, path="outbox"):
        self._dir = path + "/"
        self.notes = path + "-fb/"  # the notes' folder
        self.next_number = 1  # of the next message (boot.py sets it after looking at the folder)

    def names(self):
        """Names of the queued messages, oldest first."""
        names = []
        for name in os.listdir(self._dir[:-1]):
            if name.endswith(".msg") and name[:-4].isdigit():
                names.append(name)
        names.sort()
        return names

    def put(self, topic, payload):
        """Queue a message durably; return its name."""
        name = "%08d.msg" % self.next_number
        self.next_number += 1
        write(self._dir + name, topic.encode() + b"\n" + payload)
        return name

    def read(self, name):
        """(topic, payload bytes) of a queued message, or None if it is gone or has no topic line."""
        try:
            with open(self._dir + name, "rb") as f:
                body = f.read()
        except OSError:
            return None
        newline = body.find(b"\n")
        return (body[:newline].decode(), body[newline + 1 :]) if newline > 0 else None

    def remove(self, name):
        """Drop a message (after its acknowledgement) and its note; a missing file is no error."""
        for path in (self._dir + name, self.notes + name[:-4] + ".fb"):
            try:
                os.remove(path)
            except OSError:
                pass  # already gone, or never written: the outcome wanted

    def put_note(self, name, data):
        """Write, or atomically rewrite, the note (bytes) of message `name`."""
        write(self.notes + name[:-4] + ".fb", data)

    def note(self, name):
        """The note of message `name` (bytes), or None."""
        try:
            with open(self.notes + name[:-4] + ".fb", "rb") as f:
                return f.read()
        except OSError:
            return None
