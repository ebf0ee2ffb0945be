"""GET /fleet/summary: counts over the fleet (fleet.read).

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

from typing import Annotated

from fastapi import APIRouter

from pendant_backend import monitor
from pendant_backend.api.deps import Caller, EngineDep, require
from pendant_backend.api.schemas import FleetSummary, problems

router = APIRouter(prefix="/fleet", tags=["fleet"], responses=problems(401, 403))

FleetReader = Annotated[Caller, require("fleet.read")]


@router.get("/summary")
def get_summary(caller: FleetReader, engine: EngineDep) -> FleetSummary:
    """Counts per connectivity state, battery level, health flag and loan state, and open alarms."""
    return FleetSummary.model_validate(monitor.fleet_summary(engine))
