"""GET /health-events: changes of the pendants' health, newest first (fleet.read).

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from pendant_backend import monitor
from pendant_backend.api.deps import Caller, EngineDep, require
from pendant_backend.api.schemas import HealthEventPublic, problems

router = APIRouter(prefix="/health-events", tags=["health-events"], responses=problems(401, 403))

FleetReader = Annotated[Caller, require("fleet.read")]


@router.get("")
def list_health_events(
    caller: FleetReader,
    engine: EngineDep,
    device_id: Annotated[str | None, Query(description="only this pendant's")] = None,
    since: Annotated[datetime | None, Query(description="only changes at or after this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[HealthEventPublic]:
    """Changes of health (connectivity, battery, flags), newest first."""
    events = monitor.health_events(engine, device_id=device_id, since=since, limit=limit)
    return [HealthEventPublic.model_validate(event, from_attributes=True) for event in events]
