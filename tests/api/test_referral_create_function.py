"""`POST /v1/referrals` is one call of `neglect_create_referral` (service/referrals.sql): the client
check, the key claim and the create happen in the database, so each refusal there must store
nothing, and a retry is answered by rendering the referral as it was created."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text

from service.auth.clients import create_client, disable_client
from service.auth.keys import KeyRing, issue_access_token
from service.db import DriverPool, SessionFactory, create_pool, transaction
from service.settings import Settings
from tests.bodies import valid_decision_body
from tests.builders.referrals import (
    PROBLEMS,
    count_audit_events,
    count_referrals,
    count_rows,
    post_referral,
    referral_body,
)
from tests.conftest import TEST_AUDIENCE, TEST_ISSUER, ClientMaker, RegisteredClient


@asynccontextmanager
async def driver_pool(app: FastAPI, pool: DriverPool) -> AsyncIterator[DriverPool]:
    """Serve the app's referral creates from `pool` for a while, then close it.

    Set and put back by hand: pytest's monkeypatch cannot restore an attribute of Starlette's
    `State`, and the app is shared by the whole session.
    """
    shared = app.state.pool
    app.state.pool = pool
    try:
        yield pool
    finally:
        app.state.pool = shared
        await pool.close()


async def count_keys(factory: SessionFactory, key: str) -> int:
    return await count_rows(
        factory, "SELECT count(*) FROM idempotency_record WHERE idempotency_key = :key", key=key
    )


@pytest.fixture
async def school(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(["referrals:write", "referrals:read"])


async def test_a_disabled_client_with_a_valid_token_is_401_and_stores_nothing(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    async with transaction(session_factory) as session:
        await disable_client(session, school.client_id)
    before = await count_referrals(session_factory)
    key = uuid.uuid4().hex
    response = await post_referral(client, school, key=key)
    assert response.status_code == 401
    assert response.json()["type"] == PROBLEMS + "invalid-token"
    assert await count_referrals(session_factory) == before
    assert await count_keys(session_factory, key) == 0


async def test_a_token_scope_the_client_is_not_allowed_is_403_and_stores_nothing(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    # The token claims referrals:write; the client registry does not allow it.
    reader = await make_client(["referrals:read"], token_scopes=["referrals:write"])
    before = await count_referrals(session_factory)
    key = uuid.uuid4().hex
    response = await post_referral(client, reader, key=key)
    assert response.status_code == 403
    assert response.json()["type"] == PROBLEMS + "insufficient-scope"
    assert await count_referrals(session_factory) == before
    assert await count_keys(session_factory, key) == 0


async def test_a_retry_after_the_decision_replays_the_referral_as_it_was_created(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    make_client: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    front_door = await make_client(["referrals:read", "referrals:read:all", "referrals:decide"])
    body, key = referral_body(), uuid.uuid4().hex
    first = await post_referral(client, school, body, key)
    assert first.status_code == 201
    created = first.json()
    decided = await client.post(
        f"/v1/referrals/{created['id']}/decision",
        json=valid_decision_body(),
        headers=front_door.headers,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] != "received"

    again = await post_referral(client, school, body, key)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == created
    assert again.json()["status"] == "received"
    assert again.json()["decision"] is None
    assert await count_audit_events(session_factory, "create", created["id"]) == 1


async def test_a_response_stored_before_migration_0005_is_replayed_as_stored(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    # A key claimed by the earlier create path: the whole answer stored, no resource id.
    body, key = referral_body(), uuid.uuid4().hex
    first = await post_referral(client, school, body, key)
    assert first.status_code == 201
    stored = {**first.json(), "external_reference": "as stored before"}
    async with transaction(session_factory) as session:
        await session.execute(
            text(
                "UPDATE idempotency_record SET resource_id = NULL, "
                "response_body = CAST(:body AS jsonb) "
                "WHERE client_id = :client_id AND idempotency_key = :key"
            ),
            {"body": orjson.dumps(stored).decode(), "client_id": school.client_id, "key": key},
        )
    again = await post_referral(client, school, body, key)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == stored
    assert await count_audit_events(session_factory, "read", stored["id"]) == 1


async def test_a_back_loaded_referral_keeps_its_received_at_in_the_replay(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    body = referral_body(received_at="2026-03-02T09:15:30.123456+00:00")
    key = uuid.uuid4().hex
    first = await post_referral(client, school, body, key)
    again = await post_referral(client, school, body, key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["received_at"].startswith("2026-03-02T09:15:30.123456")


async def test_no_free_driver_connection_within_the_pool_timeout_is_503_and_stores_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    school: RegisteredClient,
    settings: Settings,
    runtime_database_url: str,
    session_factory: SessionFactory,
) -> None:
    small = await create_pool(
        settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_s": 0.2}),
        runtime_database_url,
    )
    async with driver_pool(app, small):
        before = await count_referrals(session_factory)
        async with small.acquire():
            response = await post_referral(client, school)
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json()["type"] == PROBLEMS + "database-busy"
        assert await count_referrals(session_factory) == before


async def test_a_client_registered_with_another_issuer_is_401_for_our_token_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, session_factory: SessionFactory
) -> None:
    # Registered for the council's identity provider; the token names the client but comes from
    # the built-in issuer, as in `api.deps.authenticate`'s issuer check.
    client_id = f"idp-{uuid.uuid4().hex[:12]}"
    async with transaction(session_factory) as session:
        await create_client(
            session,
            name="IdP client",
            agency_type="school",
            agency_name=f"Agency {uuid.uuid4().hex[:8]}",
            scopes=["referrals:write"],
            issuer="https://idp.example.org",
            client_id=client_id,
        )
    ring: KeyRing = await app.state.key_ring()
    token = issue_access_token(
        ring,
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        client_id=client_id,
        scopes=["referrals:write"],
        ttl_s=300,
    )
    before = await count_referrals(session_factory)
    response = await client.post(
        "/v1/referrals",
        json=referral_body(),
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 401
    assert await count_referrals(session_factory) == before


async def test_a_create_is_one_statement_in_one_round_trip(
    app: FastAPI,
    client: httpx.AsyncClient,
    school: RegisteredClient,
    settings: Settings,
    runtime_database_url: str,
) -> None:
    # The architecture the benchmark depends on: one call of the database function on the
    # driver pool, and nothing through the engine (no session, no BEGIN/COMMIT).
    single = await create_pool(
        settings.model_copy(update={"db_pool_size": 1}), runtime_database_url
    )
    driver_statements: list[str] = []
    engine_statements: list[str] = []

    def engine_statement(*args: Any) -> None:
        engine_statements.append(str(args[2]))

    async with single.acquire() as connection:
        connection.add_query_logger(lambda record: driver_statements.append(record.query))
    async with driver_pool(app, single):
        event.listen(app.state.engine.sync_engine, "before_cursor_execute", engine_statement)
        try:
            response = await post_referral(client, school)
        finally:
            event.remove(app.state.engine.sync_engine, "before_cursor_execute", engine_statement)
    assert response.status_code == 201, response.text
    assert engine_statements == []
    assert len(driver_statements) == 1
    assert driver_statements[0].startswith("SELECT * FROM neglect_create_referral(")
