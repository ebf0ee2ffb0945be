"""The dispatcher's pages: the live alarm queue and the alarm view (details, map, actions).

Routes are thin: they check the permission (pendant_backend.api.deps.require), call the backend's
functions (alarms, commands, locations) and render a template. Partials (`/console/queue`,
`/console/alarms/<n>/details`) are what the page reloads when the live connection says something
changed. The position is served only by `/console/alarms/<n>/location.json`, whose every call is an
audit event.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from pendant_backend import alarms, cells, commands, lifecycle, locations, roles
from pendant_backend.api.deps import Caller, CallerDep, EngineDep, SettingsDep, refuse, require
from pendant_backend.console import data, views
from pendant_backend.console.render import page
from pendant_backend.models import iso, utc_now

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

Reader = Annotated[Caller, require("alarms.read")]
Handler = Annotated[Caller, require("alarms.read")]
# Bounded to the database's integer column: a longer number is a 422, not a database error.
AlarmNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="the alarm's number")]


def _detail_or_404(request: Request, engine, pk: int, caller: Caller) -> data.AlarmDetail:  # noqa: ANN001
    found = data.alarm_detail(engine, pk, caller.person)
    if found is None:
        raise refuse(request, 404, f"there is no alarm #{pk}", caller.username)
    return found


def _may_handle(caller: Caller, detail: data.AlarmDetail) -> bool:
    return caller.person.can(roles.handling_permission(detail.alarm.test))


def _check_handle(request: Request, caller: Caller, detail: data.AlarmDetail) -> None:
    if not _may_handle(caller, detail):
        raise refuse(
            request,
            403,
            "your roles do not allow acting on alarms: it needs a dispatcher or a supervisor",
            caller.username,
        )


@router.get("/")
def home(request: Request, caller: CallerDep) -> Response:
    """The dispatcher's queue, or the fleet view for those who do not handle alarms."""
    return RedirectResponse("/console" if caller.person.can("alarms.read") else "/fleet", status_code=303)


def _dispatch_page(request: Request, engine, caller: Caller, selected: data.AlarmDetail | None) -> Response:  # noqa: ANN001
    return page(
        request,
        "dispatch.html",
        {
            "queue": data.queue(engine, caller.person, now=utc_now()),
            "detail": selected,
            "may_handle": selected is not None and _may_handle(caller, selected),
            "resolutions": lifecycle.RESOLUTIONS,
        },
    )


@router.get("/console", response_class=HTMLResponse)
def dispatch(request: Request, engine: EngineDep, caller: Reader) -> Response:
    """The live alarm queue; an alarm view opens beside it."""
    return _dispatch_page(request, engine, caller, None)


@router.get("/console/alarms/{pk}", response_class=HTMLResponse)
def dispatch_alarm(request: Request, engine: EngineDep, caller: Reader, pk: AlarmNumber) -> Response:
    """The queue with one alarm open beside it."""
    return _dispatch_page(request, engine, caller, _detail_or_404(request, engine, pk, caller))


@router.get("/console/queue", response_class=HTMLResponse)
def queue_partial(request: Request, engine: EngineDep, caller: Reader) -> Response:
    """The queue alone (the page reloads it when an alarm changes)."""
    return page(request, "_queue.html", {"queue": data.queue(engine, caller.person, now=utc_now())})


@router.get("/console/alarms/{pk}/details", response_class=HTMLResponse)
def details_partial(request: Request, engine: EngineDep, caller: Reader, pk: AlarmNumber) -> Response:
    """One alarm's details, actions and timeline (no position)."""
    detail = _detail_or_404(request, engine, pk, caller)
    return page(
        request,
        "_alarm.html",
        {"detail": detail, "may_handle": _may_handle(caller, detail), "resolutions": lifecycle.RESOLUTIONS},
    )


