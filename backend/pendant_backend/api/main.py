"""The API's routers under /api/v1, one per resource (routes/)."""

from fastapi import APIRouter

from pendant_backend.api.routes import alarms, devices, fleet, health_events

api_router = APIRouter(prefix="/api/v1")
for _resource in (fleet, devices, health_events, alarms):
    api_router.include_router(_resource.router)
