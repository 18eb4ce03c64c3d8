"""Liveness and readiness."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from api.main import create_app
from service.settings import Settings
from tests.conftest import assert_errors_are_problems


async def test_live_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.json() == {"status": "ok"}


async def test_ready_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200


async def test_ready_is_503_problem_when_the_database_is_away(
    app: FastAPI, settings: Settings, runtime_database_url: str
) -> None:
    unreachable = create_app(settings, runtime_database_url)
    async with unreachable.router.lifespan_context(unreachable):
        # Point the running app at a port nothing listens on: the database "went away".
        from service.db import create_engine

        await unreachable.state.engine.dispose()
        unreachable.state.engine = create_engine(settings, "postgresql://postgres@127.0.0.1:1/none")
        transport = httpx.ASGITransport(app=unreachable)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            event_hooks={"response": [assert_errors_are_problems]},
        ) as http:
            response = await http.get("/health/ready")
        await unreachable.state.engine.dispose()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
