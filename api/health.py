"""Liveness and readiness probes (public)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.health import Readiness
from service.errors import DatabaseUnavailable
from service.webhooks.worker import worker_health

router = APIRouter(prefix="/health", tags=["health"])

_PROBLEM_503 = {
    "description": "The database is unreachable",
    "content": {"application/problem+json": {}},
}


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", responses={503: _PROBLEM_503})
async def ready(request: Request) -> Readiness:
    """The process is up and its database answers; with the webhook workers' heartbeat."""
    engine: AsyncEngine = request.app.state.engine
    try:
        async with asyncio.timeout(3):
            async with engine.connect() as connection:
                workers = await worker_health(connection, request.app.state.settings)
    except Exception as exc:
        raise DatabaseUnavailable("the database cannot be reached") from exc
    return Readiness(status="ok", webhook_workers=workers)
