"""GET /devices and /devices/{device_id}: the pendants and their health, no positions (fleet.read);
case references only to those whose roles show them (devices.case).

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pendant_backend import queries, registry
from pendant_backend.api.deps import Caller, EngineDep, refuse, require
from pendant_backend.api.schemas import Battery, Connectivity, DevicePublic, HealthFlag, LoanState, problems

router = APIRouter(prefix="/devices", tags=["devices"], responses=problems(401, 403))

FleetReader = Annotated[Caller, require("fleet.read")]


@router.get("")
def list_devices(
    caller: FleetReader,
    engine: EngineDep,
    connectivity: Annotated[Connectivity | None, Query(description="only pendants in this state")] = None,
    loan_state: Annotated[LoanState | None, Query(description="only pendants in this loan state")] = None,
    flag: Annotated[HealthFlag | None, Query(description="only pendants with this flag set")] = None,
    battery: Annotated[Battery | None, Query(description="only pendants at this battery level")] = None,
) -> list[DevicePublic]:
    """Every pendant by id, optionally filtered (an unknown filter value is refused with 422)."""
    found = queries.list_devices(
        engine, connectivity=connectivity, loan_state=loan_state, flag=flag, battery=battery
    )
    show_case = caller.person.can("devices.case")
    return [DevicePublic.of(device, show_case=show_case) for device in found]


@router.get("/{device_id}", responses=problems(404))
def get_device(request: Request, caller: FleetReader, engine: EngineDep, device_id: str) -> DevicePublic:
    """One pendant and its health."""
    device = registry.find_device(engine, device_id=device_id)
    if device is None:
        raise refuse(
            request, 404, f"there is no device {device_id}: see GET /api/v1/devices", caller.username
        )
    return DevicePublic.of(device, show_case=caller.person.can("devices.case"))
