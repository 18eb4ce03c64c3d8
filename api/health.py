"""Liveness and readiness probes (public)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import DatabaseUnavailable

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
async def ready(request: Request) -> dict[str, str]:
    """The process is up and its database answers."""
    engine: AsyncEngine = request.app.state.engine
    try:
        async with asyncio.timeout(3):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise DatabaseUnavailable("the database cannot be reached") from exc
    return {"status": "ok"}
