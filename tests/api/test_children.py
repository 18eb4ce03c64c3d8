"""GET /v1/children/{id}: identity plus the timeline of records the caller may see."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db import SessionFactory, transaction
from tests.builders.referrals import count_rows, create_referral, next_nhs_number, referral_body
from tests.conftest import ClientMaker, RegisteredClient

REFERRER_SCOPES = ["referrals:write", "referrals:read"]


@pytest.fixture
async def school(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(REFERRER_SCOPES)


@pytest.fixture
async def health(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(REFERRER_SCOPES, agency_type="health")


@pytest.fixture
async def front_door(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(
        ["referrals:read", "referrals:read:all"], agency_type="local_authority"
    )


async def store_assessment(
    factory: SessionFactory,
    child_id: str,
    agency: RegisteredClient,
    completed_on: date,
    level_of_need: int = 3,
) -> str:
    """An assessment row as the assessments service stores it (the columns the timeline needs)."""
    assessment_id = uuid.uuid4()
    async with transaction(factory) as session:
        await session.execute(
            text(
                "INSERT INTO assessment (id, client_id, agency_type, agency_name, child_id, "
                "toolkit_id, toolkit_version, toolkit_sha256, completed_on, areas_at_concern, "
                "areas_at_significant_concern, level_of_need, body, result) VALUES (:id, :client, "
                "'school', :agency, :child, 'demo-neglect-toolkit', '1.0.0', :sha, :completed_on, "
                "1, 0, :level, CAST('{}' AS jsonb), CAST('{}' AS jsonb))"
            ),
            {
                "id": assessment_id,
                "client": agency.client_id,
                "agency": agency.agency_name,
                "child": uuid.UUID(child_id),
                "sha": "0" * 64,
                "completed_on": completed_on,
                "level": level_of_need,
            },
        )
    return str(assessment_id)


async def store_case_event(
    factory: SessionFactory, child_id: str, event_type: str, occurred_on: date
) -> str:
    """A case event row as the case-events service would store it."""
    event_id = uuid.uuid4()
    async with transaction(factory) as session:
        await session.execute(
            text(
                "INSERT INTO case_event (id, client_id, agency_type, agency_name, event_id, "
                "payload_sha256, child_id, event_type, occurred_on, details) VALUES (:id, "
                "'council-case-system', 'local_authority', 'Sampletown Council', :event_id, :sha, "
                ":child, :event_type, :occurred_on, CAST('{}' AS jsonb))"
            ),
            {
                "id": event_id,
                "event_id": f"EV-{event_id.hex}",
                "sha": "0" * 64,
                "child": uuid.UUID(child_id),
                "event_type": event_type,
                "occurred_on": occurred_on,
            },
        )
    return str(event_id)


async def get_child(
    client: httpx.AsyncClient, reader: RegisteredClient, child_id: str
) -> httpx.Response:
    return await client.get(f"/v1/children/{child_id}", headers=reader.headers)


def timeline_ids(child: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in child["timeline"]]


async def test_the_referrer_sees_the_childs_identity(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    body = referral_body()
    created = await create_referral(client, school, body)
    response = await get_child(client, school, created["child_id"])
    assert response.status_code == 200
    child = response.json()
    assert child["id"] == created["child_id"]
    assert child["nhs_number"] == body["child"]["nhs_number"]
    assert child["family_name"] == body["child"]["family_name"]
    assert child["date_of_birth"] == body["child"]["date_of_birth"]


async def test_the_referrer_sees_its_referral_on_the_timeline(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    child = (await get_child(client, school, created["child_id"])).json()
    [entry] = child["timeline"]
    assert entry["kind"] == "referral"
    assert entry["id"] == created["id"]
    assert entry["status"] == "received"
    assert entry["agency_name"] == school.agency_name
    assert "neglect" in entry["summary"]


async def test_the_timeline_summary_carries_no_personal_data(
    client: httpx.AsyncClient, school: RegisteredClient
) -> None:
    body = referral_body()
    created = await create_referral(client, school, body)
    child = (await get_child(client, school, created["child_id"])).json()
    summaries = " ".join(entry["summary"] for entry in child["timeline"])
    for personal in (body["child"]["family_name"], body["child"]["nhs_number"]):
        assert personal not in summaries


async def test_an_agency_sees_only_its_own_referrals_about_the_child(
    client: httpx.AsyncClient, school: RegisteredClient, health: RegisteredClient
) -> None:
    nhs = next_nhs_number()
    own = await create_referral(client, school, referral_body(nhs_number=nhs))
    await create_referral(client, health, referral_body(nhs_number=nhs))
    child = (await get_child(client, school, own["child_id"])).json()
    assert timeline_ids(child) == [own["id"]]


async def test_a_child_with_nothing_visible_is_404_like_a_missing_child(
    client: httpx.AsyncClient, school: RegisteredClient, health: RegisteredClient
) -> None:
    created = await create_referral(client, school)
    hidden = await get_child(client, health, created["child_id"])
    missing = await get_child(client, health, str(uuid.uuid4()))
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json()["detail"] == missing.json()["detail"]


async def test_the_front_door_sees_every_agencys_referrals_newest_first(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    health: RegisteredClient,
    front_door: RegisteredClient,
) -> None:
    nhs = next_nhs_number()
    older = await create_referral(
        client, health, referral_body(nhs_number=nhs, received_at="2025-01-10T10:00:00+00:00")
    )
    newer = await create_referral(client, school, referral_body(nhs_number=nhs))
    child = (await get_child(client, front_door, newer["child_id"])).json()
    assert timeline_ids(child) == [newer["id"], older["id"]]


async def test_an_agency_sees_its_own_assessments_but_not_others(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    health: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(client, school)
    own = await store_assessment(session_factory, created["child_id"], school, date(2025, 3, 1))
    await store_assessment(session_factory, created["child_id"], health, date(2025, 4, 1))
    child = (await get_child(client, school, created["child_id"])).json()
    assert timeline_ids(child) == [created["id"], own]
    assessment = child["timeline"][1]
    assert (assessment["kind"], assessment["level_of_need"]) == ("assessment", 3)
    assert assessment["occurred_at"].startswith("2025-03-01T00:00:00")


async def test_an_agency_with_only_an_assessment_sees_the_child(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    health: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(client, school)
    assessment = await store_assessment(
        session_factory, created["child_id"], health, date(2025, 5, 1)
    )
    child = (await get_child(client, health, created["child_id"])).json()
    assert timeline_ids(child) == [assessment]


async def test_the_front_door_sees_case_events_and_every_assessment(
    client: httpx.AsyncClient,
    school: RegisteredClient,
    health: RegisteredClient,
    front_door: RegisteredClient,
    session_factory: SessionFactory,
) -> None:
    created = await create_referral(
        client, school, referral_body(received_at="2025-01-10T10:00:00+00:00")
    )
    child_id = created["child_id"]
    assessment = await store_assessment(session_factory, child_id, health, date(2025, 2, 1))
    event = await store_case_event(session_factory, child_id, "section47_started", date(2025, 3, 1))
    child = (await get_child(client, front_door, child_id)).json()
    assert timeline_ids(child) == [event, assessment, created["id"]]
    assert child["timeline"][0]["event_type"] == "section47_started"


async def test_case_events_are_hidden_from_a_referring_agency(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    created = await create_referral(client, school)
    await store_case_event(session_factory, created["child_id"], "cin_plan_started", date.today())
    child = (await get_child(client, school, created["child_id"])).json()
    assert [entry["kind"] for entry in child["timeline"]] == ["referral"]


async def test_reading_a_child_appends_an_audit_event_with_the_access_reason(
    client: httpx.AsyncClient, school: RegisteredClient, session_factory: SessionFactory
) -> None:
    created = await create_referral(client, school)
    headers = {**school.headers, "X-Access-Reason": "Checking our referral"}
    await client.get(f"/v1/children/{created['child_id']}", headers=headers)
    assert (
        await count_rows(
            session_factory,
            "SELECT count(*) FROM audit_event WHERE action = 'read' AND resource_type = 'child' "
            "AND child_id = :child AND access_reason = 'Checking our referral'",
            child=uuid.UUID(created["child_id"]),
        )
        == 1
    )


async def test_reading_a_child_needs_the_referrals_read_scope(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    writer = await make_client(["referrals:write"])
    created = await create_referral(client, writer)
    response = await get_child(client, writer, created["child_id"])
    assert response.status_code == 403
