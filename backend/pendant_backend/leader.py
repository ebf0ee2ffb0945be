"""One active backend per database: a lock the active backend holds for the life of its process, and that
whatever holds it for us lets go when the process dies, `kill -9` included; a second backend waits for it
as a standby.

- SQLite: an exclusive `flock` on a file beside the database (`<database>.backend.lock`), which the kernel
  releases with the process. One machine only: SQLite (and `flock`) across machines is not supported.
- PostgreSQL: a session-level `pg_try_advisory_lock` on a connection of its own, which the server
  releases when that connection ends. The lease checks the connection every `WATCH_S`; once it is lost,
  the server has let go of the lock (or soon will), so another backend may become active: the lease says
  so (`Lease.lost`, `on_lost`) and the service stops (docs/operations.md, "Standby backend").

`acquire(db_url, stop)` tries, and while another process holds the lock logs once that it waits as a
standby and tries again every `poll_s`; it returns the `Lease`, or None if `stop` was set first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from pendant_backend import BackendError

log = logging.getLogger(__name__)

POLL_S = 0.5
# How often a PostgreSQL lease checks that its connection (and so the lock) is still there.
WATCH_S = 1.0
# The advisory lock's key ("pendactv"); the audit chain's transaction locks use another (db.AUDIT_LOCK_KEY).
ACTIVE_BACKEND_LOCK_KEY = 0x70656E6461637476
LOCK_SUFFIX = ".backend.lock"
# The lock's connection, on both ends: a peer that vanishes (a power cut, a cable) is noticed within
# about 10 s, the client first (it sends every WATCH_S and gives up after CLIENT_TIMEOUT_MS without an
# answer; the server waits longer), so that this backend has stopped before the server frees the lock.
CLIENT_TIMEOUT_MS = 5_000
SERVER_OPTIONS = " ".join(
    f"-c {name}={value}"
    for name, value in (
        ("tcp_keepalives_idle", 5),
        ("tcp_keepalives_interval", 2),
        ("tcp_keepalives_count", 3),
        ("tcp_user_timeout", 10_000),
    )
)


class Lease(Protocol):
    """The lock, held: `what` names it for messages, `waited_s` is how long the standby waited for it."""

    what: str
    waited_s: float
    lost: threading.Event

    def release(self) -> None:
        """Let go of the lock (a second call does nothing)."""


class _Lock(Protocol):
    what: str

    def try_take(self) -> Lease | None: ...


def lock_file(db_path: Path) -> Path:
    """The file the active backend holds a lock on, beside the SQLite database `db_path`."""
    return db_path.with_name(db_path.name + LOCK_SUFFIX)


class FileLease:
    """An exclusive `flock` on an open file; the kernel drops it when the file is closed or the process
    ends. The lock file is never deleted: a process that deleted it while another held it would make a
    second, unrelated lock."""

    def __init__(self, fd: int, what: str) -> None:
        self._fd: int | None = fd
        self.what = what
        self.waited_s = 0.0
        # A lock the kernel holds for us is never lost while we live.
        self.lost = threading.Event()

    def release(self) -> None:
        """Unlock and close the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class FileLock:
    """The SQLite database's lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.what = f"the lock file {path}"

    def try_take(self) -> FileLease | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot open {self.what} ({exc.strerror}): check the data folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise BackendError(f"cannot lock {self.what} ({exc.strerror}): is it on a local disk?") from None
        # For a person who looks: which process is active (the lock itself, not this text, is what counts).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return FileLease(fd, self.what)


class AdvisoryLease:
    """A session-level advisory lock on a PostgreSQL connection of its own, watched by a thread: when a
    check fails, the connection (and with it the lock) is gone: `lost` is set and `on_lost` called once."""

    def __init__(self, connection: Any, what: str, on_lost: Callable[[], None] | None) -> None:
        self._connection = connection
        self.what = what
        self.waited_s = 0.0
        self.lost = threading.Event()
        self._on_lost = on_lost
        self._released = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="active-lock", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._released.wait(WATCH_S):
            try:
                self._connection.execute("SELECT 1")
            except Exception as exc:  # psycopg.Error, or an OSError from a socket gone bad
                if self._released.is_set():
                    return
                log.error(
                    "lost the connection that holds %s (%s): this backend is no longer the active one",
                    self.what,
                    exc,
                )
                self.lost.set()
                if self._on_lost is not None:
                    self._on_lost()
                return

    def release(self) -> None:
        """Close the lock's connection: the server frees the lock with it."""
        if self._released.is_set():
            return
        self._released.set()
        if self._watcher is not threading.current_thread():
            self._watcher.join(WATCH_S + CLIENT_TIMEOUT_MS / 1000)
        with contextlib.suppress(Exception):
            self._connection.close()


class AdvisoryLock:
    """The PostgreSQL database's advisory lock."""

    def __init__(self, db_url: str, on_lost: Callable[[], None] | None) -> None:
        url = make_url(db_url).set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        shown = url.render_as_string(hide_password=True)
        self.what = f"the PostgreSQL advisory lock {ACTIVE_BACKEND_LOCK_KEY} on {shown}"
        self.on_lost = on_lost

    def try_take(self) -> AdvisoryLease | None:
        import psycopg

        try:
            connection = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=2,
                tcp_user_timeout=CLIENT_TIMEOUT_MS,
                options=SERVER_OPTIONS,
                application_name="pendant backend (active lock)",
            )
        except psycopg.OperationalError as exc:
            # A database that is down is retried like a lock held elsewhere: the standby waits for both.
            log.warning("cannot reach the database for %s (%s); trying again", self.what, exc)
            return None
        try:
            taken = connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (ACTIVE_BACKEND_LOCK_KEY,)
            ).fetchone()
        except psycopg.Error as exc:
            connection.close()
            log.warning("could not ask for %s (%s); trying again", self.what, exc)
            return None
        if not taken or not taken[0]:
            connection.close()
            return None
        return AdvisoryLease(connection, self.what, self.on_lost)


def lock_for(db_url: str, *, on_lost: Callable[[], None] | None = None) -> _Lock | None:
    """The lock for the database at `db_url`; None for one no other process can share (in-memory SQLite)."""
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        return AdvisoryLock(db_url, on_lost)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return FileLock(lock_file(Path(url.database)))
    return None


class NoLease:
    """For a database only this process can open: nothing to hold."""

    def __init__(self) -> None:
        self.what = "nothing (a private database)"
        self.waited_s = 0.0
        self.lost = threading.Event()

    def release(self) -> None:
        """Nothing to let go of."""


def acquire(
    db_url: str,
    stop: threading.Event,
    *,
    poll_s: float = POLL_S,
    on_lost: Callable[[], None] | None = None,
) -> Lease | None:
    """The lease of the active backend for `db_url`, once no other process holds it (waiting as a standby,
    trying every `poll_s`); None if `stop` is set while waiting. `on_lost` is called, on the lease's own
    thread, if a PostgreSQL lease loses its connection."""
    lock = lock_for(db_url, on_lost=on_lost)
    if lock is None:
        return NoLease()
    started = time.monotonic()
    waiting = False
    while True:
        lease = lock.try_take()
        if lease is not None:
            lease.waited_s = time.monotonic() - started if waiting else 0.0
            return lease
        if not waiting:
            log.info("standby: another backend holds %s; waiting to take over", lock.what)
            waiting = True
        if stop.wait(poll_s):
            log.info("standby: stopped while waiting; never became the active backend")
            return None
