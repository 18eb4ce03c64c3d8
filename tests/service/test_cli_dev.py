"""`neglect-service dev` (what `make run` does) on a database named by DATABASE_URL: it makes the
all-scopes demonstration client only when told to (issue 10, finding 9), and migrates as the owner
and grants the runtime role when an owner URL is set apart (finding 6)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from service.auth.scopes import SCOPES
from service.cli.main import DEMO_CLIENT_NAME
from service.cli.main import app as cli_app
from service.settings import get_settings
from tests.conftest import runtime_role_of


@pytest.fixture
def no_demo_client(
    database_url: str, runtime_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The CLI on the test database (not the embedded server), which holds no demo client: the
    service as the runtime role, migrations as the owner."""
    asyncio.run(execute(database_url, "DELETE FROM api_client WHERE name = $1", DEMO_CLIENT_NAME))
    monkeypatch.setenv("DATABASE_URL", runtime_database_url)
    monkeypatch.setenv("NEGLECT_OWNER_DATABASE_URL", database_url)
    # `dev` sets these for the server it starts: put back as they were after the test, so that
    # later tests (tests/service/test_keys.py) see the environment they were started with.
    # (monkeypatch.delenv records nothing for a variable that is not set.)
    saved = {name: os.environ.get(name) for name in ("NEGLECT_ENV", "NEGLECT_PUBLIC_URL")}
    get_settings.cache_clear()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
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


@pytest.mark.usefixtures("no_demo_client")
def test_dev_on_another_port_prints_urls_of_that_port() -> None:
    result = CliRunner().invoke(
        cli_app, ["dev", "--no-serve", "--port", "8300", "--allow-all-scopes-demo-client"]
    )

    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8300/oauth/token" in result.output
    assert "http://127.0.0.1:8300/docs" in result.output
    assert ":8000" not in result.output
    # The server `dev` starts reads its settings from the environment: the same base URL.
    assert get_settings().public_url == "http://127.0.0.1:8300"
    assert get_settings().issuer == "http://127.0.0.1:8300"


@pytest.mark.usefixtures("no_demo_client")
def test_dev_follows_a_configured_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEGLECT_PUBLIC_URL", "https://neglect.northtown.example")

    result = CliRunner().invoke(cli_app, ["dev", "--no-serve", "--allow-all-scopes-demo-client"])

    assert result.exit_code == 0, result.output
    assert "https://neglect.northtown.example/oauth/token" in result.output


@pytest.mark.usefixtures("no_demo_client")
def test_dev_grants_the_runtime_role_named_by_database_url(database_url: str) -> None:
    result = CliRunner().invoke(cli_app, ["dev", "--no-serve"])

    assert result.exit_code == 0, result.output
    assert f"runtime role {runtime_role_of(database_url)} exists" in result.output
    assert "SELECT, INSERT on audit_event; nothing on audit_chain_head" in result.output
