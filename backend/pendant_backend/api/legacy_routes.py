"""The JSON HTTP API for dispatch and police IT (FastAPI): fleet summary, devices, health events, and
alarms with their trail, acknowledgement and resolution.

Every request needs `Authorization: Bearer <token>`, a token made with `pendant backend token create`
(docs/operations.md); an ack or a resolution is recorded under the token's name. Run it with
`pendant backend api`; it listens on 127.0.0.1 unless told otherwise (put TLS in front of it).

FastAPI reads the annotations of the route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from pendant_backend import BackendError, alarms, health, lifecycle, monitor, queries, registry, tokens
from pendant_backend.models import Alarm, iso

bearer = HTTPBearer(auto_error=False)


class ResolveRequest(BaseModel):
    """The body of POST /alarms/{ref}/resolve."""

    resolution: str = Field(description=f"one of {', '.join(lifecycle.RESOLUTIONS)}")
    note: str = Field(default="", max_length=lifecycle.MAX_NOTE)


def _alarm(alarm: Alarm) -> dict[str, Any]:
    data = queries.alarm_as_dict(alarm)
    data.pop("payload", None)
    return data


def create_app(engine: Engine) -> FastAPI:
    """The API over the database behind `engine`."""
    app = FastAPI(title="Pendant alarm backend", version="1", docs_url=None, redoc_url=None)

    def operator(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        name = tokens.authenticate(engine, credentials.credentials) if credentials else None
        if name is None:
            raise HTTPException(401, "a valid API token is needed", headers={"WWW-Authenticate": "Bearer"})
        return name

    Operator = Annotated[str, Depends(operator)]

    def _find(ref: str) -> Alarm:
        alarm = queries.find_alarm(engine, ref)
        if alarm is None:
            raise HTTPException(404, f"no alarm {ref}")
        return alarm

    @app.exception_handler(lifecycle.TransitionError)
    async def transition_refused(request: Request, exc: lifecycle.TransitionError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/api/v1/fleet/summary")
    def fleet_summary(who: Operator) -> dict[str, Any]:
        """Counts per health state, loan state and open alarms."""
        return monitor.fleet_summary(engine)

    @app.get("/api/v1/devices")
    def list_devices(
        who: Operator,
        connectivity: Literal["online", "late", "offline", "never_seen"] | None = None,
        loan_state: str | None = None,
        flag: Literal[health.FLAGS] | None = None,  # type: ignore[valid-type]
    ) -> list[dict[str, Any]]:
        """Every device (no password hash), optionally filtered."""
        found = queries.list_devices(engine, connectivity=connectivity, loan_state=loan_state, flag=flag)
        return [queries.device_as_dict(d) for d in found]

    @app.get("/api/v1/devices/{device_id}")
    def show_device(device_id: str, who: Operator) -> dict[str, Any]:
        """One device and its health."""
        device = registry.find_device(engine, device_id=device_id)
        if device is None:
            raise HTTPException(404, f"no device {device_id}")
        return queries.device_as_dict(device)

    @app.get("/api/v1/health-events")
    def health_events(
        who: Operator,
        device_id: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Changes of health, newest first."""
        events = monitor.health_events(engine, device_id=device_id, since=since, limit=limit)
        return [
            {"device_id": e.device_id, "at": iso(e.at), "aspect": e.aspect, "old": e.old, "new": e.new}
            for e in events
        ]

    @app.get("/api/v1/alarms")
    def list_alarms(
        who: Operator,
        device_id: str | None = None,
        state: Literal["received", "acknowledged", "resolved"] | None = None,
        open_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        """Alarms, newest first."""
        found = queries.list_alarms(
            engine, device_id=device_id, state=state, open_only=open_only, limit=limit
        )
        return [_alarm(a) for a in found]

    @app.get("/api/v1/alarms/{ref:path}/trail")
    def alarm_trail(ref: str, who: Operator) -> list[dict[str, Any]]:
        """The alarm's location trail, oldest first."""
        points = alarms.trail(engine, alarm_pk=_find(ref).id)
        return [
            {
                "at": iso(p.received_at),
                "lat": p.lat,
                "lon": p.lon,
                "acc": p.acc,
                "loc_time": p.loc_time,
                "source": p.source,
            }
            for p in points
        ]

    @app.post("/api/v1/alarms/{ref:path}/ack")
    def acknowledge(ref: str, who: Operator) -> dict[str, Any]:
        """Take the alarm, under the token's name; 409 if it is not waiting for an operator."""
        _find(ref)
        return _alarm(alarms.acknowledge_alarm(engine, ref=ref, operator=who))

    @app.post("/api/v1/alarms/{ref:path}/resolve")
    def resolve(ref: str, body: ResolveRequest, who: Operator) -> dict[str, Any]:
        """Close an acknowledged alarm with a class and a note; 409 if it is not acknowledged."""
        _find(ref)
        try:
            return _alarm(
                alarms.resolve_alarm(
                    engine, ref=ref, operator=who, resolution=body.resolution, note=body.note
                )
            )
        except lifecycle.TransitionError:
            raise
        except BackendError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/v1/alarms/{ref:path}")
    def show_alarm(ref: str, who: Operator) -> dict[str, Any]:
        """One alarm."""
        return _alarm(_find(ref))

    return app


def serve(engine: Engine, *, host: str, port: int) -> None:
    """Run the API with uvicorn until Ctrl-C or SIGTERM."""
    import uvicorn

    uvicorn.run(create_app(engine), host=host, port=port, log_level="info", access_log=False)
