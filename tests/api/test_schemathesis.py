"""Property-based tests of the whole HTTP contract with Schemathesis: every operation in the app's
own OpenAPI document, with every default check, against the real app and database."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

import asyncpg
import hypothesis
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from schemathesis import Case, Config
from schemathesis.generation.stateful.state_machine import APIStateMachine

from api.main import create_app
from api.openapi_export import build_openapi
from service.auth.scopes import SCOPES
from service.settings import Settings
from tests.builders.indicators import DOMAIN_TABLES
from tests.conftest import ClientMaker, RegisteredClient

SERVER_START_TIMEOUT_S = 20.0

# CI explores the same examples on every run, so a landing is not decided by chance; local runs
# draw new examples each time and keep finding new inputs.
DERANDOMIZE = os.environ.get("CI", "").lower() == "true"

# Schemathesis' defaults, plus 413 as a rejection of invalid data: a generated body over
# `max_body_bytes` is refused before it is parsed, as SPEC 3 requires.
NEGATIVE_DATA_REJECTION_STATUSES = "400 401 403 404 405 406 409 413 415 422 428 429 5xx".split()

# Rules JSON Schema cannot state answer 422 naming the field, and Schemathesis counts that as
# "valid data rejected". Each operation below is listed with the rule that does it; every other
# check (no 5xx, documented statuses and content types, response schemas...) still applies.
BUSINESS_RULE_422 = {
    ("POST", "/v1/referrals"): "dates relative to today; date of birth xor expected date, sex U",
    ("GET", "/v1/referrals"): "a cursor this service issued; instants in years 1-9999 in UTC",
    ("POST", "/v1/referrals/{referral_id}/decision"): "decided_at not before received_at",
    ("GET", "/v1/audit-events"): "a cursor this service issued; instants in years 1-9999 in UTC",
    ("GET", "/v1/toolkits"): "a cursor must be one this service issued",
    ("GET", "/v1/children/{child_id}/assessments"): "a cursor must be one this service issued",
    ("GET", "/v1/indicators/{indicator_id}"): "that indicator's breakdowns and periods; from <= to",
    ("GET", "/v1/indicators/{indicator_id}/meta.csv"): "a breakdown that indicator offers",
    ("POST", "/v1/clients"): "client_id may only be chosen for an external issuer's client",
    ("POST", "/v1/toolkits"): "a definition's ids must be unique and resolve",
    ("POST", "/v1/assessments"): "responses must match the toolkit's items; child voice rules",
    (
        "POST",
        "/v1/case-audits",
    ): "a child to match on; effectiveness only when the toolkit was used",
    ("GET", "/v1/case-audits"): "a cursor must be one this service issued",
    ("POST", "/v1/toolkits/{toolkit_id}/versions/{version}/score"): "responses match the items",
    (
        "POST",
        "/v1/webhooks",
    ): "a URL the egress rules admit; each event type's scope allowed; a key reused, another body",
    ("GET", "/v1/webhooks"): "a cursor must be one this service issued",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "a cursor must be one this service issued",
    ("POST", "/v1/webhooks/{webhook_id}/replay"): "a message id or a range; until after since",
    ("POST", "/v1/census-imports"): "the body must be a well-formed CIN census XML file",
}
POSITIVE_STATUSES_WITH_422 = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]

# Each override names one operation by `include-name` ("METHOD /path"): separate `include-method`
# and `include-path` keys are two filters that either can satisfy, so they would apply an override
# to every operation with that method as well.
CONFIG = Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": NEGATIVE_DATA_REJECTION_STATUSES}
        },
        "operations": [
            {
                "include-name": f"{method} {path}",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES_WITH_422}
                },
            }
            for method, path in BUSINESS_RULE_422
        ]
        + [
            # SPEC 2.4: a batch is accepted and each bad event is rejected in the per-event
            # results (200), so an event that breaks the documented union is not a 4xx.
            {
                "include-name": "POST /v1/case-events",
                "checks": {"negative_data_rejection": {"enabled": False}},
            }
        ],
    }
)

# The document is built from the app itself, so new routes are covered as soon as they exist.
schema = schemathesis.openapi.from_dict(build_openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def served_api(settings: Settings, runtime_database_url: str) -> Iterator[str]:
    """The app served by uvicorn in a thread, with its own lifespan, on a free loopback port.

    Schemathesis calls it over real HTTP: its ASGI client would run the app in another event
    loop, where the test session's engine cannot be used.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, runtime_database_url),
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)
        listener.close()


