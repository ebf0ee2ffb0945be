"""Persisted counters in state.json: boot counter, alarm sequence within the boot, MQTT session counter.

Every change is on flash before the new value is used, so an alarm id or a session number is never
handed out twice. It is written to state.tmp, which then replaces state.json: a power cut leaves the
old or the new state, never a torn one.
"""

import json
import os

from . import log


def replace_file(name, path):
    """Rename file `name` over `path`; where the filesystem will not overwrite (FAT), remove path first."""
    try:
        os.rename(name, path)
    except OSError:
        os.remove(path)
        os.rename(name, path)


class State:
    """The counters, as attributes boot, seq and sess."""

    def __init__(self):
        self.boot = self.seq = self.sess = 0
        for path in ("state.json", "state.tmp"):  # state.tmp: the FAT fallback above was cut short
            try:
                with open(path) as f:
                    saved = json.load(f)
                self.boot, self.seq, self.sess = saved["boot"], saved["seq"], saved["sess"]
                return
            except OSError:
                pass  # no such file: try the next, or start from zero
            except (ValueError, KeyError, TypeError):
                log("state", "unreadable " + path)

    def _save(self):
        with open("state.tmp", "wb") as f:
            f.write(b'{"boot":%d,"seq":%d,"sess":%d}' % (self.boot, self.seq, self.sess))
        replace_file("state.tmp", "state.json")

    def begin_boot(self, boot=0):
        """Count this boot, above `boot` (the highest boot seen in the outbox), and restart the sequence."""
        self.boot = max(self.boot, boot) + 1
        self.seq = 0
        self._save()
        log("state", "boot counter %d" % self.boot)

    def next_alarm_id(self):
        """A new alarm id `<boot>-<seq>`, on flash before it is returned."""
        self.seq += 1
        self._save()
        return "%d-%d" % (self.boot, self.seq)

    def next_sess(self):
        """The next MQTT session number, on flash before it is returned."""
        self.sess += 1
        self._save()
        return self.sess
