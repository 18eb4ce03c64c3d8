"""The client registry over HTTP and the CLI: a client cannot disable itself; a disabled client
can be enabled again; a secret can be rotated, the new one shown once (issue 10, finding 9)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.auth.clients import verify_secret
from service.cli.main import app as cli_app
from service.settings import get_settings
from tests.builders.referrals import PROBLEMS
from tests.conftest import SECRETS_SEEN, ClientMaker, RegisteredClient


@pytest.fixture
async def admin(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["admin"])


async def token_status(client: httpx.AsyncClient, client_id: str, secret: str) -> int:
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return response.status_code


async def audit_status(client: httpx.AsyncClient, reader: RegisteredClient) -> int:
    return (await client.get("/v1/audit-events", headers=reader.headers)).status_code


async def test_an_admin_client_cannot_disable_itself(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    response = await client.post(f"/v1/clients/{admin.client_id}/disable", headers=admin.headers)

    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "self-disable"
    still = await client.get("/v1/clients", headers=admin.headers)
    assert still.status_code == 200
    mine = next(row for row in still.json() if row["client_id"] == admin.client_id)
    assert mine["enabled"] is True


async def test_a_disabled_client_enabled_again_is_accepted_again(
    client: httpx.AsyncClient, admin: RegisteredClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["audit:read"])
    disabled = await client.post(f"/v1/clients/{reader.client_id}/disable", headers=admin.headers)
    refused = await audit_status(client, reader)

    enabled = await client.post(f"/v1/clients/{reader.client_id}/enable", headers=admin.headers)

    assert disabled.json()["enabled"] is False
    assert refused == 401
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_at"] is None
    assert await audit_status(client, reader) == 200
    assert await token_status(client, reader.client_id, reader.secret or "") == 200


async def test_enabling_an_enabled_client_changes_nothing(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    response = await client.post(f"/v1/clients/{admin.client_id}/enable", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["enabled"] is True


async def test_a_rotated_secret_replaces_the_old_one_at_once(
    client: httpx.AsyncClient, admin: RegisteredClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["audit:read"])
    response = await client.post(f"/v1/clients/{reader.client_id}/secret", headers=admin.headers)
    assert response.status_code == 200
    new_secret = response.json()["client_secret"]
    SECRETS_SEEN.add(new_secret)

    assert new_secret != reader.secret
    assert response.json()["client_id"] == reader.client_id
    assert await token_status(client, reader.client_id, reader.secret or "") == 401
    assert await token_status(client, reader.client_id, new_secret) == 200
    listed = await client.get("/v1/clients", headers=admin.headers)
    assert new_secret not in listed.text


async def test_a_disabled_client_can_have_its_secret_rotated_and_stays_disabled(
    client: httpx.AsyncClient, admin: RegisteredClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["audit:read"])
    await client.post(f"/v1/clients/{reader.client_id}/disable", headers=admin.headers)

    rotated = await client.post(f"/v1/clients/{reader.client_id}/secret", headers=admin.headers)
    new_secret = rotated.json()["client_secret"]
    SECRETS_SEEN.add(new_secret)

    assert rotated.status_code == 200
    assert rotated.json()["enabled"] is False
    assert await token_status(client, reader.client_id, new_secret) == 401
    await client.post(f"/v1/clients/{reader.client_id}/enable", headers=admin.headers)
    assert await token_status(client, reader.client_id, new_secret) == 200


async def test_an_external_issuers_client_has_no_secret_to_rotate(
    client: httpx.AsyncClient, admin: RegisteredClient
) -> None:
    created = await client.post(
        "/v1/clients",
        json={
            "name": "Council IdP client",
            "agency_type": "local_authority",
            "agency_name": "Northtown Council",
            "scopes": ["referrals:read"],
            "issuer": "https://idp.northtown.example",
            "client_id": f"council-{admin.client_id}",
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text

    response = await client.post(
        f"/v1/clients/{created.json()['client_id']}/secret", headers=admin.headers
    )

    assert response.status_code == 409
    assert response.json()["type"] == PROBLEMS + "conflict"


@pytest.mark.parametrize("action", ["enable", "secret", "disable"])
async def test_an_unknown_client_is_404(
    client: httpx.AsyncClient, admin: RegisteredClient, action: str
) -> None:
    response = await client.post(f"/v1/clients/nsc_nobody/{action}", headers=admin.headers)
    assert response.status_code == 404


@pytest.mark.parametrize("action", ["enable", "secret"])
async def test_enabling_and_rotating_need_the_admin_scope(
    client: httpx.AsyncClient, make_client: ClientMaker, action: str
) -> None:
    reader = await make_client(["audit:read"])
    response = await client.post(f"/v1/clients/{reader.client_id}/{action}", headers=reader.headers)
    assert response.status_code == 403


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_database(runtime_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", runtime_database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_cli(*arguments: str) -> Any:
    result = CliRunner().invoke(cli_app, list(arguments))
    assert result.exit_code == 0, result.output
    return result


def register_with_cli() -> dict[str, Any]:
    result = run_cli(
        "clients", "create", "--name", "CLI test client", "--agency-type", "school",
        "--agency-name", f"CLI school {uuid.uuid4().hex[:8]}", "--scopes", "audit:read", "--json",
    )  # fmt: skip
    created: dict[str, Any] = json.loads(result.stdout)
    SECRETS_SEEN.add(created["client_secret"])
    return created


def listed_as_enabled(client_id: str) -> bool:
    rows = json.loads(run_cli("clients", "list", "--json").stdout)
    return bool(next(row for row in rows if row["client_id"] == client_id)["enabled"])


def stored_secret_hash(database_url: str, client_id: str) -> str:
    async def read() -> str:
        connection = await asyncpg.connect(database_url)
        try:
            stored: str = await connection.fetchval(
                "SELECT secret_hash FROM api_client WHERE client_id = $1", client_id
            )
            return stored
        finally:
            await connection.close()

    return asyncio.run(read())


@pytest.mark.usefixtures("cli_database")
def test_the_cli_enables_a_disabled_client() -> None:
    created = register_with_cli()
    run_cli("clients", "disable", created["client_id"])
    disabled = listed_as_enabled(created["client_id"])

    result = run_cli("clients", "enable", created["client_id"])

    assert disabled is False
    assert f"client {created['client_id']} enabled" in result.output
    assert listed_as_enabled(created["client_id"]) is True


@pytest.mark.usefixtures("cli_database")
def test_the_cli_rotates_a_secret_and_prints_it_once(database_url: str) -> None:
    created = register_with_cli()

    result = run_cli("clients", "rotate-secret", created["client_id"], "--json")

    printed = json.loads(result.stdout)
    SECRETS_SEEN.add(printed["client_secret"])
    stored = stored_secret_hash(database_url, created["client_id"])
    assert printed["client_id"] == created["client_id"]
    assert verify_secret(printed["client_secret"], stored)
    assert not verify_secret(created["client_secret"], stored)


@pytest.mark.usefixtures("cli_database")
def test_the_cli_says_so_for_an_unknown_client() -> None:
    result = CliRunner().invoke(cli_app, ["clients", "enable", "nsc_nobody"])
    assert result.exit_code == 2
    assert "no client nsc_nobody" in result.output