@pytest.fixture(scope="module")
async def full_access_client(app: FastAPI) -> RegisteredClient:
    """A client holding every scope, so every operation gets past authorization."""
    return await ClientMaker(app)(list(SCOPES), agency_type="front_door")


@pytest.fixture(scope="module")
def full_access_headers(full_access_client: RegisteredClient) -> dict[str, str]:
    return full_access_client.headers


@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    derandomize=DERANDOMIZE,
    # too_slow: each example is a real HTTP round trip and database transaction.
    # function_scoped_fixture: the only one is conftest's autouse log check, meant to span
    # every example of the test.
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.function_scoped_fixture,
    ],
)
def test_the_api_conforms_to_its_openapi_document(
    case: Case[Any], served_api: str, full_access_headers: dict[str, str]
) -> None:
    case.call_and_validate(base_url=served_api, headers=full_access_headers, timeout=30)


async def database_now(database_url: str) -> datetime:
    connection = await asyncpg.connect(database_url)
    try:
        now: datetime = await connection.fetchval("SELECT clock_timestamp()")
        return now
    finally:
        await connection.close()


async def reset_to(database_url: str, since: datetime, caller: RegisteredClient) -> None:
    """Undo what earlier scenarios stored: the domain tables (case audits with them), and the
    toolkits, feed keys, clients, idempotency records and rate-limit counters made since
    `since`. The audit trail stays (it refuses deletion), and it changes no status code."""
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute(f"TRUNCATE {', '.join(DOMAIN_TABLES)} CASCADE")
            await connection.execute("DELETE FROM toolkit_version WHERE published_at >= $1", since)
            await connection.execute("DELETE FROM feed_key WHERE created_at >= $1", since)
            await connection.execute(
                "DELETE FROM api_client WHERE created_at >= $1 AND client_id <> $2",
                since,
                caller.client_id,
            )
            await connection.execute(
                "DELETE FROM idempotency_record WHERE client_id = $1", caller.client_id
            )
            await connection.execute(
                "DELETE FROM rate_limit_counter WHERE strpos(key, $1) > 0 OR strpos(key, $2) > 0",
                caller.client_id,
                "127.0.0.1",
            )
    finally:
        await connection.close()


def test_api_workflows_conform_to_its_openapi_document(
    served_api: str, database_url: str, full_access_client: RegisteredClient
) -> None:
    """Chains of calls along the links Schemathesis infers (create, then read, decide, withdraw...),
    with the stateful checks as well (a deleted or unseen resource must not be served).

    Every scenario starts from the same stored state. Which step Hypothesis may draw next depends
    on the answers before it (their status codes, the values a link can carry), so a scenario
    replayed while shrinking, or generated again from the same choices, must get the same
    answers: otherwise an external reference or idempotency key already used by an earlier
    scenario turns a 201 into a 409, and Hypothesis stops with FlakyStrategyDefinition
    ("inconsistent data generation") instead of a verdict.
    """
    headers = full_access_client.headers
    started = asyncio.run(database_now(database_url))

    def get_call_kwargs(self: object, case: Case[Any]) -> dict[str, Any]:
        return {"base_url": served_api, "headers": headers, "timeout": 30}

    def setup(self: object) -> None:
        asyncio.run(reset_to(database_url, started, full_access_client))

    base = schema.as_state_machine()
    workflows = cast(
        type[APIStateMachine],
        type("Workflows", (base,), {"get_call_kwargs": get_call_kwargs, "setup": setup}),
    )
    workflows.run(
        settings=hypothesis.settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=DERANDOMIZE,
            suppress_health_check=[
                hypothesis.HealthCheck.too_slow,
                hypothesis.HealthCheck.function_scoped_fixture,
            ],
        )
    )
