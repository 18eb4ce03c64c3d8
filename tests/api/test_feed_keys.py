"""Feed keys (issue 13): a long-lived, read-only credential of a registered client that opens the
OData feed and the indicator routes and nothing else, sent as Power Query's Web API key parameter
or as HTTP Basic; revocable at once, stored hashed, shown once, every use audited, never logged."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from functools import cache

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import text
from typer.testing import CliRunner

from api.main import create_app
from service.cli.main import app as cli_app
from service.db import SessionFactory, transaction
from service.settings import Settings, get_settings
from tests.api.test_route_scopes import PUBLIC_PATHS
from tests.builders.feed import basic, issue_feed_key
from tests.conftest import SECRETS_SEEN, ClientMaker, RegisteredClient

AGGREGATE_PREFIXES = ("/odata", "/v1/indicators")
SMALL_WINDOW = {"from": "2024-01-01", "to": "2024-02-29", "period": "month"}
_PATH_PARAM = re.compile(r"{[^}]+}")


def _ways(client: RegisteredClient, key: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(headers, params) for each way a BI tool sends a feed key."""
    return [({}, {"feed_key": key}), (basic(client.client_id, key), {})]


@pytest.fixture
async def holder(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["indicators:read", "referrals:read"], agency_type="local_authority")


@pytest.fixture
async def admin(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["admin"])


# --- What a key opens ---------------------------------------------------------------------------

AGGREGATE_GETS = [
    ("/odata", {}),
    ("/odata/", {}),
    ("/odata/$metadata", {}),
    ("/odata/Indicators", {}),
    ("/odata/IndicatorPoints", {**SMALL_WINDOW, "$filter": "Breakdown eq null", "$top": "2"}),
    ("/odata/IndicatorPoints/$count", {**SMALL_WINDOW, "$filter": "Breakdown eq null"}),
    ("/v1/indicators", {}),
    ("/v1/indicators/toolkit_assessments", SMALL_WINDOW),
    ("/v1/indicators/toolkit_assessments/meta.csv", {"breakdown": "sex"}),
]


@pytest.mark.parametrize("way", ["web_api_key", "basic"])
async def test_a_feed_key_opens_the_feed_and_every_aggregate_route(
    client: httpx.AsyncClient, app: FastAPI, holder: RegisteredClient, way: str
) -> None:
    key = await issue_feed_key(app, holder)
    headers, key_params = _ways(holder, key)[0 if way == "web_api_key" else 1]

    answers = {
        path: (await client.get(path, params={**params, **key_params}, headers=headers))
        for path, params in AGGREGATE_GETS
    }
    as_csv = await client.get(
        "/v1/indicators/toolkit_assessments",
        params={**SMALL_WINDOW, **key_params},
        headers={**headers, "Accept": "text/csv"},
    )

    assert {path: answer.status_code for path, answer in answers.items()} == {
        path: 200 for path, _ in AGGREGATE_GETS
    }
    assert as_csv.status_code == 200
    assert as_csv.text.startswith("time_period,time_identifier,")


@cache
def _person_level_operations() -> list[tuple[str, str]]:
    """Every route a feed key must not open: all but the public and the aggregate ones."""
    operations: list[tuple[str, str]] = []
    for route in iter_route_contexts(create_app(Settings(database_url=None)).routes):
        path = route.path or ""
        if path in PUBLIC_PATHS or path.startswith(AGGREGATE_PREFIXES):
            continue
        operations.extend((method, path) for method in sorted(route.methods or {"GET"}))
    return operations


PERSON_LEVEL = _person_level_operations()


@pytest.mark.parametrize(("method", "path"), PERSON_LEVEL, ids=[" ".join(o) for o in PERSON_LEVEL])
async def test_a_feed_key_opens_no_other_route(
    client: httpx.AsyncClient,
    app: FastAPI,
    make_client: ClientMaker,
    method: str,
    path: str,
) -> None:
    # A client that may do everything: the key still opens only the aggregate routes.
    everything = await make_client(
        [
            "referrals:read",
            "referrals:read:all",
            "referrals:write",
            "indicators:read",
            "admin",
            "audit:read",
            "assessments:read",
            "assessments:write",
            "case-events:write",
        ]
    )
    key = await issue_feed_key(app, everything)
    url = _PATH_PARAM.sub(lambda _: str(uuid.uuid4()), path)

    statuses = [
        (await client.request(method, url, params=params, headers=headers)).status_code
        for headers, params in _ways(everything, key)
    ]

    assert statuses == [401, 401], f"{method} {path}: {statuses}"


