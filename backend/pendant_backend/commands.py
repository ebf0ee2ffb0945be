"""Commands to pendants (`cmd`) and their answers (`cmd/res`), kept in the `commands` table.

`send` records who asked for what (an audit event) and queues the message in the same transaction;
the running backend publishes it (pendant_backend.outbound). `record_result` stores the pendant's
answer; a `locate` answer with a position joins the trail of the alarm it was sent for (or of every
open alarm of the pendant), so that the dispatcher sees it on the map.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pendant_backend import BackendError, audit, outbound, payloads
from pendant_backend.db import session_scope
from pendant_backend.models import Alarm, Command, Device, Outbound, utc_now

log = logging.getLogger(__name__)

# A command older than this is not sent again after a broker crash: the broker drops the session of a
# pendant offline this long (persistent_client_expiration), and with it every command queued for it.
RESEND_WITHIN = timedelta(days=90)


class CommandError(BackendError):
    """A command that cannot be sent; the message says why."""


def new_command_id() -> str:
    """A correlation id: `c-` and 12 hex digits."""
    return f"c-{secrets.token_hex(6)}"


def send(
    engine: Engine,
    *,
    device_id: str,
    cmd: str,
    requested_by: str,
    alarm_pk: int | None = None,
    args: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Command:
    """Queue `cmd` for the pendant and record it; returns the stored command (its `command_id` is on
    the wire)."""
    if cmd not in payloads.COMMANDS:
        raise CommandError(
            f"{cmd!r} is not a command: the commands are {', '.join(sorted(payloads.COMMANDS))}"
        )
    now = now or utc_now()
    message = payloads.Command(id=new_command_id(), cmd=cmd, args=dict(args or {}))
    with session_scope(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise CommandError(f"there is no device {device_id}: see `pendant fleet`")
        if device.revoked_at is not None:
            raise CommandError(f"{device_id} is revoked: it cannot receive commands")
        row = Command(
            command_id=message.id,
            device_id=device_id,
            cmd=cmd,
            args=dict(args) if args else None,
            alarm_pk=alarm_pk,
            requested_by=requested_by,
            created_at=now,
        )
        session.add(row)
        outbound.enqueue(
            session,
            topic=payloads.topic_for(device_id, "cmd"),
            payload=payloads.encode_command(message),
            now=now,
        )
        session.flush()
        audit.append(
            session,
            kind="command_sent",
            at=now,
            actor=requested_by,
            device_id=device_id,
            alarm_pk=alarm_pk,
            data={"command": message.id, "cmd": cmd},
        )
    log.info(
        "command %s %s queued for %s by %s",
        message.id,
        cmd,
        device_id,
        requested_by,
        extra={"device_id": device_id},
    )
    return row


def message_for(row: Command) -> bytes:
    """Pure: the `cmd` payload of a stored command, as it was first sent."""
    return payloads.encode_command(
        payloads.Command(id=row.command_id, cmd=row.cmd, args=dict(row.args or {}))
    )


def command_id_of(payload: str) -> str | None:
    """Pure: the command id in a `cmd` payload of the outbound table, or None."""
    try:
        value = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def answered_messages(session: Session, messages: Iterable[Outbound]) -> set[int]:
    """The ids of those outbound `cmd` messages whose command the pendant has answered already."""
    by_command = {
        command_id: message.id
        for message in messages
        if message.id is not None
        and message.topic.endswith("/cmd")
        and (command_id := command_id_of(message.payload)) is not None
    }
    if not by_command:
        return set()
    answered = session.exec(
        select(Command.command_id).where(
            col(Command.command_id).in_(list(by_command)), col(Command.answered_at).is_not(None)
        )
    )
    return {by_command[command_id] for command_id in answered}


def send_unanswered_again(session: Session, *, now: datetime) -> int:
    """Queue again, in the caller's transaction, every command not answered yet (of the last
    RESEND_WITHIN, to a device not revoked) that no outbound message waits to carry; returns how many.
    For a broker that lost the queues of the pendants' sessions. The pendant must treat a command id
    it has carried out already as done (firmware/pendant/commands.py)."""
    waiting = {
        command_id_of(payload)
        for payload in session.exec(
            select(Outbound.payload).where(
                col(Outbound.sent_at).is_(None), col(Outbound.topic).endswith("/cmd")
            )
        )
    }
    rows = session.exec(
        select(Command)
        .join(Device, col(Device.device_id) == col(Command.device_id))
        .where(
            col(Command.answered_at).is_(None),
            Command.created_at >= now - RESEND_WITHIN,
            col(Device.revoked_at).is_(None),
        )
        .order_by(col(Command.id))
    )
    count = 0
    for row in rows:
        if row.command_id in waiting:
            continue
        outbound.enqueue(
            session, topic=payloads.topic_for(row.device_id, "cmd"), payload=message_for(row), now=now
        )
        count += 1
    return count


def located_by(result: payloads.CommandResult) -> payloads.Location | None:
    """The valid position in a successful answer's fields (a `locate` answer's); None without one."""
    raw_loc = (result.fields or {}).get("loc")
    if not result.ok or not isinstance(raw_loc, dict):
        return None
    try:
        return payloads.parse_location(raw_loc)
    except payloads.InvalidPayload:
        return None  # record_result logs why


def record_result(
    session: Session, *, device_id: str, result: payloads.CommandResult, now: datetime
) -> Command | None:
    """Store a `cmd/res` in the caller's transaction; None (logged) for an id we never sent."""
    from pendant_backend import alarms  # alarms imports this module's callers; import here, not above

    row = session.exec(
        select(Command).where(Command.command_id == result.id, Command.device_id == device_id)
    ).first()
    if row is None:
        log.info(
            "cmd/res %s from %s answers no command of ours",
            result.id,
            device_id,
            extra={"device_id": device_id},
        )
        return None
    if row.answered_at is not None:
        return row
    row.answered_at, row.ok, row.err = now, result.ok, result.err
    row.result = dict(result.fields) if result.fields else None
    session.add(row)
    audit.append(
        session,
        kind="command_answered",
        at=now,
        device_id=device_id,
        alarm_pk=row.alarm_pk,
        data={"command": row.command_id, "cmd": row.cmd, "ok": result.ok},
    )
    raw_loc = (result.fields or {}).get("loc")
    if row.cmd == "locate" and result.ok and isinstance(raw_loc, dict):
        try:
            loc = payloads.parse_location(raw_loc)
        except payloads.InvalidPayload as exc:
            log.warning("ignored the position in the locate answer of %s: %s", device_id, exc.detail)
            return row
        targets = alarms.open_alarms(session, device_id)
        if row.alarm_pk is not None:
            own = session.get(Alarm, row.alarm_pk)
            if own is not None and own.state != "resolved" and own not in targets:
                targets.append(own)
        for alarm in targets:
            alarms.add_trail_point(session, alarm, at=now, loc=loc, source="locate")
    return row


def for_alarm(engine: Engine, alarm_pk: int) -> list[Command]:
    """The commands sent for one alarm, oldest first."""
    with Session(engine) as session:
        return list(
            session.exec(select(Command).where(Command.alarm_pk == alarm_pk).order_by(col(Command.id)))
        )