@router.get("/console/alarms/{pk}/location.json")
def location(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: Annotated[Caller, require("alarms.location")],
    pk: AlarmNumber,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> JSONResponse:
    """The alarm's position, cell (and the cell's area, when the cell database knows it) and trail
    (after trail point `after`, for live updates). Every call is a `location_viewed` audit event."""
    try:
        view = locations.read(engine, alarm_pk=pk, person=caller.person, via="console", after_point=after)
    except KeyError:
        raise refuse(request, 404, f"there is no alarm #{pk}", caller.username) from None
    area = None
    if view.position is None and view.cell:
        found = cells.lookup(settings.cell_db, view.cell)
        if found is not None:
            area = {"lat": found.lat, "lon": found.lon, "range_m": found.range_m, "source": found.source}
    return JSONResponse(
        {
            "alarm": pk,
            "state": view.alarm.state,
            "position": view.position,
            "cell": view.cell,
            "cell_text": views.cell_text(view.cell),
            "cell_area": area,
            "cell_db": bool(settings.cell_db),
            "trail": [
                {
                    "id": p.id,
                    "at": iso(p.received_at),
                    "lat": p.lat,
                    "lon": p.lon,
                    "acc": p.acc,
                    "loc_time": p.loc_time,
                    "source": p.source,
                }
                for p in view.trail
            ],
        },
        headers={"Cache-Control": "no-store"},
    )


def _details_response(request: Request, engine, caller: Caller, pk: int) -> Response:  # noqa: ANN001
    response = details_partial(request, engine, caller, pk)
    # The queue changes too; the live connection would say so, this says it at once.
    response.headers["HX-Trigger"] = "queue-changed"
    return response


@router.post("/console/alarms/{pk}/ack", response_class=HTMLResponse)
def acknowledge(request: Request, engine: EngineDep, caller: Handler, pk: AlarmNumber) -> Response:
    """Take the alarm: recorded under the logged-in person; the pendant vibrates 'acknowledged'."""
    detail = _detail_or_404(request, engine, pk, caller)
    _check_handle(request, caller, detail)
    alarms.acknowledge_alarm(engine, ref=str(pk), operator=caller.username)
    return _details_response(request, engine, caller, pk)


@router.post("/console/alarms/{pk}/resolve", response_class=HTMLResponse)
def resolve(
    request: Request,
    engine: EngineDep,
    caller: Handler,
    pk: AlarmNumber,
    resolution: Annotated[Literal["incident", "precautionary", "false", "test"], Form()],
    note: Annotated[str, Form(max_length=lifecycle.MAX_NOTE)] = "",
) -> Response:
    """Close an acknowledged alarm with a class and a note."""
    detail = _detail_or_404(request, engine, pk, caller)
    _check_handle(request, caller, detail)
    alarms.resolve_alarm(
        engine, ref=str(pk), operator=caller.username, resolution=resolution, note=note.strip()
    )
    return _details_response(request, engine, caller, pk)


@router.post("/console/alarms/{pk}/locate", response_class=HTMLResponse)
def locate(request: Request, engine: EngineDep, caller: Handler, pk: AlarmNumber) -> Response:
    """Ask the pendant for a fresh fix; its answer joins the alarm's trail."""
    detail = _detail_or_404(request, engine, pk, caller)
    _check_handle(request, caller, detail)
    if detail.alarm.state == "resolved":
        raise HTTPException(409, f"alarm {detail.alarm.ref} is resolved: there is nothing to locate")
    try:
        commands.send(
            engine, device_id=detail.alarm.device_id, cmd="locate", requested_by=caller.username, alarm_pk=pk
        )
    except commands.CommandError as exc:
        raise HTTPException(409, str(exc)) from None
    return _details_response(request, engine, caller, pk)


@router.get("/console/whoami")
def whoami(caller: CallerDep) -> JSONResponse:
    """Who this console is logged in as (the page asks after a lost connection)."""
    return JSONResponse({"username": caller.username, "roles": list(caller.person.roles)})