# --- Lifecycle ----------------------------------------------------------------------------------


async def test_a_revoked_key_stops_at_once(
    client: httpx.AsyncClient, holder: RegisteredClient, admin: RegisteredClient
) -> None:
    issued = await client.post(
        f"/v1/clients/{holder.client_id}/feed-keys",
        json={"name": "Power BI dashboard"},
        headers=admin.headers,
    )
    assert issued.status_code == 201
    key, key_id = issued.json()["feed_key"], issued.json()["key_id"]
    SECRETS_SEEN.add(key)
    before = await client.get("/odata/", params={"feed_key": key})

    revoked = await client.post(
        f"/v1/clients/{holder.client_id}/feed-keys/{key_id}/revoke", headers=admin.headers
    )
    after = [
        (await client.get("/odata/", params=params, headers=headers)).status_code
        for headers, params in _ways(holder, key)
    ]

    assert before.status_code == 200
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert after == [401, 401]


async def test_rotating_a_key_replaces_it_at_once(
    client: httpx.AsyncClient, holder: RegisteredClient, admin: RegisteredClient
) -> None:
    issued = await client.post(
        f"/v1/clients/{holder.client_id}/feed-keys", json={"name": "Excel"}, headers=admin.headers
    )
    old, key_id = issued.json()["feed_key"], issued.json()["key_id"]
    SECRETS_SEEN.add(old)

    rotated = await client.post(
        f"/v1/clients/{holder.client_id}/feed-keys/{key_id}/rotate", headers=admin.headers
    )
    new = rotated.json()["feed_key"]
    SECRETS_SEEN.add(new)

    assert rotated.status_code == 201
    assert rotated.json()["name"] == "Excel"
    assert (await client.get("/odata/", params={"feed_key": old})).status_code == 401
    assert (await client.get("/odata/", params={"feed_key": new})).status_code == 200


async def test_a_disabled_clients_key_stops_and_an_enabled_ones_works_again(
    client: httpx.AsyncClient, app: FastAPI, holder: RegisteredClient, admin: RegisteredClient
) -> None:
    key = await issue_feed_key(app, holder)

    await client.post(f"/v1/clients/{holder.client_id}/disable", headers=admin.headers)
    disabled = await client.get("/odata/", params={"feed_key": key})
    await client.post(f"/v1/clients/{holder.client_id}/enable", headers=admin.headers)
    enabled = await client.get("/odata/", params={"feed_key": key})

    assert (disabled.status_code, enabled.status_code) == (401, 200)


async def test_a_key_is_only_the_clients_own(
    client: httpx.AsyncClient, app: FastAPI, holder: RegisteredClient, make_client: ClientMaker
) -> None:
    other = await make_client(["indicators:read"])
    key = await issue_feed_key(app, holder)

    response = await client.get("/odata/", headers=basic(other.client_id, key))

    assert response.status_code == 401


async def test_a_client_that_may_not_read_indicators_gets_no_key(
    client: httpx.AsyncClient, make_client: ClientMaker, admin: RegisteredClient
) -> None:
    school = await make_client(["referrals:write"])

    response = await client.post(
        f"/v1/clients/{school.client_id}/feed-keys", json={"name": "x"}, headers=admin.headers
    )

    assert response.status_code == 409


async def test_a_key_with_a_bearer_token_too_is_refused(
    client: httpx.AsyncClient, app: FastAPI, holder: RegisteredClient
) -> None:
    key = await issue_feed_key(app, holder)

    response = await client.get("/odata/", params={"feed_key": key}, headers=holder.headers)

    assert response.status_code == 401


