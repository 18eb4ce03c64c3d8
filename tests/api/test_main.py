"""The application factory's settings (issue 10, finding 9): the interactive documentation and
the served OpenAPI document can be turned off for production."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.main import create_app
from service.settings import Settings

DOCUMENTATION_PATHS = ["/docs", "/redoc", "/openapi.json"]


@pytest.fixture
async def client_without_docs(
    settings: Settings, runtime_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"docs_enabled": False}), runtime_database_url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http


@pytest.mark.parametrize("path", DOCUMENTATION_PATHS)
async def test_the_documentation_is_served_by_default(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200


@pytest.mark.parametrize("path", DOCUMENTATION_PATHS)
async def test_the_documentation_can_be_turned_off(
    client_without_docs: httpx.AsyncClient, path: str
) -> None:
    response = await client_without_docs.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_api_still_answers_with_the_documentation_off(
    client_without_docs: httpx.AsyncClient,
) -> None:
    response = await client_without_docs.get("/health/ready")
    assert response.status_code == 200


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEGLECT_DOCS_ENABLED", "false")
    assert Settings().docs_enabled is False
