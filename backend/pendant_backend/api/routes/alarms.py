"""The alarms: the list and one alarm (alarms.read, never a position), its location and trail
(alarms.location, each read an audit event), its audit timeline (alarms.read), acknowledging and
resolving it under the caller's username (alarms.handle; a test alarm also with alarms.handle_test),
and a `locate` command to its pendant (alarms.handle).

`{ref}` is the alarm's number (`17`) or `<device_id>/<alarm_id>` (`pd-0001/12-3`, `#` sent as `%23`
after an alarm id was reused), which is why the sub-resources are declared before the alarm itself.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Engine

from pendant_backend import BackendError, alarms, audit, cells, commands, locations, queries
from pendant_backend.api.deps import Caller, CallerDep, EngineDep, SettingsDep, refuse, require
from pendant_backend.api.schemas import (
    AlarmPublic,
    AlarmResolve,
    AlarmState,
    CellAreaPublic,
    CellPublic,
    CommandPublic,
    LocationPublic,
    PositionPublic,
    TimelineEventPublic,
    TrailPointPublic,
    problems,
)
from pendant_backend.models import Alarm
from pendant_backend.roles import handling_permission, who_can

log = logging.getLogger(__name__)

router = APIRouter(prefix="/alarms", tags=["alarms"], responses=problems(401, 403))

Reader = Annotated[Caller, require("alarms.read")]
LocationReader = Annotated[Caller, require("alarms.location")]
Handler = Annotated[Caller, require("alarms.handle")]
AlarmRef = Annotated[
    str, Path(description="the alarm's number (`17`) or `<device_id>/<alarm_id>` (`pd-0001/12-3`)")
]
# Alarm numbers are 32-bit on PostgreSQL: a longer number names no alarm (and must not reach the query).
MAX_ALARM_NUMBER = 2**31 - 1
# A position is read afresh (and recorded) each time: no cache or proxy may keep a copy.
NO_STORE = "no-store"


def _find(request: Request, engine: Engine, ref: str, caller: Caller) -> Alarm:
    alarm = None
    if not ref.isdigit() or int(ref) <= MAX_ALARM_NUMBER:
        alarm = queries.find_alarm(engine, ref)
    if alarm is None:
        raise refuse(request, 404, f"there is no alarm {ref}: see GET /api/v1/alarms", caller.username)
    return alarm


def _find_to_handle(request: Request, engine: Engine, ref: str, caller: Caller) -> Alarm:
    """The alarm, if the caller may acknowledge and resolve it: alarms.handle, or alarms.handle_test
    for a test alarm (the bench test); 403 before the alarm is looked up for those who may do neither."""
    person = caller.person
    if not person.can("alarms.handle_test"):
        raise refuse(
            request, 403, f"acting on alarms needs the role {who_can('alarms.handle')}", caller.username
        )
    alarm = _find(request, engine, ref, caller)
    if not person.can(handling_permission(alarm.test)):
        raise refuse(
            request,
            403,
            f"alarm {alarm.ref} is not a test alarm: acting on it needs the role {who_can('alarms.handle')}",
            caller.username,
        )
    return alarm


@router.get("")
def list_alarms(
    caller: Reader,
    engine: EngineDep,
    device_id: Annotated[str | None, Query(description="only this pendant's alarms")] = None,
    state: Annotated[AlarmState | None, Query(description="only alarms in this state")] = None,
    open_only: Annotated[bool, Query(description="only alarms not resolved yet")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[AlarmPublic]:
    """Alarms, newest first, without positions."""
    found = queries.list_alarms(engine, device_id=device_id, state=state, open_only=open_only, limit=limit)
    return [AlarmPublic.of(alarm) for alarm in found]


@router.get("/{ref:path}/location", responses=problems(404))
def get_location(
    request: Request,
    response: Response,
    caller: LocationReader,
    engine: EngineDep,
    settings: SettingsDep,
    ref: AlarmRef,
) -> LocationPublic:
    """Where the alarm says the person is: its fix, or its cell and the cell's area, and its trail.
    Every call is a `location_viewed` audit event."""
    alarm = _find(request, engine, ref, caller)
    try:
        view = locations.read(engine, alarm_pk=alarm.id, person=caller.person, via="api")
    except KeyError:
        raise refuse(request, 404, f"there is no alarm {ref} any more", caller.username) from None
    response.headers["Cache-Control"] = NO_STORE
    area = None
    if view.position is None and view.cell:
        try:
            found = cells.lookup(settings.cell_db, view.cell)
        except BackendError as exc:
            # The location itself was read (and recorded); only the cell's area is missing.
            log.error("cell area of alarm %s not looked up: %s", view.alarm.ref, exc)
            found = None
        if found is not None:
            area = CellAreaPublic(lat=found.lat, lon=found.lon, range_m=found.range_m, source=found.source)
    return LocationPublic(
        alarm_id=view.alarm.id,
        ref=view.alarm.ref,
        state=view.alarm.state,
        location_kind=locations.location_kind(view.alarm),
        position=PositionPublic.model_validate(view.position) if view.position else None,
        cell=CellPublic.model_validate(view.cell) if view.cell else None,
        cell_area=area,
        trail=[TrailPointPublic.of(point) for point in view.trail],
    )


@router.get("/{ref:path}/trail", responses=problems(404))
def get_trail(
    request: Request,
    response: Response,
    caller: LocationReader,
    engine: EngineDep,
    ref: AlarmRef,
    after_point: Annotated[int | None, Query(ge=0, description="only points after this one")] = None,
) -> list[TrailPointPublic]:
    """The alarm's trail, oldest first. Every call is a `location_viewed` audit event."""
    alarm = _find(request, engine, ref, caller)
    try:
        view = locations.read(
            engine, alarm_pk=alarm.id, person=caller.person, via="api", after_point=after_point
        )
    except KeyError:
        raise refuse(request, 404, f"there is no alarm {ref} any more", caller.username) from None
    response.headers["Cache-Control"] = NO_STORE
    return [TrailPointPublic.of(point) for point in view.trail]


