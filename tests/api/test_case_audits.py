"""Multi-agency case audits over HTTP: create, child matching, idempotent replay, agency scoping,
the audit trail, validation and scopes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlmodel import col

from schemas.common import today_in_uk
from service.db import SessionFactory
from service.models import AuditEvent
from tests.builders.case_audits import (
    AUDIT_SCOPES,
    audit_headers,
    case_audit_body,
    post_case_audit,
)
from tests.builders.referrals import create_referral, next_nhs_number, referral_body
from tests.conftest import ClientMaker, RegisteredClient


@pytest.fixture
async def quality_team(make_client: ClientMaker) -> RegisteredClient:
    return await make_client(AUDIT_SCOPES, agency_type="local_authority")


def error_fields(response: httpx.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


async def stored_audits(factory: SessionFactory, agency_name: str) -> int:
    async with factory() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM case_audit WHERE agency_name = :agency"),
            {"agency": agency_name},
        )
    return int(count or 0)


# --- create and read -------------------------------------------------------------------------


async def test_an_audit_is_recorded_for_the_callers_agency_and_read_back(
    client: httpx.AsyncClient, quality_team: RegisteredClient
) -> None:
    body = case_audit_body(
        audited_work="early_help_assessment",
        practice_grade="requires_improvement",
        impact_grade="inadequate",
        toolkit_used=False,
        toolkit_use_effective=None,
    )

    created = await post_case_audit(client, quality_team, body)
    response = await client.get(f"/v1/case-audits/{created['id']}", headers=quality_team.headers)

    assert response.status_code == 200
    assert response.json() == created
    assert created["agency_name"] == quality_team.agency_name
    assert created["agency_type"] == "local_authority"
    expected = {key: value for key, value in body.items() if key != "child"}
    assert {key: created[key] for key in expected} == expected
    assert created["created_at"] is not None


async def test_the_audited_child_is_matched_like_any_other_record(
    client: httpx.AsyncClient, make_client: ClientMaker, quality_team: RegisteredClient
) -> None:
    referrer = await make_client(["referrals:write"])
    nhs_number = next_nhs_number()
    referral = await create_referral(client, referrer, referral_body(nhs_number=nhs_number))

    audit = await post_case_audit(
        client, quality_team, case_audit_body(child={"nhs_number": nhs_number})
    )

    assert audit["child_id"] == referral["child_id"]


async def test_a_retry_with_the_same_key_replays_the_first_answer(
    client: httpx.AsyncClient, quality_team: RegisteredClient, session_factory: SessionFactory
) -> None:
    body = case_audit_body()
    headers = audit_headers(quality_team, key="audit-retry-1")

    first = await client.post("/v1/case-audits", json=body, headers=headers)
    second = await client.post("/v1/case-audits", json=body, headers=headers)

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await stored_audits(session_factory, quality_team.agency_name) == 1


async def test_a_reused_key_with_a_different_body_is_422(
    client: httpx.AsyncClient, quality_team: RegisteredClient, session_factory: SessionFactory
) -> None:
    headers = audit_headers(quality_team, key="audit-reused-1")
    first = await client.post("/v1/case-audits", json=case_audit_body(), headers=headers)

    second = await client.post(
        "/v1/case-audits", json=case_audit_body(impact_grade="outstanding"), headers=headers
    )

    assert first.status_code == 201
    assert second.status_code == 422
    assert second.json()["type"].endswith("/idempotency-key-reused")
    assert await stored_audits(session_factory, quality_team.agency_name) == 1


async def test_a_create_without_an_idempotency_key_is_400(
    client: httpx.AsyncClient, quality_team: RegisteredClient, session_factory: SessionFactory
) -> None:
    response = await client.post(
        "/v1/case-audits", json=case_audit_body(), headers=quality_team.headers
    )

    assert response.status_code == 400
    assert await stored_audits(session_factory, quality_team.agency_name) == 0


# --- agency scoping --------------------------------------------------------------------------


async def test_another_agencys_audit_is_404_exactly_like_a_missing_one(
    client: httpx.AsyncClient, make_client: ClientMaker, quality_team: RegisteredClient
) -> None:
    created = await post_case_audit(client, quality_team, case_audit_body())
    other = await make_client(AUDIT_SCOPES, agency_type="health")

    theirs = await client.get(f"/v1/case-audits/{created['id']}", headers=other.headers)
    missing = await client.get(f"/v1/case-audits/{uuid.uuid4()}", headers=other.headers)

    assert (theirs.status_code, missing.status_code) == (404, 404)
    assert theirs.json() | {"instance": None, "request_id": None} == missing.json() | {
        "instance": None,
        "request_id": None,
    }


async def test_the_list_holds_only_the_agencys_audits_newest_first_in_pages(
    client: httpx.AsyncClient, make_client: ClientMaker, quality_team: RegisteredClient
) -> None:
    other = await make_client(AUDIT_SCOPES, agency_type="health")
    await post_case_audit(client, other, case_audit_body(audited_on="2024-05-01"))
    days = ["2024-01-10", "2024-03-02", "2024-02-20"]
    for day in days:
        await post_case_audit(client, quality_team, case_audit_body(audited_on=day))

    first = await client.get("/v1/case-audits", params={"limit": 2}, headers=quality_team.headers)
    second = await client.get(
        "/v1/case-audits",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=quality_team.headers,
    )

    pages = [first.json(), second.json()]
    assert [[item["audited_on"] for item in page["items"]] for page in pages] == [
        ["2024-03-02", "2024-02-20"],
        ["2024-01-10"],
    ]
    assert second.json()["next_cursor"] is None


async def test_the_list_filters_by_child_and_audit_days(
    client: httpx.AsyncClient, quality_team: RegisteredClient
) -> None:
    child = {"nhs_number": next_nhs_number()}
    mine = await post_case_audit(
        client, quality_team, case_audit_body(child=child, audited_on="2024-02-01")
    )
    await post_case_audit(
        client, quality_team, case_audit_body(child=child, audited_on="2023-11-01")
    )
    await post_case_audit(client, quality_team, case_audit_body(audited_on="2024-02-01"))

    response = await client.get(
        "/v1/case-audits",
        params={
            "child_id": mine["child_id"],
            "audited_from": "2024-01-01",
            "audited_to": "2024-02-01",
        },
        headers=quality_team.headers,
    )

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [mine["id"]]


async def test_creating_reading_and_listing_are_audited_with_the_child(
    client: httpx.AsyncClient, quality_team: RegisteredClient, session_factory: SessionFactory
) -> None:
    created = await post_case_audit(client, quality_team, case_audit_body())
    await client.get(f"/v1/case-audits/{created['id']}", headers=quality_team.headers)
    await client.get(
        "/v1/case-audits", params={"child_id": created["child_id"]}, headers=quality_team.headers
    )

    async with session_factory() as session:
        rows = await session.execute(
            select(col(AuditEvent.action), col(AuditEvent.resource_id), col(AuditEvent.child_id))
            .where(
                col(AuditEvent.client_id) == quality_team.client_id,
                col(AuditEvent.resource_type) == "case_audit",
            )
            .order_by(col(AuditEvent.id))
        )
        events = [(row.action, row.resource_id, str(row.child_id)) for row in rows]
    assert events == [
        ("create", created["id"], created["child_id"]),
        ("read", created["id"], created["child_id"]),
        ("list", None, created["child_id"]),
    ]


# --- validation and scopes -------------------------------------------------------------------

INVALID_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("a grade off the scale", {"practice_grade": "excellent"}, "body.practice_grade"),
    ("no impact grade", {"impact_grade": None}, "body.impact_grade"),
    ("unknown audited work", {"audited_work": "section_47"}, "body.audited_work"),
    ("no panel", {"panel_agencies": []}, "body.panel_agencies"),
    ("a panel agency twice", {"panel_agencies": ["health", "health"]}, "body.panel_agencies"),
    ("an unknown panel agency", {"panel_agencies": ["coastguard"]}, "body.panel_agencies.0"),
    ("toolkit used, effectiveness not judged", {"toolkit_use_effective": None}, "body"),
    ("toolkit not used, yet effective", {"toolkit_used": False}, "body"),
    ("NUL in the learning", {"learning": "a\x00b"}, "body.learning"),
    ("learning too long", {"learning": "x" * 10_001}, "body.learning"),
    ("a server-owned field", {"agency_name": "Someone else"}, "body.agency_name"),
    ("a child with nothing to match on", {"child": {"family_name": "Doe"}}, "body.child"),
]


@pytest.mark.parametrize(
    ("change", "field"),
    [(change, field) for _, change, field in INVALID_BODIES],
    ids=[name for name, _, _ in INVALID_BODIES],
)
async def test_an_invalid_audit_is_422_naming_the_field(
    client: httpx.AsyncClient,
    quality_team: RegisteredClient,
    session_factory: SessionFactory,
    change: dict[str, Any],
    field: str,
) -> None:
    body = case_audit_body()
    body.update(change)
    if body["impact_grade"] is None:
        del body["impact_grade"]

    response = await client.post("/v1/case-audits", json=body, headers=audit_headers(quality_team))

    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert await stored_audits(session_factory, quality_team.agency_name) == 0


async def test_an_audit_dated_in_the_future_is_422(
    client: httpx.AsyncClient, quality_team: RegisteredClient
) -> None:
    tomorrow = (today_in_uk() + timedelta(days=1)).isoformat()

    response = await client.post(
        "/v1/case-audits",
        json=case_audit_body(audited_on=tomorrow),
        headers=audit_headers(quality_team),
    )

    assert response.status_code == 422
    assert error_fields(response) == ["body.audited_on"]


async def test_recording_needs_audits_write_and_reading_needs_audits_read(
    client: httpx.AsyncClient, make_client: ClientMaker
) -> None:
    reader = await make_client(["audits:read"])
    writer = await make_client(["audits:write"])

    post = await client.post(
        "/v1/case-audits", json=case_audit_body(), headers=audit_headers(reader)
    )
    listed = await client.get("/v1/case-audits", headers=writer.headers)

    assert (post.status_code, listed.status_code) == (403, 403)
