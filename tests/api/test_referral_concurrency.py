"""Concurrent requests against one app: idempotent creates, child matching, transitions.

The requests run together on the test's event loop through the same ASGI app, so they share the
app's connection pool and race in PostgreSQL exactly as requests from many clients would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx

from service.db import SessionFactory
from tests.bodies import valid_decision_body
from tests.builders.referrals import (
    count_audit_events,
    count_children_with_nhs_number,
    count_rows,
    create_referral,
    next_nhs_number,
    post_referral,
    referral_body,
)
from tests.conftest import ClientMaker


async def test_50_concurrent_posts_with_one_key_create_one_referral_and_one_audit_event(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    referrer = await make_client(["referrals:write"])
    body, key = referral_body(), uuid.uuid4().hex

    responses = await asyncio.gather(
        *(post_referral(client, referrer, body, key) for _ in range(50))
    )

    assert Counter(response.status_code for response in responses) == {201: 50}
    ids = {response.json()["id"] for response in responses}
    assert len(ids) == 1
    [referral_id] = ids
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM referral WHERE client_id = :client",
            client=referrer.client_id,
        )
        == 1
    )
    assert await count_audit_events(session_factory, "create", referral_id) == 1


async def test_50_concurrent_posts_with_one_key_replay_49_times(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    body, key = referral_body(), uuid.uuid4().hex

    responses = await asyncio.gather(
        *(post_referral(client, referrer, body, key) for _ in range(50))
    )

    replayed = [response for response in responses if "Idempotent-Replayed" in response.headers]
    assert len(replayed) == 49
    first = responses[0].json()
    assert all(response.json() == first for response in responses)


async def test_20_concurrent_referrals_for_one_new_child_resolve_to_one_child(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    referrer = await make_client(["referrals:write"])
    nhs = next_nhs_number()

    responses = await asyncio.gather(
        *(post_referral(client, referrer, referral_body(nhs_number=nhs)) for _ in range(20))
    )

    assert [response.status_code for response in responses] == [201] * 20
    assert len({response.json()["child_id"] for response in responses}) == 1
    assert await count_children_with_nhs_number(session_factory, nhs) == 1


async def test_concurrent_referrals_for_one_child_count_each_other_as_rereferrals(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    nhs = next_nhs_number()

    responses = await asyncio.gather(
        *(post_referral(client, referrer, referral_body(nhs_number=nhs)) for _ in range(10))
    )

    # The child's advisory lock serialises them, so each sees all that committed before it.
    counts = sorted(response.json()["rereferral_count"] for response in responses)
    assert counts == list(range(10))


async def test_concurrent_posts_of_one_external_reference_with_different_keys_store_one(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    referrer = await make_client(["referrals:write"])
    reference = f"RFS-{uuid.uuid4().hex}"

    responses = await asyncio.gather(
        *(
            post_referral(client, referrer, referral_body(external_reference=reference))
            for _ in range(10)
        )
    )

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 1, 409: 9}
    [created] = [response.json() for response in responses if response.status_code == 201]
    conflicts = [response.json() for response in responses if response.status_code == 409]
    assert {problem["existing_id"] for problem in conflicts} == {created["id"]}


async def test_concurrent_decisions_on_one_referral_let_exactly_one_through(
    client: httpx.AsyncClient, make_client: ClientMaker, session_factory: SessionFactory
) -> None:
    referrer = await make_client(["referrals:write"])
    front_door = await make_client(["referrals:decide", "referrals:read:all"])
    created = await create_referral(client, referrer)
    outcomes = ["early_help", "no_further_action", "family_hub_support", "parenting_support"]

    responses = await asyncio.gather(
        *(
            client.post(
                f"/v1/referrals/{created['id']}/decision",
                json=valid_decision_body(outcome=outcome),
                headers=front_door.headers,
            )
            for outcome in outcomes
        )
    )

    assert sorted(response.status_code for response in responses) == [200, 409, 409, 409]
    [winner] = [response.json() for response in responses if response.status_code == 200]
    stored = await count_rows(
        session_factory,
        "SELECT count(*) FROM referral WHERE id = :rid AND decision_outcome = :outcome",
        rid=uuid.UUID(created["id"]),
        outcome=winner["decision"]["outcome"],
    )
    assert stored == 1
