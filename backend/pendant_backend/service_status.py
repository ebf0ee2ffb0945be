"""Whether the ingest service is alive: each running backend writes a beat (a `service_beats` row) on
every rules tick and a last one when it stops; the console reads the newest to say whether alarms can
arrive at all.

A beat holds wall-clock times: it is read by other processes, on other machines, against their own
clock. `classify` is the pure rule; the rest are thin reads and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from pendant_backend.db import session_scope
from pendant_backend.models import ServiceBeat
from pendant_backend.settings import Settings

STATES = ("running", "stale", "stopped", "never")
# Missed beats (rules ticks) before a backend that did not say it stopped counts as gone.
MISSED_TICKS = 3
# A rules tick itself takes time (a health sweep, the hourly retention purge): the allowance for it.
MARGIN_S = 5.0
# Rows of backends that have not beaten for this long are deleted (one row per process ever started).
FORGET_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class IngestStatus:
    """What the console shows about ingest. `age_s` is the time since the beat it is based on (None
    for `never`); `host` and `started_at` name the backend that wrote it."""

    state: str
    age_s: float | None
    broker_connected: bool
    webhook_configured: bool
    host: str | None
    started_at: datetime | None


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored in UTC), PostgreSQL the session's time zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def ingest_stale_after_s(settings: Settings) -> float:
    """How old the newest beat may be before ingest counts as gone: a few rules ticks and a margin."""
    return MISSED_TICKS * settings.rules_interval_s + MARGIN_S


def instance_name(host: str, pid: int, started_at: datetime) -> str:
    """The row a backend writes: one per host, process and start (a process may start one again)."""
    return f"{host[:32]}:{pid}:{_utc(started_at).timestamp():.6f}"[:64]


def _row(session: Session, *, host: str, pid: int, started_at: datetime, now: datetime) -> ServiceBeat:
    name = instance_name(host, pid, started_at)
    row = session.get(ServiceBeat, name)
    if row is None:
        # A new backend: forget those that have been silent for long (one row per start otherwise grows).
        session.execute(delete(ServiceBeat).where(col(ServiceBeat.beat_at) < now - FORGET_AFTER))
        row = ServiceBeat(instance=name, host=host[:64], pid=pid, started_at=started_at, beat_at=now)
    return row


def beat(
    engine: Engine,
    *,
    host: str,
    started_at: datetime,
    broker_connected: bool,
    webhook_configured: bool,
    now: datetime,
    pid: int | None = None,
    stopping: bool = False,
) -> None:
    """Record that this backend (host, process `pid`, started at `started_at`) is alive at `now`; with
    `stopping`, that it stopped on purpose at `now` (the console says so at once)."""
    with session_scope(engine) as session:
        row = _row(
            session, host=host, pid=os.getpid() if pid is None else pid, started_at=started_at, now=now
        )
        row.beat_at, row.stopped_at = now, now if stopping else None
        row.broker_connected = broker_connected and not stopping
        row.webhook_configured = webhook_configured
        session.add(row)


def stopped(
    engine: Engine,
    *,
    host: str,
    started_at: datetime,
    webhook_configured: bool,
    now: datetime,
    pid: int | None = None,
) -> None:
    """Record that this backend stopped on purpose at `now`: the console says so at once."""
    beat(
        engine,
        host=host,
        started_at=started_at,
        broker_connected=False,
        webhook_configured=webhook_configured,
        now=now,
        pid=pid,
        stopping=True,
    )


def classify(beats: list[ServiceBeat], *, now: datetime, stale_after_s: float) -> IngestStatus:
    """Pure: the status from every backend's last beat. Running if any backend beat recently and has not
    stopped; otherwise the newest beat says whether the last one stopped or just went silent."""
    if not beats:
        return IngestStatus("never", None, False, False, None, None)

    def age(row: ServiceBeat) -> float:
        # A beat a little ahead of our clock (another machine) is a fresh one, not a negative age.
        return max((now - _utc(row.beat_at)).total_seconds(), 0.0)

    newest_first = sorted(beats, key=lambda row: _utc(row.beat_at), reverse=True)
    live = [row for row in newest_first if row.stopped_at is None and age(row) <= stale_after_s]
    if live:
        # Of several live backends, one that reaches the broker speaks for ingest.
        row = next((r for r in live if r.broker_connected), live[0])
        state = "running"
    else:
        row = newest_first[0]
        state = "stopped" if row.stopped_at is not None else "stale"
    return IngestStatus(
        state=state,
        age_s=age(row),
        broker_connected=row.broker_connected and state == "running",
        webhook_configured=row.webhook_configured,
        host=row.host,
        started_at=_utc(row.started_at),
    )


def latest(engine: Engine, *, now: datetime, stale_after_s: float) -> IngestStatus:
    """The ingest status the console shows: `running`, `stale` (no beat for `stale_after_s`), `stopped`
    (it said so) or `never` (no backend ever ran on this database)."""
    with Session(engine) as session:
        beats = list(session.exec(select(ServiceBeat).order_by(col(ServiceBeat.beat_at).desc()).limit(20)))
    return classify(beats, now=now, stale_after_s=stale_after_s)
