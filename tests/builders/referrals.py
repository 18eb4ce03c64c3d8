"""Builders for referral tests: unique children and references, and small HTTP helpers.

Tests commit for real into one database per worker, so every child a test makes must be new:
`next_nhs_number` walks the synthetic 999 range from a random start, never repeating within the
test process, and `unique_family_name` gives name + date-of-birth matching a name nobody else uses.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from schemas.identifiers import SYNTHETIC_NHS_PREFIX, compute_nhs_check_digit
from service.db import SessionFactory
from tests.bodies import valid_referral_body
from tests.conftest import RegisteredClient

PROBLEMS = "https://neglect-service.example/problems/"
"""The start of every problem `type` URI (SPEC 3), spelled out so a change to it fails a test."""

_NHS_SERIALS = itertools.count(random.SystemRandom().randrange(1_000_000))


def next_nhs_number() -> str:
    """A valid synthetic NHS number (999 range) this test process has not handed out before."""
    while True:
        first_nine = f"{SYNTHETIC_NHS_PREFIX}{next(_NHS_SERIALS) % 1_000_000:06d}"
        check = compute_nhs_check_digit(first_nine)
        if check is not None:
            return first_nine + str(check)


def unique_seed() -> int:
    """A seed for `tests.bodies` builders (names, date of birth, sex) that varies per test."""
    return uuid.uuid4().int % 1_000_000


def unique_family_name() -> str:
    """A family name made of letters only, so its matching key is itself in lower case."""
    letters = "".join(chr(ord("a") + int(digit, 16) % 26) for digit in uuid.uuid4().hex[:12])
    return "Match" + letters


def referral_body(*, nhs_number: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid referral for a new child with a unique external reference."""
    nhs = nhs_number or next_nhs_number()
    body = valid_referral_body(seed=unique_seed(), nhs_number=nhs)
    body["external_reference"] = f"RFS-{uuid.uuid4().hex}"
    body.update(overrides)
    return body


def idempotency_headers(registered: RegisteredClient, key: str | None = None) -> dict[str, str]:
    return {**registered.headers, "Idempotency-Key": key or uuid.uuid4().hex}


async def post_referral(
    client: httpx.AsyncClient,
    registered: RegisteredClient,
    body: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response:
    return await client.post(
        "/v1/referrals",
        json=body if body is not None else referral_body(),
        headers=idempotency_headers(registered, key),
    )


async def create_referral(
    client: httpx.AsyncClient,
    registered: RegisteredClient,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST a referral that must succeed; its response body."""
    response = await post_referral(client, registered, body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def count_rows(factory: SessionFactory, sql: str, **params: Any) -> int:
    """`SELECT count(*) ...` in its own session."""
    async with factory() as session:
        return int(await session.scalar(text(sql), params) or 0)


async def count_referrals(factory: SessionFactory) -> int:
    return await count_rows(factory, "SELECT count(*) FROM referral")


async def count_children_with_nhs_number(factory: SessionFactory, nhs_number: str) -> int:
    return await count_rows(
        factory, "SELECT count(*) FROM child WHERE nhs_number = :nhs", nhs=nhs_number
    )


async def count_audit_events(
    factory: SessionFactory,
    action: str,
    resource_id: str | None = None,
    client_id: str | None = None,
) -> int:
    """Audit events of `action` on the resource and/or by the client given."""
    return await count_rows(
        factory,
        "SELECT count(*) FROM audit_event WHERE action = :action "
        "AND (CAST(:resource_id AS text) IS NULL OR resource_id = :resource_id) "
        "AND (CAST(:client_id AS text) IS NULL OR client_id = :client_id)",
        action=action,
        resource_id=resource_id,
        client_id=client_id,
    )
