"""The console's live connection: Server-Sent Events at /console/live.

One hub per web process polls the database a few times a second for what changed (new audit events
of alarms, health events, the ingest service's beat) and hands each change to every open console.
Polling the database, not the broker, is deliberate: the console and the ingest service are separate
processes (and may be separate machines), and the database is where an alarm exists once it is
committed, so an alarm on screen is an alarm that is stored.

What goes down the stream is only which alarm or device changed, never a position: the page then
fetches what it shows (a position through its own audited read). Every second a `status` event says
whether the ingest service is alive and connected to the broker, so a console whose live connection
or whose backend is down says so within seconds; on every (re)connect the page reloads what it shows,
which is how it catches up on what it missed.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pendant_backend import service_status, web_sessions
from pendant_backend.api.deps import SESSION_COOKIE, CallerDep
from pendant_backend.models import AuditEvent, HealthEvent, utc_now
from pendant_backend.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Audit events that change what an alarm view shows.
ALARM_KINDS = (
    "alarm_received",
    "alarm_acknowledged",
    "alarm_resolved",
    "alarm_escalated",
    "alarm_location",
    "alarm_fallback",
    "location_viewed",
    "command_sent",
    "command_answered",
    "alarm_exported",
    "export_verified",
)
# Audit events that change the fleet view.
DEVICE_KINDS = (
    "device_registered",
    "device_provisioned",
    "device_updated",
    "device_revoked",
    "device_rotated",
    "device_erased",
    "loan_changed",
    "loan_renewal",
    "device_recall",
    "config_published",
    "bench_report",
)
POLL_S = 0.2


STATUS_EVERY_S = 1.0
# The console says the live connection is down when nothing came for this long (status comes every 1 s).
SESSION_CHECK_S = 10.0
QUEUE_SIZE = 1000


@dataclass
class Change:
    """One thing that changed, as the page hears of it."""

    event: str  # alarm | fleet | status
    data: dict[str, Any]
    seq: int | None = None


@dataclass(eq=False)  # identity equality: each open console is its own subscriber
class Subscriber:
    """One open console: its queue of changes and whether it may hear of alarms."""

    alarms: bool
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False


class LiveHub:
    """Polls the database and fans changes out to every open console of this process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task | None = None
        self._last_seq = 0
        self._last_health = 0
        self._last_status = 0.0
        self.status: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Begin at the present: only what changes from now on is news."""
        self._loop = asyncio.get_running_loop()
        self._last_seq, self._last_health = await asyncio.to_thread(self._heads)
        self.status = await asyncio.to_thread(self._ingest_status)
        self._task = asyncio.create_task(self._run(), name="live-hub")

    def _end_streams(self) -> None:
        for subscriber in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.queue.put_nowait(None)

    def end_streams_threadsafe(self) -> None:
        """End every open stream, from any thread: the web server calls it when it is told to stop, so
        that it need not wait for connections that never end by themselves."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end_streams)

    async def stop(self) -> None:
        """End every open stream (their pages reconnect to whoever serves next) and the polling."""
        self._end_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, *, alarms: bool) -> Subscriber:
        subscriber = Subscriber(alarms=alarms)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def _heads(self) -> tuple[int, int]:
        with Session(self.engine) as session:
            seq = session.exec(select(func.max(AuditEvent.seq))).one() or 0
            health = session.exec(select(func.max(HealthEvent.id))).one() or 0
        return seq, health

    def _ingest_status(self) -> dict[str, Any]:
        status = service_status.latest(
            self.engine, now=utc_now(), stale_after_s=service_status.ingest_stale_after_s(self.settings)
        )
        data = asdict(status)
        data["started_at"] = data["started_at"].isoformat() if data.get("started_at") else None
        return data

    def _poll(self) -> list[Change]:
        changes: list[Change] = []
        with Session(self.engine) as session:
            events = list(
                session.exec(
                    select(AuditEvent.seq, AuditEvent.kind, AuditEvent.device_id, AuditEvent.alarm_pk)
                    .where(AuditEvent.seq > self._last_seq)
                    .order_by(col(AuditEvent.seq))
                    .limit(500)
                )
            )
            health = list(
                session.exec(
                    select(HealthEvent.id, HealthEvent.device_id, HealthEvent.aspect, HealthEvent.new)
                    .where(HealthEvent.id > self._last_health)
                    .order_by(col(HealthEvent.id))
                    .limit(500)
                )
            )
        for seq, kind, device_id, alarm_pk in events:
            self._last_seq = seq
            if kind in ALARM_KINDS and alarm_pk is not None:
                changes.append(Change("alarm", {"kind": kind, "alarm": alarm_pk, "device": device_id}, seq))
            elif kind in DEVICE_KINDS:
                changes.append(Change("fleet", {"kind": kind, "device": device_id}, seq))
        for pk, device_id, aspect, new in health:
            self._last_health = pk
            changes.append(
                Change("fleet", {"kind": "health", "device": device_id, "aspect": aspect, "new": new})
            )
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.status = self._ingest_status()
            changes.append(Change("status", {"ingest": self.status, "at": utc_now().isoformat()}))
        return changes

    async def _run(self) -> None:
        while True:
            try:
                changes = await asyncio.to_thread(self._poll)
            except Exception:
                # A database hiccup: the consoles keep their connection; the next poll tries again.
                log.exception("the live console could not read the database; trying again")
                changes = []
            for change in changes:
                self._fan_out(change)
            await asyncio.sleep(POLL_S)

    def _fan_out(self, change: Change) -> None:
        for subscriber in list(self.subscribers):
            if change.event == "alarm" and not subscriber.alarms:
                continue
            try:
                subscriber.queue.put_nowait(change)
            except asyncio.QueueFull:
                # A console that cannot keep up is cut off; it reconnects and reloads what it shows.
                subscriber.overflowed = True


def sse(event: str, data: dict[str, Any], seq: int | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/console/live")
async def live(request: Request, caller: CallerDep) -> StreamingResponse:
    """The stream of changes for this console: `hello` first, then `alarm`, `fleet` and `status`
    events; `session_ended` (and the end of the stream) when the login is no longer valid."""
    hub: LiveHub = request.app.state.hub
    engine, settings = request.app.state.engine, request.app.state.settings
    subscriber = hub.subscribe(alarms=caller.person.can("alarms.read"))
    token = request.cookies.get(SESSION_COOKIE)

    async def stream():  # noqa: ANN202 - an async generator
        try:
            yield "retry: 2000\n" + sse(
                "hello", {"user": caller.username, "ingest": hub.status, "at": utc_now().isoformat()}
            )
            checked = time.monotonic()
            while True:
                try:
                    change = await asyncio.wait_for(subscriber.queue.get(), timeout=STATUS_EVERY_S * 3)
                except TimeoutError:
                    change = Change("status", {"ingest": hub.status, "at": utc_now().isoformat()})
                if change is None or subscriber.overflowed:
                    return
                if caller.via == "session" and time.monotonic() - checked >= SESSION_CHECK_S:
                    checked = time.monotonic()
                    still = await asyncio.to_thread(
                        web_sessions.lookup,
                        engine,
                        token,
                        idle=timedelta(minutes=settings.session_idle_min),
                    )
                    if still is None:
                        yield sse("session_ended", {"reason": "your session has ended: log in again"})
                        return
                yield sse(change.event, change.data, change.seq)
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