@router.get("/{ref:path}/timeline", responses=problems(404))
def get_timeline(
    request: Request, caller: Reader, engine: EngineDep, ref: AlarmRef
) -> list[TimelineEventPublic]:
    """The alarm's audit events, oldest first: received, escalated, viewed, acknowledged, resolved..."""
    alarm = _find(request, engine, ref, caller)
    return [TimelineEventPublic.of(event) for event in audit.alarm_events(engine, alarm.id)]


@router.post("/{ref:path}/ack", responses=problems(404, 409))
def acknowledge(request: Request, caller: CallerDep, engine: EngineDep, ref: AlarmRef) -> AlarmPublic:
    """Take the alarm, under the caller's username; the pendant is told. 409 if it is not waiting."""
    alarm = _find_to_handle(request, engine, ref, caller)
    return AlarmPublic.of(alarms.acknowledge_alarm(engine, ref=str(alarm.id), operator=caller.username))


@router.post("/{ref:path}/resolve", responses=problems(404, 409))
def resolve(
    request: Request, caller: CallerDep, engine: EngineDep, ref: AlarmRef, body: AlarmResolve
) -> AlarmPublic:
    """Close an acknowledged alarm with a class and a note, under the caller's username. 409 if it is
    not acknowledged (or already resolved); 422 for a class that does not exist."""
    alarm = _find_to_handle(request, engine, ref, caller)
    closed = alarms.resolve_alarm(
        engine,
        ref=str(alarm.id),
        operator=caller.username,
        resolution=body.resolution,
        note=body.note.strip(),
    )
    return AlarmPublic.of(closed)


@router.post("/{ref:path}/locate", status_code=202, responses=problems(404, 409))
def locate(request: Request, caller: Handler, engine: EngineDep, ref: AlarmRef) -> CommandPublic:
    """Ask the pendant for a fresh fix (a `locate` command); its answer joins the alarm's trail.
    202: the command is queued for the pendant. 409 for a resolved alarm or a revoked pendant."""
    alarm = _find(request, engine, ref, caller)
    if alarm.state == "resolved":
        raise refuse(
            request, 409, f"alarm {alarm.ref} is resolved: there is nothing to locate", caller.username
        )
    try:
        command = commands.send(
            engine, device_id=alarm.device_id, cmd="locate", requested_by=caller.username, alarm_pk=alarm.id
        )
    except commands.CommandError as exc:
        raise refuse(request, 409, str(exc), caller.username) from None
    return CommandPublic.of(command)


@router.get("/{ref:path}", responses=problems(404))
def get_alarm(request: Request, caller: Reader, engine: EngineDep, ref: AlarmRef) -> AlarmPublic:
    """One alarm, without its position."""
    return AlarmPublic.of(_find(request, engine, ref, caller))
