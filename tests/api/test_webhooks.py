"""Webhook subscriptions and the outbox (issue 12, SPEC 2.7): a client's own endpoints, secrets
shown once and stored encrypted, events written in the transaction of the change and routed to
the agency they concern, thin payloads."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.db import SessionFactory
from tests.bodies import valid_decision_body, valid_withdraw_body
from tests.builders.assessments import assessment_body, post_assessment, publish_demo
from tests.builders.referrals import PROBLEMS, create_referral, post_referral, referral_body
from tests.builders.webhooks import deliveries_of, end_subscriptions, fan_out, subscribe
from tests.conftest import ClientMaker, RegisteredClient

HOOK = "https://receiver.example/hooks/neglect"
PARTNER = ["referrals:write", "referrals:read", "webhooks:manage"]
FRONT_DOOR = ["referrals:read", "referrals:read:all", "referrals:decide", "webhooks:manage"]


@pytest.fixture
async def made(
    make_client: ClientMaker, session_factory: SessionFactory
) -> AsyncIterator[list[RegisteredClient]]:
    """Clients a test registers through `register`; their subscriptions end with the test."""
    clients: list[RegisteredClient] = []
    yield clients
    await end_subscriptions(session_factory, [each.client_id for each in clients])


@pytest.fixture
def register(make_client: ClientMaker, made: list[RegisteredClient]) -> ClientMaker:
    class Tracking(ClientMaker):
        async def __call__(self, *args: Any, **kwargs: Any) -> RegisteredClient:
            registered = await make_client(*args, **kwargs)
            made.append(registered)
            return registered

    return Tracking(make_client.app)


# --- Subscriptions ------------------------------------------------------------------------------


async def test_create_shows_a_standard_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    partner = await register(PARTNER)
    created = await subscribe(client, partner, HOOK, ["referral.decided"])
    secret: str = created["secret"]
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    async with session_factory() as session:
        stored = (
            await session.execute(
                text("SELECT secret_enc FROM webhook_subscription WHERE id = :id"),
                {"id": created["id"]},
            )
        ).scalar_one()
    assert secret.encode() not in stored
    assert base64.b64decode(secret.removeprefix("whsec_")) not in stored
    shown = await client.get(f"/v1/webhooks/{created['id']}", headers=partner.headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert shown.json()["event_types"] == ["referral.decided"]


async def test_a_retried_create_replays_the_answer_without_the_secret(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    partner = await register(PARTNER)
    headers = {**partner.headers, "Idempotency-Key": uuid.uuid4().hex}
    body = {"url": HOOK, "event_types": ["referral.withdrawn"]}
    first = await client.post("/v1/webhooks", json=body, headers=headers)
    again = await client.post("/v1/webhooks", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["secret"] is None
    assert again.headers["location"] == first.headers["location"]
    assert first.headers["location"] == f"/v1/webhooks/{first.json()['id']}"
    listed = await client.get("/v1/webhooks", headers=partner.headers)
    assert [each["id"] for each in listed.json()["items"]] == [first.json()["id"]]


async def test_a_client_manages_only_its_own_subscriptions(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    owner = await register(PARTNER)
    other = await register(PARTNER)
    created = await subscribe(client, owner, HOOK, ["referral.decided"])
    base = f"/v1/webhooks/{created['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", {}),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/replay", {"since": "2026-01-01T00:00:00Z"}),
    ]:
        response = await client.request(method, path, json=body, headers=other.headers)
        assert response.status_code == 404, f"{method} {path}: {response.status_code}"
        assert response.json()["type"] == PROBLEMS + "not-found"
    assert (await client.get("/v1/webhooks", headers=other.headers)).json()["items"] == []
    assert (await client.get(base, headers=owner.headers)).status_code == 200


async def test_a_url_that_is_not_https_is_refused_naming_the_field(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    partner = await register(PARTNER)
    response = await client.post(
        "/v1/webhooks",
        json={"url": "http://receiver.example/hook", "event_types": ["referral.decided"]},
        headers={**partner.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body.url"]


async def test_an_event_type_needs_the_scope_that_reads_its_record(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    partner = await register(PARTNER)  # not the Front Door: no referrals:read:all
    response = await client.post(
        "/v1/webhooks",
        json={"url": HOOK, "event_types": ["referral.decided", "referral.received"]},
        headers={**partner.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body.event_types[1]"
    assert "referrals:read:all" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": HOOK, "event_types": ["referral.decision_made"]},
        {"url": HOOK, "event_types": []},
        {"url": HOOK, "event_types": ["referral.decided", "referral.decided"]},
        {"url": HOOK, "event_types": ["referral.decided"], "secret": "whsec_mine"},
        {"url": "https://receiver.example/\u0000", "event_types": ["referral.decided"]},
    ],
    ids=["unknown type", "no type", "repeated type", "own secret", "NUL"],
)
async def test_a_bad_subscription_body_is_a_422_problem(
    client: httpx.AsyncClient, register: ClientMaker, body: dict[str, Any]
) -> None:
    partner = await register(PARTNER)
    response = await client.post(
        "/v1/webhooks",
        json=body,
        headers={**partner.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message_id": "msg_" + "0" * 32, "since": "2026-01-01T00:00:00Z"},
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"message_id": "msg_has.a.dot"},
    ],
    ids=["nothing named", "id and range", "range backwards", "bad id"],
)
async def test_a_replay_names_one_event_or_a_time_range(
    client: httpx.AsyncClient, register: ClientMaker, body: dict[str, Any]
) -> None:
    partner = await register(PARTNER)
    created = await subscribe(client, partner, HOOK, ["referral.decided"])
    response = await client.post(
        f"/v1/webhooks/{created['id']}/replay", json=body, headers=partner.headers
    )
    assert response.status_code == 422


async def test_webhook_routes_need_the_webhooks_manage_scope(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    partner = await register(["referrals:write", "referrals:read"])
    response = await client.get("/v1/webhooks", headers=partner.headers)
    assert response.status_code == 403
    assert 'scope="webhooks:manage"' in response.headers["www-authenticate"]


async def test_rotation_issues_a_new_secret_and_keeps_the_old_one_for_the_grace_period(
    client: httpx.AsyncClient, register: ClientMaker
) -> None:
    partner = await register(PARTNER)
    created = await subscribe(client, partner, HOOK, ["referral.decided"])
    rotated = await client.post(
        f"/v1/webhooks/{created['id']}/rotate-secret",
        json={"grace_period_s": 3600},
        headers=partner.headers,
    )
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert rotated.json()["secret_rotated_at"] is not None


# --- The outbox: events in the transaction of the change ---------------------------------------


async def _messages_about(factory: SessionFactory, resource_id: str) -> list[dict[str, Any]]:
    async with factory() as session:
        rows = await session.execute(
            text(
                "SELECT id, event_type, agency_name, body, occurred_at, "
                "EXISTS (SELECT FROM webhook_fan_out f WHERE f.message_id = m.id) AS waiting "
                "FROM webhook_message m WHERE body::jsonb -> 'data' ->> 'referral_id' = :id "
                "OR body::jsonb -> 'data' ->> 'assessment_id' = :id ORDER BY occurred_at"
            ),
            {"id": resource_id},
        )
        return [dict(row) for row in rows.mappings()]


async def test_a_referral_create_writes_its_received_event_for_the_front_door(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    front_door = await register(FRONT_DOOR, agency_type="front_door")
    partner = await register(PARTNER)
    hook = await subscribe(client, front_door, HOOK, ["referral.received"])
    referral = await create_referral(client, partner)
    [message] = await _messages_about(session_factory, referral["id"])
    assert message["event_type"] == "referral.received"
    assert message["agency_name"] == partner.agency_name
    # The create writes its event and nothing else; a worker's fan-out makes the delivery, due
    # when the event occurred.
    assert message["waiting"] is True
    assert await deliveries_of(session_factory, hook["id"]) == []
    assert await fan_out(session_factory) >= 1
    [delivery] = await deliveries_of(session_factory, hook["id"])
    assert delivery["message_id"] == message["id"]
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"] == message["occurred_at"]
    [fanned] = await _messages_about(session_factory, referral["id"])
    assert fanned["waiting"] is False
    assert await fan_out(session_factory) == 0
    assert len(await deliveries_of(session_factory, hook["id"])) == 1


async def test_a_referral_create_that_fails_writes_no_event(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    partner = await register(PARTNER)
    body = referral_body()
    await create_referral(client, partner, body)
    # The same external reference again: the function's INSERT fails, and the statement with it.
    again = referral_body(external_reference=body["external_reference"])
    refused = await post_referral(client, partner, again)
    assert refused.status_code == 409
    async with session_factory() as session:
        events = await session.scalar(
            text("SELECT count(*) FROM webhook_message WHERE agency_name = :agency"),
            {"agency": partner.agency_name},
        )
    assert events == 1


async def test_a_decision_goes_to_the_referring_agencys_subscription_and_no_other(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    agency_a = await register(PARTNER)
    agency_b = await register(PARTNER)
    front_door = await register(FRONT_DOOR, agency_type="front_door")
    hook_a = await subscribe(client, agency_a, HOOK, ["referral.decided"])
    hook_b = await subscribe(client, agency_b, HOOK, ["referral.decided"])
    hook_fd = await subscribe(client, front_door, HOOK, ["referral.decided"])
    referral = await create_referral(client, agency_a)
    decided = await client.post(
        f"/v1/referrals/{referral['id']}/decision",
        json=valid_decision_body(),
        headers=front_door.headers,
    )
    assert decided.status_code == 200
    assert await fan_out(session_factory) >= 1
    [delivery] = await deliveries_of(session_factory, hook_a["id"])
    assert delivery["event_type"] == "referral.decided"
    assert json.loads(delivery["body"])["data"]["referral_id"] == referral["id"]
    assert await deliveries_of(session_factory, hook_b["id"]) == []
    assert await deliveries_of(session_factory, hook_fd["id"]) == []


async def test_a_withdrawal_goes_to_the_referring_agency(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    partner = await register(PARTNER)
    hook = await subscribe(client, partner, HOOK, ["referral.withdrawn", "referral.decided"])
    referral = await create_referral(client, partner)
    withdrawn = await client.post(
        f"/v1/referrals/{referral['id']}/withdraw",
        json=valid_withdraw_body(),
        headers=partner.headers,
    )
    assert withdrawn.status_code == 200
    assert await fan_out(session_factory) >= 1
    [delivery] = await deliveries_of(session_factory, hook["id"])
    assert delivery["event_type"] == "referral.withdrawn"
    assert json.loads(delivery["body"])["data"]["status"] == "withdrawn"


async def test_an_assessment_goes_to_the_assessing_agency(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    await publish_demo(session_factory)
    scopes = ["assessments:write", "assessments:read", "webhooks:manage"]
    assessor = await register(scopes, agency_type="early_help")
    elsewhere = await register(scopes, agency_type="health")
    hook = await subscribe(client, assessor, HOOK, ["assessment.completed"])
    other_hook = await subscribe(client, elsewhere, HOOK, ["assessment.completed"])
    assessment = await post_assessment(client, assessor, assessment_body())
    assert await fan_out(session_factory) >= 1
    [delivery] = await deliveries_of(session_factory, hook["id"])
    assert delivery["event_type"] == "assessment.completed"
    data = json.loads(delivery["body"])["data"]
    assert data == {
        "assessment_id": assessment["id"],
        "status": "completed",
        "links": {"self": f"/v1/assessments/{assessment['id']}"},
    }
    assert await deliveries_of(session_factory, other_hook["id"]) == []


async def test_the_payload_holds_ids_a_status_and_a_link_and_no_personal_data(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    partner = await register(PARTNER)
    front_door = await register(FRONT_DOOR, agency_type="front_door")
    hook = await subscribe(client, partner, HOOK, ["referral.decided"])
    body = referral_body()
    referral = await create_referral(client, partner, body)
    decision = valid_decision_body()
    await client.post(
        f"/v1/referrals/{referral['id']}/decision", json=decision, headers=front_door.headers
    )
    assert await fan_out(session_factory) >= 1
    [delivery] = await deliveries_of(session_factory, hook["id"])
    sent: str = delivery["body"]
    payload = json.loads(sent)
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["data"] == {
        "referral_id": referral["id"],
        "status": "decided",
        "links": {"self": f"/v1/referrals/{referral['id']}"},
    }
    child = body["child"]
    personal = [
        child["nhs_number"],
        child["given_name"],
        child["family_name"],
        child["date_of_birth"],
        body["external_reference"],
        decision["rationale"],
        decision["decided_by"],
        partner.agency_name,
    ]
    assert [value for value in personal if value and str(value) in sent] == []


async def test_deleting_a_subscription_cancels_what_it_had_pending(
    client: httpx.AsyncClient, register: ClientMaker, session_factory: SessionFactory
) -> None:
    partner = await register(PARTNER)
    hook = await subscribe(client, partner, HOOK, ["referral.withdrawn"])
    referral = await create_referral(client, partner)
    await client.post(
        f"/v1/referrals/{referral['id']}/withdraw",
        json=valid_withdraw_body(),
        headers=partner.headers,
    )
    assert await fan_out(session_factory) >= 1
    deleted = await client.delete(f"/v1/webhooks/{hook['id']}", headers=partner.headers)
    assert deleted.status_code == 204
    [delivery] = await deliveries_of(session_factory, hook["id"])
    assert delivery["status"] == "cancelled"
    gone = await client.get(f"/v1/webhooks/{hook['id']}", headers=partner.headers)
    assert gone.status_code == 404


async def test_deliveries_are_listed_newest_first_a_page_at_a_time(
    app: FastAPI,
    client: httpx.AsyncClient,
    register: ClientMaker,
    session_factory: SessionFactory,
) -> None:
    front_door = await register(FRONT_DOOR, agency_type="front_door")
    partner = await register(PARTNER)
    hook = await subscribe(client, front_door, HOOK, ["referral.received"])
    made = [(await create_referral(client, partner))["id"] for _ in range(3)]
    assert await fan_out(session_factory) >= 1
    url = f"/v1/webhooks/{hook['id']}/deliveries"
    first = await client.get(url, params={"limit": 2}, headers=front_door.headers)
    assert first.status_code == 200
    cursor = first.json()["next_cursor"]
    second = await client.get(
        url, params={"limit": 2, "cursor": cursor}, headers=front_door.headers
    )
    items = first.json()["items"] + second.json()["items"]
    assert second.json()["next_cursor"] is None
    assert [item["status"] for item in items] == ["pending"] * 3
    assert [item["attempts"] for item in items] == [[], [], []]
    assert len({item["message_id"] for item in items}) == 3
    messages = {
        message["id"]: referral_id
        for referral_id in made
        for message in await _messages_about(session_factory, referral_id)
    }
    assert [messages[item["message_id"]] for item in items] == made[::-1]