async def test_the_key_is_shown_once_and_only_its_hash_is_stored(
    client: httpx.AsyncClient,
    holder: RegisteredClient,
    admin: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    issued = await client.post(
        f"/v1/clients/{holder.client_id}/feed-keys", json={"name": "x"}, headers=admin.headers
    )
    key = issued.json()["feed_key"]
    SECRETS_SEEN.add(key)

    listed = await client.get(f"/v1/clients/{holder.client_id}/feed-keys", headers=admin.headers)
    async with transaction(session_factory) as session:
        stored = (
            await session.execute(
                text(
                    "SELECT to_jsonb(k)::text AS row, key_sha256 FROM feed_key k WHERE key_id = :id"
                ),
                {"id": issued.json()["key_id"]},
            )
        ).one()

    assert key.startswith("nfk_")
    assert [item["key_id"] for item in listed.json()] == [issued.json()["key_id"]]
    assert "feed_key" not in listed.json()[0]
    assert key not in listed.text
    assert stored.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored.row


async def test_every_use_of_a_key_is_audited_even_a_failed_request(
    client: httpx.AsyncClient,
    app: FastAPI,
    holder: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    key = await issue_feed_key(app, holder)
    async with transaction(session_factory) as session:
        [key_id] = (
            await session.scalars(
                text("SELECT key_id FROM feed_key WHERE client_id = :c"), {"c": holder.client_id}
            )
        ).all()

    ok = await client.get("/v1/indicators", params={"feed_key": key})
    bad = await client.get("/odata/Indicators", params={"feed_key": key, "$top": "x"})
    also = await client.get("/odata/$metadata", headers=basic(holder.client_id, key))

    async with transaction(session_factory) as session:
        events = (
            await session.execute(
                text(
                    "SELECT client_id, action, resource_type FROM audit_event "
                    "WHERE resource_id = :key_id ORDER BY id"
                ),
                {"key_id": key_id},
            )
        ).all()
    assert (ok.status_code, bad.status_code, also.status_code) == (200, 400, 200)
    assert [tuple(event) for event in events] == [(holder.client_id, "read", "feed_key")] * 3


async def test_no_log_line_holds_the_key_even_when_a_request_fails(
    client: httpx.AsyncClient,
    app: FastAPI,
    holder: RegisteredClient,
    no_secrets_in_logs: list[str],
) -> None:
    key = await issue_feed_key(app, holder)

    await client.get("/odata/IndicatorPoints", params={"feed_key": key, "$expand": "x"})
    await client.get("/v1/referrals", params={"feed_key": key})
    await client.get("/odata/nowhere", params={"feed_key": key})

    access = [line for line in no_secrets_in_logs if '"neglect_service.access"' in line]
    assert len(access) == 3
    assert not [line for line in no_secrets_in_logs if key in line or key[4:20] in line]


# --- The command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def _status(app: FastAPI, key: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return (await http.get("/odata/", params={"feed_key": key})).status_code


@pytest.mark.usefixtures("cli_database")
async def test_the_cli_issues_lists_and_revokes_keys(
    app: FastAPI, holder: RegisteredClient
) -> None:
    runner = CliRunner()

    created = await asyncio.to_thread(
        runner.invoke, cli_app, ["feed-keys", "create", holder.client_id, "--name", "BI", "--json"]
    )
    issued = json.loads(created.output)
    SECRETS_SEEN.add(issued["feed_key"])
    listed = await asyncio.to_thread(
        runner.invoke, cli_app, ["feed-keys", "list", holder.client_id, "--json"]
    )
    works = await _status(app, issued["feed_key"])
    revoked = await asyncio.to_thread(
        runner.invoke, cli_app, ["feed-keys", "revoke", issued["key_id"]]
    )

    assert created.exit_code == 0, created.output
    assert [item["key_id"] for item in json.loads(listed.output)] == [issued["key_id"]]
    assert issued["feed_key"] not in listed.output
    assert works == 200
    assert revoked.exit_code == 0, revoked.output
    assert await _status(app, issued["feed_key"]) == 401
