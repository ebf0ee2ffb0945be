"""Durable queue of unacknowledged messages: one file per message in outbox/, oldest first.

A message is written to `<n>.tmp` and renamed to `<n>.msg`, so a power cut leaves no file, a complete
`.msg`, or a `.tmp`. At start a complete `.tmp` (its payload parses) is kept, a torn one deleted: nothing
handed to `put` is lost and nothing half-written is sent. A file holds the topic under the device root,
a newline, and the payload.
"""

import json
import os

from . import log
from .state import replace_file


class Outbox:
    """The queue in one folder (default `outbox` in the current directory, the flash root)."""

    def __init__(self, path="outbox"):
        self._dir = path + "/"
        try:
            os.mkdir(path)
        except OSError:
            pass  # it exists already
        self._next = 1
        for name in os.listdir(path):
            if name.endswith(".tmp"):
                tmp = self._dir + name
                try:
                    json.loads(self.read(name, tmp)[1])
                    replace_file(tmp, tmp[:-4] + ".msg")
                    log("outbox", "kept complete " + name)
                except (TypeError, ValueError):
                    os.remove(tmp)
                    log("outbox", "dropped torn " + name)
        for name in self.names():
            self._next = max(self._next, int(name[:-4]) + 1)

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
        name = "%08d.msg" % self._next
        self._next += 1
        self.replace(name, topic, payload)
        return name

    def replace(self, name, topic, payload):
        """Write, or atomically rewrite, message `name`."""
        tmp = self._dir + name[:-4] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(topic.encode() + b"\n" + payload)
        replace_file(tmp, self._dir + name)

    def read(self, name, path=None):
        """(topic, payload bytes) of a queued message, or None if it is gone or has no topic line."""
        try:
            with open(path or self._dir + name, "rb") as f:
                body = f.read()
        except OSError:
            return None
        newline = body.find(b"\n")
        return (body[:newline].decode(), body[newline + 1 :]) if newline > 0 else None

    def remove(self, name):
        """Drop a message (after its acknowledgement); a missing file is no error."""
        try:
            os.remove(self._dir + name)
        except OSError:
            pass  # already gone: the outcome wanted
