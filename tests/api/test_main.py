"""The application factory's settings (issue 10, finding 9): the interactive documentation and
the served OpenAPI document can be turned off for production."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.main import create_app
from service.settings import Settings
from tests.conftest import TEST_AUDIENCE, TEST_ISSUER, TEST_KEY_ENCRYPTION_KEY

DOCUMENTATION_PATHS = ["/docs", "/redoc", "/openapi.json"]


@pytest.fixture
async def client_without_docs(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # The key-encryption key the session's app made the signing key with (conftest).
    settings = Settings(
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        database_url=None,
        docs_enabled=False,
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
    )
    app = create_app(settings, database_url)
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
