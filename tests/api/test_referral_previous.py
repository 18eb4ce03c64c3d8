"""`referral.previous_received_at`: the child's latest earlier non-withdrawn referral, kept true as
referrals are created in order, back-loaded out of order and withdrawn (read by the re-referral
indicator instead of a window over every child's referrals)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory
from tests.bodies import valid_withdraw_body
from tests.builders.referrals import create_referral, next_nhs_number, referral_body
from tests.conftest import ClientMaker, RegisteredClient

REFERRER_SCOPES = ["referrals:write", "referrals:read"]


@pytest.fixture
async def school(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(REFERRER_SCOPES, agency_type="school")


def days_ago(days: int) -> datetime:
    """A whole second `days` days before now, so it reads back from the database unchanged."""
    return (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0)


async def refer(
    client: httpx.AsyncClient, school: RegisteredClient, nhs_number: str, received_at: datetime
) -> str:
    """Create a referral for the child with this NHS number received at `received_at`; its id."""
    body = referral_body(nhs_number=nhs_number, received_at=received_at.isoformat())
    created = await create_referral(client, school, body)
    referral_id: str = created["id"]
    return referral_id


async def withdraw(client: httpx.AsyncClient, school: RegisteredClient, referral_id: str) -> None:
    response = await client.post(
        f"/v1/referrals/{referral_id}/withdraw", json=valid_withdraw_body(), headers=school.headers
    )
    assert response.status_code == 200, response.text


async def previous_of(factory: SessionFactory, *referral_ids: str) -> list[datetime | None]:
    """The stored `previous_received_at` of each referral, in the order given."""
    async with factory() as session:
        rows = await session.execute(
            text("SELECT id, previous_received_at FROM referral WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(referral_id) for referral_id in referral_ids]},
        )
        stored = {str(row.id): row.previous_received_at for row in rows}
    return [stored[referral_id] for referral_id in referral_ids]


async def test_referrals_created_in_order_each_store_the_one_before(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    first_at, second_at, third_at = days_ago(30), days_ago(20), days_ago(10)
    first = await refer(client, school, nhs, first_at)
    second = await refer(client, school, nhs, second_at)
    third = await refer(client, school, nhs, third_at)

    assert await previous_of(session_factory, first, second, third) == [None, first_at, second_at]


async def test_a_referral_back_loaded_between_two_becomes_the_later_ones_previous(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    first_at, middle_at, last_at = days_ago(30), days_ago(20), days_ago(10)
    last = await refer(client, school, nhs, last_at)
    first = await refer(client, school, nhs, first_at)
    assert await previous_of(session_factory, last, first) == [first_at, None]

    middle = await refer(client, school, nhs, middle_at)

    assert await previous_of(session_factory, first, middle, last) == [None, first_at, middle_at]


async def test_a_referral_back_loaded_before_all_others_becomes_the_first_ones_previous(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    second_at, third_at = days_ago(20), days_ago(10)
    second = await refer(client, school, nhs, second_at)
    third = await refer(client, school, nhs, third_at)
    first_at = days_ago(30)

    first = await refer(client, school, nhs, first_at)

    assert await previous_of(session_factory, first, second, third) == [None, first_at, second_at]


async def test_withdrawing_a_referral_links_the_next_one_to_the_one_before(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    first_at = days_ago(30)
    first = await refer(client, school, nhs, first_at)
    middle = await refer(client, school, nhs, days_ago(20))
    last = await refer(client, school, nhs, days_ago(10))

    await withdraw(client, school, middle)

    assert await previous_of(session_factory, first, last) == [None, first_at]


async def test_withdrawing_the_first_referral_leaves_the_next_one_without_a_previous(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    first = await refer(client, school, nhs, days_ago(30))
    second = await refer(client, school, nhs, days_ago(20))

    await withdraw(client, school, first)

    assert await previous_of(session_factory, second) == [None]


async def test_a_withdrawn_referral_is_not_the_previous_of_a_later_or_back_loaded_one(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    withdrawn = await refer(client, school, nhs, days_ago(20))
    await withdraw(client, school, withdrawn)
    later = await refer(client, school, nhs, days_ago(10))
    earlier_at = days_ago(30)

    earlier = await refer(client, school, nhs, earlier_at)

    assert await previous_of(session_factory, later, earlier) == [earlier_at, None]


async def test_withdrawing_one_of_two_referrals_received_together_keeps_the_next_ones_previous(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    together_at = days_ago(20)
    withdrawn = await refer(client, school, nhs, together_at)
    await refer(client, school, nhs, together_at)
    later = await refer(client, school, nhs, days_ago(10))

    await withdraw(client, school, withdrawn)

    assert await previous_of(session_factory, later) == [together_at]


async def test_a_referral_back_loaded_before_a_withdrawn_one_becomes_its_previous_too(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    nhs = next_nhs_number()
    withdrawn = await refer(client, school, nhs, days_ago(20))
    await withdraw(client, school, withdrawn)
    earlier_at = days_ago(30)

    await refer(client, school, nhs, earlier_at)

    assert await previous_of(session_factory, withdrawn) == [earlier_at]
