"""`neglect-service dev` (what `make run` does) on a database named by DATABASE_URL: it makes the
all-scopes demonstration client only when told to (issue 10, finding 9)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from service.auth.scopes import SCOPES
from service.cli.main import DEMO_CLIENT_NAME
from service.cli.main import app as cli_app
from service.settings import get_settings


@pytest.fixture
def no_demo_client(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI on the test database (not the embedded server), which holds no demo client."""
    asyncio.run(execute(database_url, "DELETE FROM api_client WHERE name = $1", DEMO_CLIENT_NAME))
    monkeypatch.setenv("DATABASE_URL", database_url)
    # `dev` sets NEGLECT_ENV=development in its own process's environment: here, the test
    # session's, where it would make later tests' settings development ones. Set through
    # monkeypatch, it is undone after the test.
    monkeypatch.setenv("NEGLECT_ENV", "development")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def execute(database_url: str, statement: str, *arguments: object) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(statement, *arguments)
    finally:
        await connection.close()


def demo_client_scopes(database_url: str) -> list[list[str]]:
    async def read() -> list[list[str]]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT allowed_scopes FROM api_client WHERE name = $1", DEMO_CLIENT_NAME
            )
            return [list(row["allowed_scopes"]) for row in rows]
        finally:
            await connection.close()

    return asyncio.run(read())


@pytest.mark.usefixtures("no_demo_client")
def test_dev_makes_no_all_scopes_client_on_a_configured_database(database_url: str) -> None:
    result = CliRunner().invoke(cli_app, ["dev", "--no-serve"])

    assert result.exit_code == 0, result.output
    assert "No demonstration client made" in result.output
    assert "--allow-all-scopes-demo-client" in result.output
    assert demo_client_scopes(database_url) == []


@pytest.mark.usefixtures("no_demo_client")
def test_dev_makes_the_demo_client_on_a_configured_database_when_told_to(
    database_url: str,
) -> None:
    result = CliRunner().invoke(cli_app, ["dev", "--no-serve", "--allow-all-scopes-demo-client"])

    assert result.exit_code == 0, result.output
    assert "grant_type=client_credentials" in result.output
    assert [sorted(scopes) for scopes in demo_client_scopes(database_url)] == [sorted(SCOPES)]
