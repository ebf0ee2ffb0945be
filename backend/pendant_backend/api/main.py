"""The API's routers under /api/v1."""

from fastapi import APIRouter

api_router = APIRouter(prefix="/api/v1")
